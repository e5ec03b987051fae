// Server-Timing (W3C) on the edge's answers, so operators, browser devtools and the bench see
// where a request's time went: `ip;dur=1, auth;dur=0, ledger;dur=2, relay;dur=4, total;dur=9`.
//
// What a part measures: deployed on Cloudflare, Date.now() and performance.now() only advance
// when the isolate does I/O (a Spectre mitigation), so a part reads the I/O it waited on (a
// Durable Object round trip, a storage write, the relay's answer) and a CPU-only step reads 0.
// Those waits are what this is for. Under wrangler dev and in tests the clock runs freely, so
// CPU time shows there too. Durations are whole milliseconds on Cloudflare; parts that overlap
// (work done concurrently) each show their own wall time, and `total` the request's.
// https://developers.cloudflare.com/workers/runtime-apis/performance/

/** Named durations in the order they were recorded; plain data, so it crosses a DO RPC. */
export type TimingParts = [name: string, ms: number][];

export class ServerTiming {
  readonly #start = performance.now();
  readonly #parts: TimingParts = [];

  /** Runs `work` and records how long it took, also when it throws. */
  async time<T>(name: string, work: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      return await work();
    } finally {
      this.add(name, performance.now() - start);
    }
  }

  add(name: string, ms: number): void {
    this.#parts.push([name, ms]);
  }

  /** Parts measured elsewhere (inside a Durable Object), under a prefix. */
  merge(parts: TimingParts, prefix = ""): void {
    for (const [name, ms] of parts) this.add(prefix + name, ms);
  }

  get parts(): TimingParts {
    return [...this.#parts];
  }

  header(): string {
    return [...this.#parts, ["total", performance.now() - this.#start] as const]
      .map(([name, ms]) => `${name};dur=${Math.round(ms * 10) / 10}`)
      .join(", ");
  }
}

const timings = new WeakMap<Request, ServerTiming>();

/** The request's timing, begun on first use (the router's first step, so `total` is the whole request). */
export function timingOf(request: Request): ServerTiming {
  let timing = timings.get(request);
  if (!timing) {
    timing = new ServerTiming();
    timings.set(request, timing);
  }
  return timing;
}

/** Adds the request's Server-Timing header, if anything was timed; errors included. */
export function withServerTiming(request: Request, response: Response): Response {
  const timing = timings.get(request);
  if (!timing) return response;
  try {
    response.headers.set("Server-Timing", timing.header());
    return response;
  } catch {
    // Immutable headers (a response passed through from fetch): copy it.
    const out = new Response(response.body, response);
    out.headers.set("Server-Timing", timing.header());
    return out;
  }
}
