// Relay → edge call events over a slow path: how late `connected` and `ended` reach the edge.
// A real edge (`wrangler dev`) with 100 calls placed on a stub relay (node:http answering offers
// with a canned werift answer); the relay's real EdgeClient sends those calls' events as a full
// relay would (connected, first_audio, stats every 5 s, ended) through a userland proxy that adds
// a 100 ms round trip to each request (test/e2e/delay-proxy.ts). No media flows: this measures
// the event path alone. A delay is the event's `at` to the edge's answer being back at the relay.
//   npx node bench/edge-events.ts [--calls=100] [--rtt=100] [--stats-seconds=5]
import { deriveRelayKey } from "../protocol/relay-key.ts";
import type { RelayCallEvent } from "../protocol/relay-api.ts";
import { EdgeClient } from "../relay/edge/edge-client.ts";
import { createLogger } from "../relay/log.ts";
import { startDelayProxy } from "../test/support/delay-proxy.ts";
import { startEdge } from "../test/support/relays.ts";
import { waitUntil } from "../test/support/loopback.ts";
import { cannedOfferAnswer, startStubRelay } from "./edge.ts";
import { summarize, table, type Summary } from "./lib/stats.ts";

export interface EdgeEventsResult {
  /** What the numbers come from, for the table. */
  setup: string;
  calls: number;
  roundTripMs: number;
  statsSeconds: number;
  events: number;
  connectedDelayMs: Summary;
  endedDelayMs: Summary;
  /** connected / ended events with no answer from the edge by the end of the wait. */
  undelivered: { connected: number; ended: number };
  /** Requests through the proxy: event requests (batches or single events) and heartbeats. */
  requests: number;
}

const RELAY_ID = "relay-bench-events";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function runEdgeEvents(
  options: { calls?: number; roundTripMs?: number; statsSeconds?: number; log?: (line: string) => void } = {},
): Promise<EdgeEventsResult> {
  const calls = options.calls ?? 100;
  const roundTripMs = options.roundTripMs ?? 100;
  const statsSeconds = options.statsSeconds ?? 5;
  const log = options.log ?? (() => {});
  const { offer, answer } = await cannedOfferAnswer();
  const lots = String(1_000_000);
  const edge = await startEdge({
    vars: {
      EARSHOT_RATE_LIMIT_API_KEY: `${lots}/60`,
      EARSHOT_RATE_LIMIT_IP: `${lots}/60`,
      EARSHOT_REGISTRY_CACHE_SECONDS: "1",
      // Late events are what is measured: the edge must not give up on the calls meanwhile.
      EARSHOT_CONNECT_TIMEOUT_SECONDS: "600",
      EARSHOT_RELAY_SILENCE_SECONDS: "600",
    },
  });
  const { server: stub, url: stubUrl } = await startStubRelay(answer);
  const proxy = await startDelayProxy({ target: edge.url, roundTripMs });
  const client = new EdgeClient({
    edgeUrl: proxy.url,
    relayId: RELAY_ID,
    key: await deriveRelayKey(edge.relaySecret, RELAY_ID),
    log: createLogger("silent"),
    heartbeatSeconds: 5,
    heartbeat: () => ({
      relay_id: RELAY_ID,
      boot_id: "bench-boot",
      region: "local",
      lat: 0,
      lon: 0,
      public_url: stubUrl,
      capacity: 1000,
      active_calls: calls,
      draining: false,
      interval_seconds: 5,
    }),
  });
  const timers: NodeJS.Timeout[] = [];
  try {
    client.start();
    if (!(await client.sendHeartbeat())) throw new Error("the edge refused the bench relay's heartbeat");
    // The calls, placed through the edge on the stub relay (the edge's registry cache needs a moment).
    const callIds: string[] = [];
    for (let i = 0; i < calls; i++) {
      const id = await waitUntil(
        "a call placed through the edge",
        async () => {
          const res = await fetch(`${edge.url}/v1/realtime/calls`, {
            method: "POST",
            headers: { authorization: `Bearer ${edge.apiKey}`, "content-type": "application/sdp" },
            body: offer,
          });
          await res.body?.cancel();
          return res.status === 201 ? res.headers.get("location")!.split("/").at(-1)! : undefined;
        },
        30_000,
        200,
      );
      callIds.push(id);
    }
    log(`  ${calls} calls placed; events for ${Math.round(statsSeconds * 3)} s…`);
    // Calls connect one after another over one stats interval, talk for two, and hang up in the
    // order they came: every call sends stats every `statsSeconds`, as a full relay does.
    const base = (callId: string) => ({ call_id: callId, relay_id: RELAY_ID, at: Date.now() });
    const send = (event: RelayCallEvent) => client.event(event);
    const spread = (statsSeconds * 1000) / calls;
    callIds.forEach((callId, i) => {
      const start = i * spread;
      timers.push(
        setTimeout(() => {
          send({ ...base(callId), type: "connected" });
          const statsTimer = setInterval(() => {
            send({
              ...base(callId),
              type: "stats",
              stats: { packets_in: 250, packets_out: 250, packets_lost: 0, jitter_ms: 2, late_frames: 0 },
            });
          }, statsSeconds * 1000);
          timers.push(statsTimer);
          timers.push(setTimeout(() => send({ ...base(callId), type: "first_audio" }), 300));
          timers.push(
            setTimeout(() => {
              clearInterval(statsTimer);
              send({ ...base(callId), type: "ended", reason: "client_hangup" });
            }, statsSeconds * 2000),
          );
        }, start),
      );
    });
    await sleep(statsSeconds * 3000);
    // Then wait for what is still queued (bounded: the old one-at-a-time queue never catches up).
    const deliveredOf = (type: string) =>
      new Set(proxy.deliveries.filter((d) => d.type === type).map((d) => d.call_id));
    const deadline = Date.now() + 60_000;
    while (
      Date.now() < deadline &&
      (deliveredOf("connected").size < calls || deliveredOf("ended").size < calls)
    ) {
      await sleep(200);
    }
    const delays = (type: string) => {
      const first = new Map<string, number>();
      for (const d of proxy.deliveries) {
        if (d.type === type && !first.has(d.call_id)) first.set(d.call_id, d.deliveredAt - d.at);
      }
      return [...first.values()];
    };
    const connected = delays("connected");
    const ended = delays("ended");
    return {
      setup: `real edge (wrangler dev), relay EdgeClient → ${roundTripMs} ms delay proxy, ${calls} simulated calls (no media)`,
      calls,
      roundTripMs,
      statsSeconds,
      events: proxy.deliveries.length,
      connectedDelayMs: summarize(connected),
      endedDelayMs: summarize(ended),
      undelivered: { connected: calls - connected.length, ended: calls - ended.length },
      requests: proxy.requests,
    };
  } finally {
    for (const t of timers) clearTimeout(t);
    await client.close();
    await proxy.close();
    stub.close();
    await edge.stop();
  }
}

export function edgeEventsTable(r: EdgeEventsResult): string {
  const row = (name: string, s: Summary, lost: number) => [
    name,
    `${s.n}`,
    `${s.p50}`,
    `${s.p99}`,
    `${s.max}`,
    `${lost}`,
  ];
  return [
    `relay → edge events: ${r.setup}; stats every ${r.statsSeconds} s; ${r.requests} requests with heartbeats`,
    table([
      ["event", "n", "p50 ms", "p99 ms", "max ms", "not delivered"],
      row("connected", r.connectedDelayMs, r.undelivered.connected),
      row("ended", r.endedDelayMs, r.undelivered.ended),
    ]),
  ].join("\n");
}

if (import.meta.main) {
  const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
  const result = await runEdgeEvents({
    calls: Number(arg("calls") ?? 100),
    roundTripMs: Number(arg("rtt") ?? 100),
    statsSeconds: Number(arg("stats-seconds") ?? 5),
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`${edgeEventsTable(result)}\n`);
  process.exit(0);
}
