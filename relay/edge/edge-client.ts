// Reports to the edge: heartbeats with load, and per-call events. The relay keeps serving its
// calls whether or not the edge answers: every request has a timeout, and no failure escapes as
// an unhandled rejection.
//
// Events go in batches (`POST /internal/relays/{id}/events`), several batches in flight, so a
// round trip to the edge costs a batch, not an event. The queue is kept per call:
// - a call's events keep their order, and a call is in at most one batch in flight at a time;
// - only the latest stats of a call waits (stats replace stats), and a repeated `connected` or
//   `first_audio` that has not gone yet is not queued twice; its conversation log events wait
//   too, at most MAX_WAITING_LOG_EVENTS of them (the oldest go first), so a call holds a few
//   state events and a bounded log;
// - state events (connected, first_audio, ended) are never dropped to make room: memory is
//   bounded by the number of calls waiting, and only beyond `maxQueuedCalls` (an edge outage of
//   hours) is the oldest call's queue given up, counted and logged.
import {
  MAX_EVENT_BATCH,
  MAX_EVENT_BATCH_BYTES,
  RelayEventBatchResponse,
  type Heartbeat,
  type RelayCallEvent,
} from "../../protocol/relay-api.ts";
import { RELAY_HEADER } from "../../protocol/relay-key.ts";
import { SIGNATURE_HEADER, signRequest } from "../../protocol/signed-request.ts";
import type { Logger } from "../log.ts";

export interface EdgeClientOptions {
  edgeUrl: string | undefined;
  /** This relay's id, sent in Earshot-Relay so the edge knows whose key to check. */
  relayId: string;
  /** This relay's own key (protocol/relay-key.ts): every request is signed with it. */
  key: string;
  log: Logger;
  heartbeatSeconds: number;
  /** The current heartbeat body (load, draining) at send time. */
  heartbeat: () => Heartbeat;
  requestTimeoutMs?: number;
  /** Calls whose events may wait for the edge at once (each holds at most four events). */
  maxQueuedCalls?: number;
  /** Event batches in flight at once. */
  maxBatchesInFlight?: number;
  /** Wait after a failed request before the next try (a heartbeat that gets through ends it early). */
  retryMs?: number;
  /**
   * The edge answered a call's report with 410: it has ended the call (the relay could not be
   * told, or its reports were cut off), and the relay should end it too.
   */
  onCallEnded?: (callId: string) => void;
}

export interface EdgeClientStats {
  heartbeatsSent: number;
  heartbeatsFailed: number;
  eventsSent: number;
  /** Events given up: only when more than `maxQueuedCalls` calls wait for an edge that is gone. */
  eventsDropped: number;
  /** Stats replaced by a newer stats of the same call before they went. */
  statsCoalesced: number;
  batchesSent: number;
  /** Requests the edge refused for good (4xx but 429): each is logged with the edge's reason. */
  rejected: number;
}

/** One call's events: `sending` is in a batch in flight, `waiting` came after it. */
interface CallQueue {
  waiting: RelayCallEvent[];
  sending: RelayCallEvent[] | undefined;
}

type PostResult =
  { kind: "ok"; body: string } | { kind: "refused"; status: number; body: string } | { kind: "failed" };

/** A call's log events that may wait for the edge (each at most MAX_LOG_EVENT_BYTES, 32 KiB). */
export const MAX_WAITING_LOG_EVENTS = 32;
/** Batch framing: `{"events":[` … `]}`, and a comma between events. */
const BATCH_OVERHEAD = 16;

export class EdgeClient {
  static readonly DEFAULT_MAX_QUEUED_CALLS = 10_000;
  static readonly DEFAULT_BATCHES_IN_FLIGHT = 4;
  readonly stats: EdgeClientStats = {
    heartbeatsSent: 0,
    heartbeatsFailed: 0,
    eventsSent: 0,
    eventsDropped: 0,
    statsCoalesced: 0,
    batchesSent: 0,
    rejected: 0,
  };
  #options: EdgeClientOptions;
  /** By call id, oldest first: a call goes to the back when its queue empties and refills. */
  #calls = new Map<string, CallQueue>();
  #inFlight = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | undefined;
  #retry: NodeJS.Timeout | undefined;
  #abort = new AbortController();
  #closed = false;
  #edgeReachable = true;
  /** The edge answered 404 to a batch: it predates batches, so events go one by one until the next heartbeat. */
  #oneByOne = false;

  constructor(options: EdgeClientOptions) {
    this.#options = options;
  }

  get queuedEvents(): number {
    let n = 0;
    for (const call of this.#calls.values()) n += call.waiting.length + (call.sending?.length ?? 0);
    return n;
  }

  start(): void {
    if (!this.#options.edgeUrl || this.#timer || this.#closed) return;
    void this.sendHeartbeat();
    this.#timer = setInterval(() => void this.sendHeartbeat(), this.#options.heartbeatSeconds * 1000);
  }

  /** Sends one heartbeat now (also used when draining starts, so the edge knows at once). */
  async sendHeartbeat(): Promise<boolean> {
    if (!this.#options.edgeUrl || this.#closed) return false;
    const path = "/internal/relays/heartbeat";
    const result = await this.#post(path, JSON.stringify(this.#options.heartbeat()));
    // A refused heartbeat is not retried (retrying cannot help), but it means no calls will come.
    if (result.kind === "refused") this.#refused(path, result.status, result.body);
    const ok = result.kind !== "failed";
    if (ok) this.stats.heartbeatsSent++;
    else this.stats.heartbeatsFailed++;
    if (ok !== this.#edgeReachable) {
      this.#edgeReachable = ok;
      if (ok) this.#options.log.info("edge reachable again");
      else this.#options.log.warn({ edge: this.#options.edgeUrl }, "edge unreachable; calls continue");
    }
    if (ok) {
      this.#oneByOne = false;
      // The edge is back: no need to wait out the retry delay.
      if (this.#retry) clearTimeout(this.#retry);
      this.#retry = undefined;
      this.#pump();
    }
    return ok;
  }

  event(event: RelayCallEvent): void {
    if (!this.#options.edgeUrl || this.#closed) return;
    let call = this.#calls.get(event.call_id);
    if (!call) {
      this.#makeRoom();
      call = { waiting: [], sending: undefined };
      this.#calls.set(event.call_id, call);
    }
    call.waiting = this.#enqueue(call.waiting, event);
    this.#pump();
  }

  /** Tries to deliver what is queued (bounded by a deadline), then stops everything. */
  async close(flushWithinMs = 0): Promise<void> {
    if (this.#closed) return;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#retry) clearTimeout(this.#retry);
    this.#retry = undefined;
    const deadline = Date.now() + flushWithinMs;
    while (this.#calls.size > 0 && Date.now() < deadline) {
      this.#pump();
      if (this.#inFlight.size === 0) break;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        ...this.#inFlight,
        new Promise((resolve) => (timer = setTimeout(resolve, deadline - Date.now()))),
      ]);
      clearTimeout(timer);
      // A failed batch sets a retry; when closing there is no later.
      if (this.#retry) break;
    }
    if (this.#retry) clearTimeout(this.#retry);
    this.#retry = undefined;
    this.#closed = true;
    this.#abort.abort();
    this.#calls.clear();
  }

  /** `queue` with `event` appended: stats replace stats, a repeated connected or first_audio is not added. */
  #enqueue(queue: RelayCallEvent[], event: RelayCallEvent): RelayCallEvent[] {
    switch (event.type) {
      case "stats": {
        const kept: RelayCallEvent[] = queue.filter((e) => e.type !== "stats");
        this.stats.statsCoalesced += queue.length - kept.length;
        kept.push(event);
        return kept;
      }
      case "connected":
      case "first_audio":
        if (!queue.some((e) => e.type === event.type)) queue.push(event);
        return queue;
      case "session":
        // Only the latest session matters.
        return [...queue.filter((e) => e.type !== "session"), event];
      case "ended":
        queue.push(event);
        return queue;
      case "log": {
        // While the edge is away a call's log waits too, bounded: past MAX_WAITING_LOG_EVENTS
        // the oldest log event goes (the edge keeps the latest version of each item anyway).
        queue.push(event);
        const logs = queue.filter((e) => e.type === "log");
        if (logs.length <= MAX_WAITING_LOG_EVENTS) return queue;
        this.stats.eventsDropped++;
        return queue.filter((e) => e !== logs[0]);
      }
    }
  }

  /** Before a new call joins a full queue: give up the oldest call with only stats waiting, else the oldest call. */
  #makeRoom(): void {
    const max = this.#options.maxQueuedCalls ?? EdgeClient.DEFAULT_MAX_QUEUED_CALLS;
    if (this.#calls.size < max) return;
    let victim: string | undefined;
    let fallback: string | undefined;
    for (const [id, call] of this.#calls) {
      if (call.sending) continue;
      fallback ??= id;
      if (call.waiting.every((e) => e.type === "stats")) {
        victim = id;
        break;
      }
    }
    victim ??= fallback;
    if (victim === undefined) return;
    const lost = this.#calls.get(victim)!.waiting;
    this.#calls.delete(victim);
    this.stats.eventsDropped += lost.length;
    if (lost.some((e) => e.type !== "stats")) {
      this.#options.log.error(
        { call_id: victim, events: lost.map((e) => e.type), queued_calls: this.#calls.size },
        "too many calls wait for the edge; gave up the oldest call's events",
      );
    }
  }

  #pump(): void {
    if (this.#retry || this.#closed) return;
    const max = this.#options.maxBatchesInFlight ?? EdgeClient.DEFAULT_BATCHES_IN_FLIGHT;
    while (this.#inFlight.size < max) {
      const batch = this.#nextBatch();
      if (batch.length === 0) return;
      const sent = this.#send(batch).finally(() => {
        this.#inFlight.delete(sent);
        this.#pump();
      });
      this.#inFlight.add(sent);
    }
  }

  /** Calls with state events first, then stats-only ones; each call's waiting events whole. */
  #nextBatch(): [string, RelayCallEvent[]][] {
    const batch: [string, RelayCallEvent[]][] = [];
    let count = 0;
    let bytes = BATCH_OVERHEAD;
    for (const statsOnly of [false, true]) {
      for (const [id, call] of this.#calls) {
        if (call.sending || call.waiting.length === 0) continue;
        if (call.waiting.every((e) => e.type === "stats") !== statsOnly) continue;
        // The call's waiting events from the oldest, as many as fit (a call's log can be more
        // than one batch holds; a single event always fits, see MAX_LOG_EVENT_BYTES).
        let take = 0;
        let size = 0;
        for (const event of call.waiting) {
          const eventBytes = Buffer.byteLength(JSON.stringify(event)) + 1;
          if (
            count + take > 0 &&
            (count + take + 1 > MAX_EVENT_BATCH || bytes + size + eventBytes > MAX_EVENT_BATCH_BYTES)
          )
            break;
          take++;
          size += eventBytes;
        }
        if (take === 0) return batch;
        call.sending = call.waiting.slice(0, take);
        call.waiting = call.waiting.slice(take);
        batch.push([id, call.sending]);
        count += call.sending.length;
        bytes += size;
        if (call.waiting.length > 0) return batch;
      }
    }
    return batch;
  }

  async #send(batch: [string, RelayCallEvent[]][]): Promise<void> {
    const events = batch.flatMap(([, e]) => e);
    const outcome = this.#oneByOne ? await this.#sendOneByOne(batch) : await this.#sendBatch(events, batch);
    let retry = false;
    let i = 0;
    for (const [id, sent] of batch) {
      const call = this.#calls.get(id);
      const statuses = outcome.slice(i, i + sent.length);
      i += sent.length;
      if (!call) continue;
      // A call's events after the first that must be tried again go again with it, in order.
      const firstRetry = statuses.findIndex((s) => s === "retry");
      const done = firstRetry === -1 ? sent.length : firstRetry;
      this.stats.eventsSent += statuses.slice(0, done).filter((s) => s === "sent").length;
      let waiting = sent.slice(done);
      if (waiting.length > 0) retry = true;
      for (const event of call.waiting) waiting = this.#enqueue(waiting, event);
      call.sending = undefined;
      call.waiting = waiting;
      if (waiting.length === 0) this.#calls.delete(id);
    }
    if (retry && !this.#closed) {
      this.#retry ??= setTimeout(() => {
        this.#retry = undefined;
        this.#pump();
      }, this.#options.retryMs ?? 1000);
    }
  }

  /** One status per event: sent, refused for good (counted, not retried), or retry. */
  async #sendBatch(
    events: RelayCallEvent[],
    batch: [string, RelayCallEvent[]][],
  ): Promise<("sent" | "refused" | "retry")[]> {
    const relayId = events[0]!.relay_id;
    const result = await this.#post(
      `/internal/relays/${encodeURIComponent(relayId)}/events`,
      JSON.stringify({ events }),
    );
    if (result.kind === "failed") return events.map(() => "retry");
    if (result.kind === "refused") {
      if (result.status === 404) {
        // An edge from before batches: this batch and the next go one by one.
        this.#oneByOne = true;
        return this.#sendOneByOne(batch);
      }
      this.#refused(`/internal/relays/${relayId}/events`, result.status, result.body);
      return events.map(() => "refused");
    }
    this.stats.batchesSent++;
    let parsed: RelayEventBatchResponse;
    try {
      parsed = RelayEventBatchResponse.parse(JSON.parse(result.body));
    } catch {
      return events.map(() => "retry");
    }
    if (parsed.results.length !== events.length) return events.map(() => "retry");
    const refusals = new Map<string, number>();
    const statuses = parsed.results.map(({ status, code }, i) => {
      if (status >= 200 && status < 300) return "sent";
      if (status === 410) return this.#gone(events[i]!);
      if (status >= 400 && status < 500 && status !== 429) {
        const key = `${status} ${code ?? ""}`.trim();
        refusals.set(key, (refusals.get(key) ?? 0) + 1);
        return "refused";
      }
      return "retry";
    });
    if (refusals.size > 0) {
      this.stats.rejected += [...refusals.values()].reduce((a, b) => a + b, 0);
      this.#options.log.warn({ refused: Object.fromEntries(refusals) }, "the edge refused some call events");
    }
    return statuses;
  }

  /** The per-call endpoint: calls side by side, each call's events in turn, stopping at the first to retry. */
  async #sendOneByOne(batch: [string, RelayCallEvent[]][]): Promise<("sent" | "refused" | "retry")[]> {
    const perCall = await Promise.all(
      batch.map(async ([id, events]) => {
        const statuses: ("sent" | "refused" | "retry")[] = [];
        for (const event of events) {
          if (statuses.at(-1) === "retry") {
            statuses.push("retry");
            continue;
          }
          const path = `/internal/calls/${encodeURIComponent(id)}/events`;
          const result = await this.#post(path, JSON.stringify(event));
          if (result.kind === "refused" && result.status === 410) {
            statuses.push(this.#gone(event));
            continue;
          }
          if (result.kind === "refused") this.#refused(path, result.status, result.body);
          statuses.push(result.kind === "ok" ? "sent" : result.kind === "refused" ? "refused" : "retry");
        }
        return statuses;
      }),
    );
    return perCall.flat();
  }

  /** 410: the edge has ended the event's call; the relay ends it too. The event is delivered. */
  #gone(event: RelayCallEvent): "sent" {
    if (event.type !== "ended") this.#options.onCallEnded?.(event.call_id);
    return "sent";
  }

  #refused(path: string, status: number, body: string): void {
    this.stats.rejected++;
    this.#options.log.warn({ path, status, detail: body.slice(0, 300) }, "the edge refused a relay request");
  }

  /**
   * 2xx is ok; 4xx other than 429 will not get better by retrying ("refused": a wrong secret, an
   * http URL outside dev, a value out of range); anything else, or no answer, failed.
   */
  async #post(path: string, body: string): Promise<PostResult> {
    const base = this.#options.edgeUrl!;
    try {
      const signature = await signRequest(this.#options.key, "POST", path, body);
      const response = await fetch(new URL(path, base), {
        method: "POST",
        headers: {
          "content-type": "application/json",
          [RELAY_HEADER]: this.#options.relayId,
          [SIGNATURE_HEADER]: signature,
        },
        body,
        signal: AbortSignal.any([
          this.#abort.signal,
          AbortSignal.timeout(this.#options.requestTimeoutMs ?? 2000),
        ]),
      });
      if (response.ok) return { kind: "ok", body: await response.text() };
      if (response.status >= 400 && response.status < 500 && response.status !== 429) {
        return { kind: "refused", status: response.status, body: await response.text().catch(() => "") };
      }
      await response.body?.cancel();
      return { kind: "failed" };
    } catch {
      return { kind: "failed" };
    }
  }
}
