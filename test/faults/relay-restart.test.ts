// Issue 13.2, "heartbeats carry the relay's live call ids so either side can reconcile", through
// real processes: a relay is killed and restarted at once under the same id and address, so its
// heartbeats never stop, but its calls are gone with the old process. Its next heartbeat no
// longer lists the call, and the edge ends it within seconds (relay_lost, "The relay no longer
// has the call."), long before the relay-silence timeout (60 s here) would have.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../support/loopback.ts";
import { relaysAtEdge, waitForRelayAtEdge } from "../support/relays.ts";
import {
  connectViaEdge,
  getCallView,
  startEdgeOn,
  startRelayProc,
  waitUntil,
  type EdgeProcess,
  type EventClient,
  type RelayProcess,
} from "./fixtures.ts";

let edge: EdgeProcess;
let relay: RelayProcess;
let port: number;
const clients: EventClient[] = [];

const relayOn = () =>
  startRelayProc({
    id: "relay-restarts",
    edgeUrl: edge.url,
    secret: edge.relaySecret,
    env: { RELAY_HTTP_PORT: String(port), RELAY_HEARTBEAT_SECONDS: "1", RELAY_STATS_SECONDS: "1" },
  });

beforeAll(async () => {
  edge = await startEdgeOn({
    vars: { EARSHOT_RELAY_SILENCE_SECONDS: "60", EARSHOT_RATE_LIMIT_IP: "10000/60" },
  });
  port = await freePort();
  relay = await relayOn();
  await waitForRelayAtEdge(edge, relay.id);
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await relay?.stop("SIGKILL");
  await edge?.stop();
});

describe("a relay that restarts", () => {
  it("loses its calls, and its next heartbeat tells the edge: the call ends within seconds, not at the silence timeout", async () => {
    const client = await connectViaEdge(edge, clients);
    await waitUntil(
      "the edge to see the call connected",
      async () => (await getCallView(edge.url, edge.apiKey, client.edgeCallId)).state === "connected",
      10_000,
    );
    // A heartbeat that lists the call reached the edge (one a second).
    const listedAfter = Date.now() + 100;
    await waitUntil(
      "a heartbeat listing the call",
      async () =>
        (await relaysAtEdge(edge)).some((r) => r.relay_id === relay.id && r.last_seen_ms > listedAfter),
      5000,
    );
    await relay.stop("SIGKILL");
    const restartedAt = performance.now();
    relay = await relayOn();
    const view = await waitUntil(
      "the edge to end the call",
      async () => {
        const v = await getCallView(edge.url, edge.apiKey, client.edgeCallId);
        return v.state === "failed" ? v : undefined;
      },
      20_000,
      250,
    );
    const tookMs = performance.now() - restartedAt;
    expect(view).toMatchObject({ end_reason: "relay_lost" });
    expect((view as unknown as { end_message: string }).end_message).toBe(
      "The relay no longer has the call.",
    );
    expect(tookMs).toBeLessThan(15_000);
    console.log(`[figures] relay restarted → edge ended its call: ${Math.round(tookMs)} ms`);
  }, 60_000);
});
