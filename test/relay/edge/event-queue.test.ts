// The EdgeClient's event queue against a stand-in edge on loopback (node:http, checking the
// signature and the schemas as the edge does): what waits, what is coalesced, what is never
// dropped, and in what order each call's events arrive.
import { createServer, type Server } from "node:http";
import { afterEach, expect, it } from "vitest";
import {
  MAX_EVENT_BATCH_BYTES,
  MAX_LOG_TEXT_CHARS,
  RelayCallEvent,
  RelayEventBatch,
  type RelayEventBatchResponse,
} from "../../../protocol/relay-api.ts";
import { SIGNATURE_HEADER, verifyRequest } from "../../../protocol/signed-request.ts";
import { EdgeClient, MAX_WAITING_LOG_EVENTS } from "../../../relay/edge/edge-client.ts";
import { MAX_LOG_EVENT_BYTES } from "../../../relay/inference/conversation-recorder.ts";
import { createLogger } from "../../../relay/log.ts";
import { waitFor } from "../../support/loopback.ts";
import { testHeartbeat } from "../../support/relay-api.ts";

const SECRET = "test-relay-secret-0123456789";
const RELAY_ID = "relay-q";

interface StandIn {
  url: string;
  /** Events accepted, in arrival order. */
  received: RelayCallEvent[];
  requests: { path: string; events: number; at: number }[];
  /** Answer every request with this status instead (503: the edge is out). */
  down: number | undefined;
  /** Requests answered with `down`. */
  refused: number;
  /** Added before each answer. */
  delayMs: number;
  /** Batches in flight right now, and the most seen at once. */
  inFlight: number;
  maxInFlight: number;
  /** Per-event status override (e.g. 503 for one call's events). */
  resultFor: (event: RelayCallEvent) => number;
  /** Answer 404 to the batch path, as an edge from before batches does. */
  noBatches: boolean;
}

const servers: Server[] = [];
const clients: EdgeClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  for (const s of servers.splice(0)) s.close();
});

async function standIn(): Promise<StandIn> {
  const state: StandIn = {
    url: "",
    received: [],
    requests: [],
    down: undefined,
    refused: 0,
    delayMs: 0,
    inFlight: 0,
    maxInFlight: 0,
    resultFor: () => 204,
    noBatches: false,
  };
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += String(c)));
    req.on("end", async () => {
      state.inFlight++;
      state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
      await new Promise((r) => setTimeout(r, state.delayMs));
      state.inFlight--;
      const path = req.url!;
      const answer = (status: number, json?: unknown) =>
        res.writeHead(status, { "content-type": "application/json" }).end(json ? JSON.stringify(json) : "");
      if (state.down) {
        state.refused++;
        return answer(state.down, {});
      }
      const verified = await verifyRequest(
        SECRET,
        req.headers[SIGNATURE_HEADER.toLowerCase()] as string,
        "POST",
        path,
        body,
      );
      if (!verified.ok) return answer(401, {});
      if (path === "/internal/relays/heartbeat") return answer(204);
      if (path === `/internal/relays/${RELAY_ID}/events`) {
        if (state.noBatches) return answer(404, {});
        const batch = RelayEventBatch.parse(JSON.parse(body));
        const events = batch.events.map((e) => RelayCallEvent.parse(e));
        state.requests.push({ path, events: events.length, at: Date.now() });
        const results = events.map((e) => {
          const status = state.resultFor(e);
          if (status === 204) state.received.push(e);
          return { status };
        });
        return answer(200, { results } satisfies RelayEventBatchResponse);
      }
      const one = /^\/internal\/calls\/([^/]+)\/events$/.exec(path);
      if (one) {
        const event = RelayCallEvent.parse(JSON.parse(body));
        state.requests.push({ path, events: 1, at: Date.now() });
        state.received.push(event);
        return answer(204);
      }
      answer(404, {});
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  state.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return state;
}

function client(edgeUrl: string, options: { maxQueuedCalls?: number; retryMs?: number } = {}): EdgeClient {
  const edge = new EdgeClient({
    edgeUrl,
    relayId: RELAY_ID,
    key: SECRET,
    log: createLogger("silent"),
    heartbeatSeconds: 60,
    retryMs: 50,
    heartbeat: () => testHeartbeat(RELAY_ID),
    ...options,
  });
  clients.push(edge);
  return edge;
}

let seq = 1;
const callId = (n: number) => `rtc_queuetest${String(n).padStart(6, "0")}`;
const stats = (n: number) => ({
  packets_in: n,
  packets_out: n,
  packets_lost: 0,
  jitter_ms: 1,
  late_frames: 0,
});
const base = (call: number) => ({ call_id: callId(call), relay_id: RELAY_ID, at: seq++ });
const connected = (call: number): RelayCallEvent => ({ ...base(call), type: "connected" });
const firstAudio = (call: number): RelayCallEvent => ({ ...base(call), type: "first_audio" });
const statsOf = (call: number, n: number): RelayCallEvent => ({
  ...base(call),
  type: "stats",
  stats: stats(n),
});
const ended = (call: number): RelayCallEvent => ({ ...base(call), type: "ended", reason: "client_hangup" });

const typesOf = (events: RelayCallEvent[], call: number) =>
  events.filter((e) => e.call_id === callId(call)).map((e) => e.type);

it("keeps only a call's latest stats while the edge is out, and every state event, in order", async () => {
  const edge = await standIn();
  edge.down = 503;
  const relay = client(edge.url);
  relay.event(connected(1));
  for (let n = 1; n <= 500; n++) relay.event(statsOf(1, n));
  relay.event(firstAudio(1));
  relay.event(connected(1)); // a repeat while the first is still waiting: sent once
  relay.event(statsOf(1, 501));
  relay.event(ended(1));
  await new Promise((r) => setTimeout(r, 200)); // a few failed tries
  expect(relay.queuedEvents).toBe(4);
  edge.down = undefined;
  await waitFor(() => relay.queuedEvents === 0, 5000, "the queue to drain");
  expect(typesOf(edge.received, 1)).toEqual(["connected", "first_audio", "stats", "ended"]);
  expect(edge.received.find((e) => e.type === "stats")).toMatchObject({ stats: stats(501) });
  expect(relay.stats.statsCoalesced).toBe(500);
  expect(relay.stats.eventsDropped).toBe(0);
});

it("never drops a state event to make room: 2,000 calls' connected and ended outlive an outage", async () => {
  const edge = await standIn();
  edge.down = 503;
  const relay = client(edge.url);
  for (let call = 1; call <= 2000; call++) relay.event(connected(call));
  // Many stats from a few live calls: the old queue (1,000 events, oldest dropped first) lost
  // the state events here.
  for (let n = 0; n < 20_000; n++) relay.event(statsOf(3000 + (n % 10), n));
  for (let call = 1; call <= 2000; call++) relay.event(ended(call));
  expect(relay.queuedEvents).toBe(2000 * 2 + 10);
  edge.down = undefined;
  await waitFor(() => relay.queuedEvents === 0, 20_000, "the queue to drain");
  for (let call = 1; call <= 2000; call++)
    expect(typesOf(edge.received, call)).toEqual(["connected", "ended"]);
  expect(relay.stats.eventsDropped).toBe(0);
  // Batches of many events, not one request per event.
  expect(edge.requests.length).toBeLessThan(100);
});

it("bounds memory by calls: beyond maxQueuedCalls it gives up a stats-only call before any state event", async () => {
  const edge = await standIn();
  edge.down = 503;
  const relay = client(edge.url, { maxQueuedCalls: 3, retryMs: 60_000 });
  relay.event(connected(1));
  relay.event(statsOf(2, 1));
  relay.event(ended(3));
  await waitFor(() => edge.refused > 0 && relay.stats.eventsSent === 0, 2000, "a failed try");
  // Its answer back at the client, so the batch is queued again (no retry for a minute).
  await new Promise((r) => setTimeout(r, 200));
  relay.event(connected(4)); // the fourth call: call 2's stats make room
  expect(relay.stats.eventsDropped).toBe(1);
  edge.down = undefined;
  await relay.sendHeartbeat(); // the edge is back: no need to wait out the retry
  await waitFor(() => relay.queuedEvents === 0, 5000, "the queue to drain");
  expect(edge.received.map((e) => `${e.type} ${e.call_id}`)).toEqual(
    expect.arrayContaining([`connected ${callId(1)}`, `ended ${callId(3)}`, `connected ${callId(4)}`]),
  );
  expect(typesOf(edge.received, 2)).toEqual([]);
});

it("with 100 ms round trips and 100 calls' stats, a new call's connected arrives within a few round trips", async () => {
  const edge = await standIn();
  edge.delayMs = 100;
  const relay = client(edge.url);
  // 100 calls, each with stats every 20 ms: 5,000 events a second, 50 times a full relay's.
  const timer = setInterval(() => {
    for (let call = 1; call <= 100; call++) relay.event(statsOf(call, seq));
  }, 20);
  try {
    await new Promise((r) => setTimeout(r, 1000));
    const sentAt = Date.now();
    relay.event(connected(500));
    await waitFor(() => edge.received.some((e) => e.call_id === callId(500)), 3000, "the connected");
    const ms = Date.now() - sentAt;
    expect(ms).toBeLessThan(500);
    expect(edge.maxInFlight).toBeGreaterThan(1); // pipelined
    expect(edge.maxInFlight).toBeLessThanOrEqual(EdgeClient.DEFAULT_BATCHES_IN_FLIGHT + 1); // + a heartbeat
  } finally {
    clearInterval(timer);
  }
});

it("keeps a call's order with batches in flight: its next events wait for the batch that carries its first", async () => {
  const edge = await standIn();
  edge.delayMs = 50;
  const relay = client(edge.url);
  for (let call = 1; call <= 50; call++) {
    relay.event(connected(call));
    relay.event(firstAudio(call));
  }
  for (let call = 1; call <= 50; call++) relay.event(ended(call));
  await waitFor(() => relay.queuedEvents === 0, 5000, "the queue to drain");
  for (let call = 1; call <= 50; call++)
    expect(typesOf(edge.received, call)).toEqual(["connected", "first_audio", "ended"]);
});

it("retries only what the edge could not take yet (503 for one call), in order", async () => {
  const edge = await standIn();
  const relay = client(edge.url);
  let refuse = true;
  edge.resultFor = (e) =>
    e.call_id === callId(2) && refuse ? 503 : e.call_id === callId(3) && e.type === "connected" ? 409 : 204;
  relay.event(connected(1));
  relay.event(connected(2));
  relay.event(ended(2));
  relay.event(connected(3));
  relay.event(ended(3));
  await waitFor(() => typesOf(edge.received, 1).length === 1, 2000, "call 1");
  await new Promise((r) => setTimeout(r, 150));
  expect(typesOf(edge.received, 2)).toEqual([]);
  // A refusal for good (409) is not retried; the rest of that call goes on.
  expect(typesOf(edge.received, 3)).toEqual(["ended"]);
  expect(relay.stats.rejected).toBe(1);
  refuse = false;
  await waitFor(() => relay.queuedEvents === 0, 2000, "the queue to drain");
  expect(typesOf(edge.received, 2)).toEqual(["connected", "ended"]);
});

it("falls back to one event per request for an edge from before batches", async () => {
  const edge = await standIn();
  edge.noBatches = true;
  const relay = client(edge.url);
  relay.event(connected(1));
  relay.event(ended(1));
  relay.event(connected(2));
  await waitFor(() => relay.queuedEvents === 0, 2000, "the queue to drain");
  expect(typesOf(edge.received, 1)).toEqual(["connected", "ended"]);
  expect(typesOf(edge.received, 2)).toEqual(["connected"]);
  expect(edge.requests.every((r) => r.path.startsWith("/internal/calls/"))).toBe(true);
});

it("flushes what waits when closed, within the deadline", async () => {
  const edge = await standIn();
  edge.delayMs = 30;
  const relay = client(edge.url);
  for (let call = 1; call <= 10; call++) relay.event(ended(call));
  await relay.close(2000);
  expect(edge.received.filter((e) => e.type === "ended")).toHaveLength(10);
});

/** A log event of about MAX_LOG_EVENT_BYTES: items of full text, numbered from `first`. */
const logOf = (call: number, first: number): RelayCallEvent => ({
  ...base(call),
  type: "log",
  items: Array.from({ length: 7 }, (_, i) => ({
    id: `item_${first + i}`,
    previous_item_id: null,
    type: "message" as const,
    role: "user" as const,
    text: "x".repeat(MAX_LOG_TEXT_CHARS),
  })),
});

it(`keeps ${MAX_WAITING_LOG_EVENTS} of a call's log events while the edge is out (the oldest go past it), and sends them in batches that fit`, async () => {
  expect(Buffer.byteLength(JSON.stringify(logOf(1, 0)))).toBeLessThanOrEqual(MAX_LOG_EVENT_BYTES);
  const edge = await standIn();
  edge.down = 503;
  const relay = client(edge.url);
  relay.event(connected(1));
  for (let n = 0; n < MAX_WAITING_LOG_EVENTS; n++) relay.event(logOf(1, n * 7));
  await new Promise((r) => setTimeout(r, 100));
  expect(relay.queuedEvents).toBe(1 + MAX_WAITING_LOG_EVENTS);
  expect(relay.stats.eventsDropped).toBe(0);
  relay.event(logOf(1, MAX_WAITING_LOG_EVENTS * 7)); // one past: the oldest log event goes
  relay.event(ended(1));
  expect(relay.queuedEvents).toBe(2 + MAX_WAITING_LOG_EVENTS);
  expect(relay.stats.eventsDropped).toBe(1);
  edge.down = undefined;
  await waitFor(() => relay.queuedEvents === 0, 10_000, "the queue to drain");
  const types = typesOf(edge.received, 1);
  expect(types[0]).toBe("connected");
  expect(types.at(-1)).toBe("ended");
  const logs = edge.received.filter((e) => e.type === "log");
  expect(logs).toHaveLength(MAX_WAITING_LOG_EVENTS);
  expect(logs[0]!.type === "log" && logs[0]!.items[0]!.id).toBe("item_7");
  // About 1 MiB of log went in batches the edge takes (128 KiB each), none refused.
  expect(edge.requests.filter((r) => r.path.endsWith("/events")).length).toBeGreaterThan(
    (MAX_WAITING_LOG_EVENTS * MAX_LOG_EVENT_BYTES * 0.8) / MAX_EVENT_BATCH_BYTES,
  );
  expect(relay.stats.rejected).toBe(0);
});
