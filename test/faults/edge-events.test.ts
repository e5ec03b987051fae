// Call events from a relay to the edge over a slow, then broken, path (issue 13, item 5): a real
// relay process reporting to a real edge (`wrangler dev`) through a proxy that adds 60 ms to
// every round trip and can refuse connections. Werift clients place real calls through the edge;
// stats every 20 ms per call stand in for a full relay's stream (100 calls every 5 s is 20 a
// second; here 5 calls make 250).
//   1. A new call's `connected` reaches the edge in under 2 s while the other calls' stats flow.
//   2. An edge outage (the proxy refusing for 8 s, while ~2,000 stats are made, twice what the old
//      queue held before it dropped the oldest; 60 s with EARSHOT_SOAK=long): the `ended` of
//      a call that hung up during it still reaches the edge, with its reason.
// The tests run in order and share the processes.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDelayProxy, type DelayProxy } from "../support/delay-proxy.ts";
import { waitForRelayAtEdge } from "../support/relays.ts";
import {
  EventClient,
  connectViaEdge,
  getCallView,
  startEdgeOn,
  startRelayProc,
  waitUntil,
  type EdgeProcess,
  type RelayProcess,
} from "./fixtures.ts";

const ROUND_TRIP_MS = 60;
const BACKGROUND_CALLS = 5;
// EARSHOT_SOAK=long: the minute-long outage the issue reports.
const OUTAGE_MS = process.env.EARSHOT_SOAK === "long" ? 60_000 : 8000;
const EDGE_VARS = {
  // Long enough that the edge never gives up on a call whose relay it cannot hear during the
  // outage: what it shows afterwards must come from the relay's own `ended`.
  EARSHOT_RELAY_SILENCE_SECONDS: "300",
  EARSHOT_RELAY_TIMEOUT_MS: "5000",
  EARSHOT_RATE_LIMIT_API_KEY: "10000/60",
  EARSHOT_RATE_LIMIT_IP: "10000/60",
};

let edge: EdgeProcess;
let proxy: DelayProxy;
let relay: RelayProcess;
const clients: EventClient[] = [];

beforeAll(async () => {
  edge = await startEdgeOn({ vars: EDGE_VARS });
  proxy = await startDelayProxy({ target: edge.url, roundTripMs: ROUND_TRIP_MS });
  relay = await startRelayProc({
    id: "relay-events",
    edgeUrl: proxy.url,
    secret: edge.relaySecret,
    env: { RELAY_HEARTBEAT_SECONDS: "1", RELAY_STATS_SECONDS: "0.02" },
  });
  await waitForRelayAtEdge(edge, relay.id);
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await relay?.stop("SIGKILL");
  await proxy?.close();
  await edge?.stop();
});

/** A call through the edge, connected at the relay (ICE, data channel, model session). */
const placeCall = () => connectViaEdge(edge, clients);

/** Polls the edge until the call's view satisfies `ok`; resolves with the time it took. */
async function edgeSees(
  client: EventClient,
  what: string,
  ok: (view: Awaited<ReturnType<typeof getCallView>>) => boolean,
  timeoutMs: number,
): Promise<number> {
  const from = Date.now();
  await waitUntil(
    what,
    async () => ok(await getCallView(edge.url, edge.apiKey, client.edgeCallId)) || undefined,
    timeoutMs,
    50,
  );
  return Date.now() - from;
}

describe("call events from a relay to the edge, 60 ms away", () => {
  it("a new call's connected reaches the edge within 2 s while other calls' stats flow", async () => {
    const background: EventClient[] = [];
    for (let i = 0; i < BACKGROUND_CALLS; i++) background.push(await placeCall());
    // Let the stats run a while: a queue that sends one event per round trip falls behind here.
    await new Promise((resolve) => setTimeout(resolve, 2000));

    const probe = new EventClient();
    clients.push(probe);
    const response = await probe.callViaEdge(edge.url, edge.apiKey);
    expect(response.status).toBe(201);
    await probe.connected();
    const ms = await edgeSees(
      probe,
      "the edge to see the call connected",
      (v) => v.state === "connected",
      10_000,
    );
    console.log(
      `connected reached the edge ${ms} ms after ICE connected (${BACKGROUND_CALLS} calls' stats every 20 ms, ` +
        `${ROUND_TRIP_MS} ms round trips)`,
    );
    expect(ms).toBeLessThan(2000);
    // The other calls' stats still arrive (coalesced, not starved).
    for (const client of background) {
      const view = (await getCallView(edge.url, edge.apiKey, client.edgeCallId)) as unknown as {
        state: string;
        timestamps: { last_relay_report?: number };
      };
      expect(view.state).toBe("connected");
      expect(Date.now() - (view.timestamps.last_relay_report ?? 0)).toBeLessThan(2000);
    }
  }, 120_000);

  it(
    "an edge outage loses no ended: a call hung up during it shows ended, with its reason, afterwards",
    async () => {
      const live = clients.filter((c) => c.pc.connectionState === "connected");
      expect(live.length).toBeGreaterThanOrEqual(BACKGROUND_CALLS);
      const [leaving, ...staying] = live;
      await edgeSees(leaving!, "the edge to see the call connected", (v) => v.state === "connected", 10_000);

      await proxy.refuse();
      const downAt = Date.now();
      await leaving!.close();
      await waitUntil(
        "the relay to end the call",
        async () => ((await relay.health()).active_calls === live.length - 1 ? true : undefined),
        10_000,
      );
      // Stats keep coming from the other calls while the edge is out of reach.
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, OUTAGE_MS - (Date.now() - downAt))));
      expect((await getCallView(edge.url, edge.apiKey, leaving!.edgeCallId)).state).toBe("connected");

      await proxy.accept();
      const ms = await edgeSees(
        leaving!,
        "the edge to see the call ended",
        (v) => v.state === "ended" && v.end_reason === "client_hangup",
        15_000,
      );
      console.log(
        `after a ${Date.now() - downAt - ms} ms outage, the ended arrived ${ms} ms after the edge came back`,
      );
      expect(ms).toBeLessThan(5000);
      for (const client of staying) {
        expect((await getCallView(edge.url, edge.apiKey, client.edgeCallId)).state).toBe("connected");
      }
      expect(relay.output()).not.toMatch(/unhandled rejection|uncaughtException|UnhandledPromiseRejection/i);
    },
    OUTAGE_MS + 60_000,
  );
});
