// Faults around the edge, with every part real and on loopback (issue 7): the edge under
// `wrangler dev`, two relay processes reporting to it, the built-in agent echoing the caller,
// and werift clients placing their calls through the edge.
//   1. ICE restart through PATCH: audio resumes on the same call.
//   2. A relay SIGKILLed mid-call: the edge marks the call failed (relay_lost) within the
//      relay-silence timeout, and new calls go to the other relay. Recovery times are printed.
//   3. The edge unreachable from the relay: the live call goes on; heartbeats resume when a new
//      edge comes up on the same address, and the relay is back in its registry.
// The tests run in order and share the processes.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentServer } from "../../agent/agent-server.ts";
import { startRestartedIce } from "../../relay/call/werift-fixes.ts";
import {
  EventClient,
  expectEchoOf,
  getCallView,
  startEdgeOn,
  startRelayProc,
  waitUntil,
  type EdgeProcess,
  type RelayProcess,
} from "./fixtures.ts";
import { waitFor } from "../support/loopback.ts";

const SILENCE_SECONDS = 3;
const EDGE_VARS = {
  EARSHOT_RELAY_SILENCE_SECONDS: String(SILENCE_SECONDS),
  EARSHOT_RELAY_TIMEOUT_MS: "3000",
  EARSHOT_REGISTRY_CACHE_SECONDS: "1",
  EARSHOT_RATE_LIMIT_API_KEY: "10000/60",
  EARSHOT_RATE_LIMIT_IP: "10000/60",
};
// Stats every second keep a connected call alive at the edge well inside the 3 s of silence.
// Echo suppression off: a steady test tone after a steady reply looks like echo to an
// envelope-based guard, and these tests are about faults, not echo.
const RELAY_ENV = { RELAY_HEARTBEAT_SECONDS: "1", RELAY_STATS_SECONDS: "1" };

let agent: AgentServer;
let edge: EdgeProcess;
const relays = new Map<string, RelayProcess>();
const clients: EventClient[] = [];

beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, reply: "echo" });
  edge = await startEdgeOn({ vars: EDGE_VARS });
  for (const id of ["relay-a", "relay-b"]) {
    relays.set(
      id,
      await startRelayProc({
        id,
        edgeUrl: edge.url,
        secret: edge.relaySecret,
        inferenceUrl: `${agent.url}?reply=echo`,
        env: RELAY_ENV,
      }),
    );
  }
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all([...relays.values()].map((r) => r.stop("SIGKILL")));
  await edge?.stop();
  await agent?.close();
});

/** A connected call through the edge, with its session configured and the edge saying connected. */
async function placeCall(edgeUrl = edge.url): Promise<{ client: EventClient; relayId: string }> {
  const client = new EventClient();
  clients.push(client);
  const response = await client.callViaEdge(edgeUrl, edge.apiKey);
  expect(response.status, await response.clone().text()).toBe(201);
  await client.connected();
  await client.channelOpen();
  await client.waitEvent("session.created");
  const view = await waitUntil(
    "the edge to see the call connected",
    async () => {
      const v = await getCallView(edgeUrl, edge.apiKey, client.edgeCallId);
      return v.state === "connected" ? v : undefined;
    },
    10_000,
  );
  return { client, relayId: view.relay.id };
}

function iceLines(sdp: string): { ufrag: string; pwd: string; candidates: string[] } {
  return {
    ufrag: /^a=ice-ufrag:(\S+)/m.exec(sdp)![1]!,
    pwd: /^a=ice-pwd:(\S+)/m.exec(sdp)![1]!,
    candidates: sdp.split(/\r?\n/).filter((l) => l.startsWith("a=candidate:")),
  };
}

describe("faults around the edge", () => {
  it("ICE restart through PATCH: new credentials both sides, and audio resumes both ways on the same call", async () => {
    const { client, relayId } = await placeCall();
    await expectEchoOf(client, 440);
    const before = iceLines(client.answerSdp);

    client.pc.restartIce();
    const offer = await client.pc.createOffer();
    await client.pc.setLocalDescription(offer);
    const mine = iceLines(client.pc.localDescription!.sdp);
    expect(mine.ufrag).not.toBe(iceLines(client.pc.remoteDescription!.sdp).ufrag);
    const fragment =
      [`a=ice-ufrag:${mine.ufrag}`, `a=ice-pwd:${mine.pwd}`, ...mine.candidates].join("\r\n") + "\r\n";
    const patched = await fetch(`${edge.url}/v1/realtime/calls/${client.edgeCallId}`, {
      method: "PATCH",
      headers: { authorization: `Bearer ${edge.apiKey}`, "content-type": "application/trickle-ice-sdpfrag" },
      body: fragment,
    });
    expect(patched.status).toBe(200);
    expect(patched.headers.get("content-type")).toBe("application/trickle-ice-sdpfrag");
    const theirs = iceLines(await patched.text());
    expect(theirs.ufrag).not.toBe(before.ufrag);
    expect(theirs.pwd).not.toBe(before.pwd);
    expect(theirs.candidates.length).toBeGreaterThan(0);

    // The answer the client applies: the first answer with the relay's new ICE credentials.
    const answer = client.answerSdp
      .replace(/^a=ice-ufrag:.*$/gm, `a=ice-ufrag:${theirs.ufrag}`)
      .replace(/^a=ice-pwd:.*$/gm, `a=ice-pwd:${theirs.pwd}`)
      .replace(/^a=candidate:.*\r?\n/gm, "")
      .replace(/(^m=audio.*\r?\n)/m, `$1${theirs.candidates.map((c) => `${c}\r\n`).join("")}`);
    await client.pc.setRemoteDescription({ type: "answer", sdp: answer });
    // The werift client needs the same nudge the relay gives itself (relay/call.ts): after a
    // restart werift runs no checks while DTLS is up. A browser restarts ICE on its own.
    startRestartedIce(client.pc);
    const ice = client.pc.dtlsTransports[0]!.iceTransport;
    await waitFor(
      () => ice.connection.nominated !== undefined,
      10_000,
      "a pair nominated by the new ICE session",
    );
    expect(ice.connection.remoteUsername).toBe(theirs.ufrag);
    await expectEchoOf(client, 660);
    // The data channel (SCTP over the same DTLS) came through the restart too.
    const doneBefore = client.events.filter((e) => e.type === "response.done").length;
    client.channel.send(JSON.stringify({ type: "response.create" }));
    await waitFor(
      () => client.events.filter((e) => e.type === "response.done").length > doneBefore,
      10_000,
      "response.done on oai-events after the restart",
    );
    const view = await getCallView(edge.url, edge.apiKey, client.edgeCallId);
    expect(view).toMatchObject({ state: "connected", relay: { id: relayId } });
    expect(client.errors()).toEqual([]);
    await client.close();
  }, 60_000);

  it("a relay SIGKILLed mid-call: the call fails as relay_lost within the silence timeout; new calls go to the other relay", async () => {
    const { client, relayId } = await placeCall();
    const victim = relays.get(relayId)!;
    const survivor = [...relays.values()].find((r) => r.id !== relayId)!;

    const killedAt = Date.now();
    await victim.stop("SIGKILL");
    relays.delete(relayId);

    const failed = await waitUntil(
      "the edge to mark the call failed",
      async () => {
        const v = await getCallView(edge.url, edge.apiKey, client.edgeCallId);
        return v.state === "failed" ? v : undefined;
      },
      (SILENCE_SECONDS + 10) * 1000,
      100,
    );
    const failedAfterMs = Date.now() - killedAt;
    expect(failed.end_reason).toBe("relay_lost");
    // The last report was at most a stats interval before the kill; the alarm fires at silence.
    expect(failedAfterMs).toBeLessThanOrEqual((SILENCE_SECONDS + 2) * 1000);

    // New calls: until the registry drops the dead relay, some may be refused (502/504);
    // none may be placed on it, and soon every call lands on the survivor.
    let refused = 0;
    let placed: { client: EventClient; relayId: string } | undefined;
    while (!placed) {
      expect(Date.now() - killedAt).toBeLessThan(30_000);
      const probe = new EventClient();
      clients.push(probe);
      const response = await probe.callViaEdge(edge.url, edge.apiKey);
      if (response.status === 201) {
        const view = await getCallView(edge.url, edge.apiKey, probe.edgeCallId);
        expect(view.relay.id).toBe(survivor.id);
        await probe.close();
        placed = await placeCall();
      } else {
        expect([502, 503, 504]).toContain(response.status);
        refused++;
        await probe.close();
      }
    }
    const recoveredAfterMs = Date.now() - killedAt;
    expect(placed.relayId).toBe(survivor.id);
    await expectEchoOf(placed.client, 550);
    console.log(
      `relay SIGKILL: call failed (relay_lost) after ${failedAfterMs} ms; ` +
        `first new call placed on ${survivor.id} after ${recoveredAfterMs} ms (${refused} refused before)`,
    );
    await placed.client.close();
  }, 90_000);

  it("the edge unreachable: the live call goes on; heartbeats resume with a new edge on the same address", async () => {
    const relay = [...relays.values()][0]!;
    const { client } = await placeCall();
    await expectEchoOf(client, 480);

    const downAt = Date.now();
    await edge.stop();
    // The relay notices, says so, and the call keeps going: audio both ways without the edge.
    await waitFor(
      () => /edge unreachable; calls continue/.test(relay.output()),
      10_000,
      "the relay to notice",
    );
    await expectEchoOf(client, 720);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await expectEchoOf(client, 380);
    expect((await relay.health()).active_calls).toBeGreaterThanOrEqual(1);
    expect(client.pc.connectionState).toBe("connected");

    // A new edge on the same port and secrets, with empty state: only the relay's heartbeats
    // can put it back in the registry.
    const upAt = Date.now();
    edge = await startEdgeOn({ port: edge.port, vars: edge.vars });
    const backAt = await waitUntil(
      "a call placed through the new edge",
      async () => {
        const probe = new EventClient();
        clients.push(probe);
        const response = await probe.callViaEdge(edge.url, edge.apiKey);
        await probe.close();
        return response.status === 201 ? Date.now() : undefined;
      },
      30_000,
      250,
    );
    expect(relay.output()).toMatch(/edge reachable again/);
    console.log(
      `edge down for ${upAt - downAt} ms (call carried on); new edge up after ${backAt - upAt} ms ` +
        `until the relay was back in its registry`,
    );
    // The old call still flows, and a new call through the new edge works end to end.
    await expectEchoOf(client, 600);
    const fresh = await placeCall();
    await expectEchoOf(fresh.client, 450);
  }, 150_000);

  it("no relay printed an unhandled rejection", () => {
    for (const relay of relays.values()) {
      expect(relay.output()).not.toMatch(/unhandled rejection|uncaughtException|UnhandledPromiseRejection/i);
    }
  });
});
