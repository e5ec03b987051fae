// Relay identity with every part real (issue 13.4): the edge under `wrangler dev`, relay
// processes reporting to it, and an attacker host that holds a relay key of its own.
//   1. A host with its own relay key cannot speak as another relay: its heartbeats claiming
//      relay-local are refused, and the next call's offer, ticket and instructions reach
//      relay-local, never the attacker's listener.
//   2. A relay id is pinned to its first origin: the same id from another origin is refused
//      (409) until an operator removes the relay; then it registers from the new one.
//   3. A ticket does not replay after the relay restarts: it names the boot it was issued for.
// The tests run in order and share the processes.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentServer } from "../../agent/agent-server.ts";
import { deriveRelayKey, RELAY_HEADER } from "../../protocol/relay-key.ts";
import { SIGNATURE_HEADER, signRequest } from "../../protocol/signed-request.ts";
import { bootIdOf, newCallId, postCall, ticketFor } from "../support/relay-api.ts";
import { relaysAtEdge, waitForRelayAtEdge } from "../support/relays.ts";
import {
  EventClient,
  freePort,
  startEdgeOn,
  startRelayProc,
  waitUntil,
  type EdgeProcess,
  type RelayProcess,
} from "./fixtures.ts";

const RELAY_ENV = { RELAY_HEARTBEAT_SECONDS: "1" };

let agent: AgentServer;
let edge: EdgeProcess;
let local: RelayProcess;
const stops: (() => Promise<unknown>)[] = [];
/** What reached the attacker's listener. */
const stolen: { method: string; url: string; body: string }[] = [];
let listener: Server;
let listenerUrl: string;

beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, reply: "echo" });
  edge = await startEdgeOn({ vars: { EARSHOT_RATE_LIMIT_API_KEY: "10000/60" } });
  // relay-local holds only its own key, as a production relay should.
  local = await startRelayProc({
    id: "relay-local",
    edgeUrl: edge.url,
    secret: "",
    inferenceUrl: agent.url,
    env: { ...RELAY_ENV, EARSHOT_RELAY_KEY: await deriveRelayKey(edge.relaySecret, "relay-local") },
  });
  stops.push(() => local.stop("SIGKILL"));
  await waitForRelayAtEdge(edge, "relay-local");
  listener = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += String(c)));
    req.on("end", () => {
      stolen.push({ method: req.method!, url: req.url!, body });
      res.writeHead(500).end();
    });
  });
  await new Promise<void>((r) => listener.listen(0, "127.0.0.1", r));
  listenerUrl = `http://127.0.0.1:${(listener.address() as AddressInfo).port}`;
}, 120_000);

afterAll(async () => {
  await Promise.all(stops.map((stop) => stop()));
  listener?.close();
  await edge?.stop();
  await agent?.close();
});

/** A call through the edge; on 201, the relay the edge gave it to. */
async function placeCall(): Promise<{ status: number; relayId?: string }> {
  const client = new EventClient();
  stops.push(() => client.close());
  const response = await client.callViaEdge(edge.url, edge.apiKey);
  const status = response.status;
  if (status !== 201) return { status };
  const view = await fetch(`${edge.url}/v1/realtime/calls/${client.edgeCallId}`, {
    headers: { authorization: `Bearer ${edge.apiKey}` },
  });
  return { status, relayId: ((await view.json()) as { relay: { id: string } }).relay.id };
}

describe("relay identity through a real edge", () => {
  it("a host with its own relay key cannot claim relay-local: its heartbeats are refused and calls stay with relay-local", async () => {
    const evilKey = await deriveRelayKey(edge.relaySecret, "relay-evil");
    // The reported attack: a heartbeat as relay-local whose public_url points at a listener.
    const asRelayLocal = JSON.stringify({
      relay_id: "relay-local",
      boot_id: "attacker-boot",
      region: "local",
      lat: 0,
      lon: 0,
      public_url: listenerUrl,
      capacity: 100,
      active_calls: 0,
      draining: false,
      interval_seconds: 1,
    });
    const heartbeat = async (relayId: string, key: string, body: string) =>
      fetch(`${edge.url}/internal/relays/heartbeat`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          [RELAY_HEADER]: relayId,
          [SIGNATURE_HEADER]: await signRequest(key, "POST", "/internal/relays/heartbeat", body),
        },
        body,
      });
    // Signed with its own key but naming relay-local: the signature is not relay-local's.
    expect((await heartbeat("relay-local", evilKey, asRelayLocal)).status).toBe(401);
    // Naming itself, with a body for relay-local: refused too.
    expect((await heartbeat("relay-evil", evilKey, asRelayLocal)).status).toBe(403);
    // With a path, as reported, it is refused whoever signs it.
    const withPath = JSON.stringify({
      ...JSON.parse(asRelayLocal),
      relay_id: "relay-evil",
      public_url: `${listenerUrl}/steal`,
    });
    expect((await heartbeat("relay-evil", evilKey, withPath)).status).toBe(400);

    // A whole relay process configured the same way: RELAY_ID relay-local, relay-evil's key.
    const evil = await startRelayProc({
      id: "relay-local",
      edgeUrl: edge.url,
      secret: "",
      inferenceUrl: agent.url,
      env: { ...RELAY_ENV, EARSHOT_RELAY_KEY: evilKey, RELAY_HTTP_PORT: String(await freePort()) },
    });
    stops.push(() => evil.stop("SIGKILL"));
    await evil.waitForOutput(/the edge refused a relay request[\s\S]*"status":401/, 10_000);

    const { status, relayId } = await placeCall();
    expect(status).toBe(201);
    expect(relayId).toBe("relay-local");
    const atEdge = (await relaysAtEdge(edge)).find((r) => r.relay_id === "relay-local")!;
    expect(atEdge.public_url).toBe(local.url);
    expect((await local.health()).active_calls).toBe(1);
    expect((await evil.health()).active_calls).toBe(0);
    expect(stolen).toEqual([]);
    await evil.stop("SIGKILL");
  });

  it("relay-local from another origin is 409 until an operator removes it; then it registers from there", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    // Holds the right credential (the shared secret), but reports from another origin.
    const moved = await startRelayProc({
      id: "relay-local",
      edgeUrl: edge.url,
      secret: edge.relaySecret,
      inferenceUrl: agent.url,
      env: { ...RELAY_ENV, RELAY_HTTP_PORT: new URL(url).port },
    });
    stops.push(() => moved.stop("SIGKILL"));
    await moved.waitForOutput(
      /"status":409[\s\S]*relay_origin_mismatch|relay_origin_mismatch[\s\S]*"status":409/,
      10_000,
    );
    expect((await relaysAtEdge(edge)).find((r) => r.relay_id === "relay-local")!.public_url).toBe(local.url);

    // The operator stops the old relay and removes it; the moved one registers at its next heartbeat.
    await local.stop("SIGKILL");
    const removed = await fetch(`${edge.url}/admin/relays/relay-local`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${edge.apiKey}` },
    });
    expect(removed.status).toBe(204);
    await waitUntil(
      "relay-local to register from its new origin",
      async () =>
        (await relaysAtEdge(edge)).find((r) => r.relay_id === "relay-local" && r.public_url === url),
      10_000,
      200,
    );
    const { status, relayId } = await placeCall();
    expect(status).toBe(201);
    expect(relayId).toBe("relay-local");
    expect((await moved.health()).active_calls).toBe(1);
    await moved.stop("SIGKILL");
  });

  it("a ticket used before the relay restarted is refused after it (403 ticket_stale_boot), and calls resume", async () => {
    const port = String(await freePort());
    const start = () =>
      startRelayProc({
        id: "relay-boot",
        edgeUrl: edge.url,
        secret: edge.relaySecret,
        inferenceUrl: agent.url,
        env: { ...RELAY_ENV, RELAY_HTTP_PORT: port },
      });
    let relay = await start();
    const stopRelay = () => relay.stop("SIGKILL");
    stops.push(stopRelay);
    const client = new EventClient();
    stops.push(() => client.close());
    const offer = await client.offer();
    const callId = newCallId();
    const ticket = await ticketFor(
      callId,
      offer,
      {},
      {
        secret: edge.relaySecret,
        relayId: "relay-boot",
        bootId: await bootIdOf(relay.url),
      },
    );
    const send = () => postCall(relay.url, { call_id: callId, offer_sdp: offer, session: {} }, ticket);
    expect((await send()).status).toBe(201);
    const replayed = await send();
    expect(replayed.status).toBe(403);
    expect(((await replayed.json()) as { error: { code: string } }).error.code).toBe("ticket_replayed");

    // Restarted, the relay has forgotten the ticket's nonce; the boot id still refuses it.
    await relay.stop("SIGKILL");
    relay = await start();
    const afterRestart = await send();
    expect(afterRestart.status).toBe(403);
    expect(((await afterRestart.json()) as { error: { code: string } }).error.code).toBe("ticket_stale_boot");
    expect((await relay.health()).active_calls).toBe(0);

    // The edge learns the new boot from the next heartbeat, and its calls go through.
    const boot = await bootIdOf(relay.url);
    await waitUntil(
      "the edge to know relay-boot's new boot",
      async () => (await relaysAtEdge(edge)).find((r) => r.relay_id === "relay-boot" && r.boot_id === boot),
      10_000,
      200,
    );
    const { status, relayId } = await placeCall();
    expect(status).toBe(201);
    expect(relayId).toBe("relay-boot");
  });
});
