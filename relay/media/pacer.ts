// One 20 ms clock for every call in the process. Each tick is scheduled against its ideal
// time (start + n × 20 ms on performance.now()), so timer lateness never accumulates into
// drift; one timer for all calls keeps the event loop quiet as calls are added. A tick only
// sends what its streams prepared; their preparing for the next tick (a downlink's encode) runs
// as a task of its own right after, once the I/O that came in meanwhile (the calls' uplink
// packets) has been handled.
import { performance } from "node:perf_hooks";
import { FRAME_MS } from "./audio-format.ts";

export interface PacedStream {
  /** Called once per tick; `index` counts ticks since the pacer started (skips included). */
  tick(index: number): void;
  /** Optional: gets the next tick's work ready (called after each tick, outside it). */
  prepare?(): void;
}

export interface PacerStats {
  ticks: number;
  /** Ticks that ran more than one frame after their ideal time. */
  lateTicks: number;
  /** Ticks skipped because the loop was blocked for longer than the catch-up limit. */
  skippedTicks: number;
}

export class Pacer {
  /** Beyond this many frames behind, skip ahead instead of bursting packets out. */
  static readonly MAX_CATCH_UP = 5;
  readonly stats: PacerStats = { ticks: 0, lateTicks: 0, skippedTicks: 0 };
  #streams = new Set<PacedStream>();
  #timer: NodeJS.Timeout | undefined;
  #origin = 0;
  #index = 0;
  #frameMs: number;
  #onLate: ((ms: number) => void) | undefined;

  constructor(options: { frameMs?: number; onTickLateness?: (ms: number) => void } = {}) {
    this.#frameMs = options.frameMs ?? FRAME_MS;
    this.#onLate = options.onTickLateness;
  }

  get size(): number {
    return this.#streams.size;
  }

  get running(): boolean {
    return this.#timer !== undefined;
  }

  /** The tick index that will run next; streams use it to anchor their RTP timestamps. */
  get nextIndex(): number {
    return this.#index;
  }

  add(stream: PacedStream): void {
    this.#streams.add(stream);
    if (!this.#timer) {
      this.#origin = performance.now();
      this.#index = 0;
      this.#schedule();
    }
  }

  delete(stream: PacedStream): void {
    this.#streams.delete(stream);
    if (this.#streams.size === 0) this.stop();
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(): void {
    const delay = this.#origin + this.#index * this.#frameMs - performance.now();
    this.#timer = setTimeout(this.#fire, Math.max(0, delay));
  }

  #fire = (): void => {
    const now = performance.now();
    const behind = Math.floor((now - this.#origin) / this.#frameMs) - this.#index;
    if (behind > Pacer.MAX_CATCH_UP) {
      this.stats.skippedTicks += behind;
      this.#index += behind;
    }
    // Run every tick whose ideal time has come (normally exactly one; none if the timer fired early).
    const first = this.#index;
    while (this.#origin + this.#index * this.#frameMs <= now) {
      const lateness = now - (this.#origin + this.#index * this.#frameMs);
      if (lateness > this.#frameMs) this.stats.lateTicks++;
      this.#onLate?.(lateness);
      for (const stream of this.#streams) {
        try {
          stream.tick(this.#index);
        } catch {
          // One call's failure must not stop the clock for the others; the call handles its own.
        }
      }
      this.stats.ticks++;
      this.#index++;
    }
    if (this.#streams.size > 0) {
      this.#schedule();
      if (this.#index !== first) setImmediate(this.#prepare);
    } else this.#timer = undefined;
  };

  #prepare = (): void => {
    for (const stream of this.#streams) {
      try {
        stream.prepare?.();
      } catch {
        // As in a tick: one call's failure is its own; the next tick encodes inline.
      }
    }
  };
}
