// Reports to the edge: heartbeats with load, and per-call events. The relay keeps serving its
// calls whether or not the edge answers: events wait in a bounded queue (oldest dropped first),
// every request has a timeout, and no failure escapes as an unhandled rejection.
import type { Heartbeat, RelayCallEvent } from "../../protocol/relay-api.ts";
import { SIGNATURE_HEADER, signRequest } from "../../protocol/signed-request.ts";
import type { Logger } from "../log.ts";

export interface EdgeClientOptions {
  edgeUrl: string | undefined;
  secret: string;
  log: Logger;
  heartbeatSeconds: number;
  /** The current heartbeat body (load, draining) at send time. */
  heartbeat: () => Heartbeat;
  requestTimeoutMs?: number;
  maxQueuedEvents?: number;
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
  eventsDropped: number;
  /** Requests the edge refused for good (4xx but 429): each is logged with the edge's reason. */
  rejected: number;
}

export class EdgeClient {
  static readonly DEFAULT_MAX_QUEUED_EVENTS = 1000;
  readonly stats: EdgeClientStats = {
    heartbeatsSent: 0,
    heartbeatsFailed: 0,
    eventsSent: 0,
    eventsDropped: 0,
    rejected: 0,
  };
  #options: EdgeClientOptions;
  #queue: RelayCallEvent[] = [];
  #sending = false;
  #timer: NodeJS.Timeout | undefined;
  #retry: NodeJS.Timeout | undefined;
  #abort = new AbortController();
  #closed = false;
  #edgeReachable = true;

  constructor(options: EdgeClientOptions) {
    this.#options = options;
  }

  get queuedEvents(): number {
    return this.#queue.length;
  }

  start(): void {
    if (!this.#options.edgeUrl || this.#timer || this.#closed) return;
    void this.sendHeartbeat();
    this.#timer = setInterval(() => void this.sendHeartbeat(), this.#options.heartbeatSeconds * 1000);
  }

  /** Sends one heartbeat now (also used when draining starts, so the edge knows at once). */
  async sendHeartbeat(): Promise<boolean> {
    if (!this.#options.edgeUrl || this.#closed) return false;
    const ok = await this.#post("/internal/relays/heartbeat", JSON.stringify(this.#options.heartbeat()));
    if (ok) this.stats.heartbeatsSent++;
    else this.stats.heartbeatsFailed++;
    if (ok !== this.#edgeReachable) {
      this.#edgeReachable = ok;
      if (ok) this.#options.log.info("edge reachable again");
      else this.#options.log.warn({ edge: this.#options.edgeUrl }, "edge unreachable; calls continue");
    }
    if (ok) this.#pump();
    return ok;
  }

  event(event: RelayCallEvent): void {
    if (!this.#options.edgeUrl || this.#closed) return;
    const max = this.#options.maxQueuedEvents ?? EdgeClient.DEFAULT_MAX_QUEUED_EVENTS;
    if (this.#queue.length >= max) {
      this.#queue.shift();
      this.stats.eventsDropped++;
    }
    this.#queue.push(event);
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
    while (this.#queue.length > 0 && Date.now() < deadline) {
      const event = this.#queue[0]!;
      if (!(await this.#postEvent(event))) break;
      this.#queue.shift();
      this.stats.eventsSent++;
    }
    this.#closed = true;
    this.#abort.abort();
    this.#queue.length = 0;
  }

  #pump(): void {
    if (this.#sending || this.#retry || this.#closed) return;
    this.#sending = true;
    void this.#drain().finally(() => (this.#sending = false));
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0 && !this.#closed) {
      const event = this.#queue[0]!;
      const ok = await this.#postEvent(event);
      if (!ok) {
        // Keep the order; try again later (the next heartbeat that succeeds also retries).
        this.#retry = setTimeout(() => {
          this.#retry = undefined;
          this.#pump();
        }, 1000);
        return;
      }
      this.#queue.shift();
      this.stats.eventsSent++;
    }
  }

  async #postEvent(event: RelayCallEvent): Promise<boolean> {
    return this.#post(`/internal/calls/${event.call_id}/events`, JSON.stringify(event), () => {
      if (event.type !== "ended") this.#options.onCallEnded?.(event.call_id);
    });
  }

  /** POSTs a signed body; true when delivered (or refused for good). `onGone`: the edge said 410. */
  async #post(path: string, body: string, onGone?: () => void): Promise<boolean> {
    const base = this.#options.edgeUrl!;
    try {
      const signature = await signRequest(this.#options.secret, "POST", path, body);
      const response = await fetch(new URL(path, base), {
        method: "POST",
        headers: { "content-type": "application/json", [SIGNATURE_HEADER]: signature },
        body,
        signal: AbortSignal.any([
          this.#abort.signal,
          AbortSignal.timeout(this.#options.requestTimeoutMs ?? 2000),
        ]),
      });
      if (response.ok) {
        await response.body?.cancel();
        return true;
      }
      // 4xx other than 429 will not get better by retrying: count it as delivered, but say so,
      // since a refused heartbeat means the edge is not routing calls here (a wrong secret,
      // an http URL outside dev, a value out of range).
      const permanent = response.status >= 400 && response.status < 500 && response.status !== 429;
      if (response.status === 410 && onGone) {
        await response.body?.cancel();
        onGone();
        return true;
      }
      if (permanent) {
        const detail = (await response.text().catch(() => "")).slice(0, 300);
        this.stats.rejected++;
        this.#options.log.warn({ path, status: response.status, detail }, "the edge refused a relay request");
      } else {
        await response.body?.cancel();
      }
      return permanent;
    } catch {
      return false;
    }
  }
}
