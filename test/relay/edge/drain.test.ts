// A real relay process: heartbeats and call events reach the edge, and SIGTERM drains.
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, expect, it } from "vitest";
import { Heartbeat, RelayCallEvent, RelayEventBatch } from "../../../protocol/relay-api.ts";
import { RELAY_HEADER } from "../../../protocol/relay-key.ts";
import { SIGNATURE_HEADER, verifyRequest } from "../../../protocol/signed-request.ts";
import { waitFor, withTimeout } from "../../support/loopback.ts";
import { TestPeer } from "../../support/peer.ts";
import { relayKeyOf, TEST_RELAY_ID } from "../../support/relay-api.ts";
import { type RelayProcess, startRelayProcess } from "../../support/relays.ts";

/** A stand-in for the edge's internal routes: verifies signatures and records what arrives. */
class FakeEdge {
  readonly heartbeats: Heartbeat[] = [];
  readonly events: RelayCallEvent[] = [];
  readonly rejected: string[] = [];
  readonly server: Server;

  constructor() {
    this.server = createServer(async (req, res) => {
      const body = await readAll(req);
      const path = new URL(req.url!, "http://edge").pathname;
      // Signed with the key of the relay it names.
      const verdict = await verifyRequest(
        await relayKeyOf(req.headers[RELAY_HEADER.toLowerCase()] as string),
        req.headers[SIGNATURE_HEADER.toLowerCase()] as string,
        "POST",
        path,
        body,
      );
      if (!verdict.ok) {
        this.rejected.push(verdict.message);
        res.writeHead(401).end();
        return;
      }
      if (path === "/internal/relays/heartbeat") this.heartbeats.push(Heartbeat.parse(JSON.parse(body)));
      else if (/^\/internal\/calls\/[^/]+\/events$/.test(path))
        this.events.push(RelayCallEvent.parse(JSON.parse(body)));
      else if (/^\/internal\/relays\/[^/]+\/events$/.test(path)) {
        const { events } = RelayEventBatch.parse(JSON.parse(body));
        this.events.push(...events.map((e) => RelayCallEvent.parse(e)));
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ results: events.map(() => ({ status: 204 })) }));
        return;
      }
      res.writeHead(204).end();
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

async function readAll(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

let edge: FakeEdge;
let relay: RelayProcess | undefined;
const clients: TestPeer[] = [];

beforeEach(async () => {
  edge = new FakeEdge();
});
afterEach(async () => {
  await relay?.stop("SIGKILL");
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await edge.close();
});

async function startWithCall(drainSeconds: string) {
  const edgeUrl = await edge.listen();
  relay = await startRelayProcess({
    id: TEST_RELAY_ID,
    env: {
      EARSHOT_EDGE_URL: edgeUrl,
      RELAY_DRAIN_SECONDS: drainSeconds,
      RELAY_HEARTBEAT_SECONDS: "1",
    },
  });
  const client = new TestPeer();
  clients.push(client);
  expect((await client.call(relay.url)).status).toBe(201);
  await client.connected();
  await waitFor(() => edge.events.some((e) => e.type === "connected"), 5000, "connected event at the edge");
  return { client, relay };
}

it("reports to the edge, and on SIGTERM stops taking calls, lets calls run to the deadline, then ends them", async () => {
  const { client, relay } = await startWithCall("2");
  expect(edge.heartbeats[0]).toMatchObject({ relay_id: "relay-test", draining: false });
  await waitFor(() => edge.heartbeats.some((h) => h.active_calls === 1), 5000, "a heartbeat with the call");

  const signalled = performance.now();
  relay.proc.kill("SIGTERM");
  await waitFor(() => edge.heartbeats.some((h) => h.draining), 3000, "a draining heartbeat");

  // No new calls while draining...
  const late = new TestPeer();
  clients.push(late);
  const refused = await late.call(relay.url);
  expect(refused.status).toBe(503);
  expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("relay_draining");
  const health = (await (await fetch(`${relay.url}/healthz`)).json()) as { status: string };
  expect(health.status).toBe("draining");
  // ...but the live call carries on until the deadline.
  await new Promise((r) => setTimeout(r, 1000));
  expect(client.pc.connectionState).toBe("connected");
  expect(edge.events.some((e) => e.type === "ended")).toBe(false);

  const code = await withTimeout(relay.exited, 10_000, "relay exit");
  const elapsed = performance.now() - signalled;
  expect(code).toBe(0);
  expect(elapsed).toBeGreaterThanOrEqual(1900);
  const ended = edge.events.find((e) => e.type === "ended");
  expect(ended).toMatchObject({ call_id: client.callId, reason: "relay_draining" });
  expect(edge.rejected).toEqual([]);
}, 30_000);

it("exits at once on a second SIGTERM", async () => {
  const { relay } = await startWithCall("60");
  relay.proc.kill("SIGTERM");
  await waitFor(() => edge.heartbeats.some((h) => h.draining), 3000, "a draining heartbeat");
  const second = performance.now();
  relay.proc.kill("SIGTERM");
  const code = await withTimeout(relay.exited, 3000, "relay exit");
  expect(code).toBe(1);
  expect(performance.now() - second).toBeLessThan(1000);
}, 30_000);

it("finishes draining early when the last call ends before the deadline", async () => {
  const { client, relay } = await startWithCall("60");
  relay.proc.kill("SIGTERM");
  await waitFor(() => edge.heartbeats.some((h) => h.draining), 3000, "a draining heartbeat");
  await client.close();
  const code = await withTimeout(relay.exited, 10_000, "relay exit");
  expect(code).toBe(0);
  expect(edge.events.find((e) => e.type === "ended")).toMatchObject({ reason: "client_hangup" });
}, 30_000);
