// Opus encoder complexity follows the relay's load, as libwebrtc's CPU-overuse detection
// lowers video resolution: a relay near the end of its core gives every call slightly cheaper
// encoding rather than letting the pacer fall behind, which every call would hear as gaps.
//
// Restricted-low-delay Opus at 24 kHz, 20 ms of speech-like signal (`npx node bench/opus-codec.ts`):
// complexity 5 about 46 µs a frame, 4 about 31 (CELT's pitch pre-filter off), 2 about 25.
// The signal is the event loop's utilisation (busy time / wall time) over the last second:
// it counts everything the process does, the media path, the upstream sockets and GC alike.
import { performance, type EventLoopUtilization } from "node:perf_hooks";

export interface EncoderGovernorOptions {
  /** Complexity from best to cheapest; the first is used while the relay has room. */
  ladder?: readonly number[];
  /** Step down after `downAfter` samples at or above this utilisation (0–1). */
  highWater?: number;
  /** Step back up after `upAfter` samples at or below this. */
  lowWater?: number;
  downAfter?: number;
  upAfter?: number;
  sampleMs?: number;
  onChange?: (complexity: number) => void;
}

export type ComplexitySetter = (complexity: number) => void;

export class EncoderGovernor {
  static readonly LADDER = [5, 4, 2] as const;
  readonly #ladder: readonly number[];
  readonly #highWater: number;
  readonly #lowWater: number;
  readonly #downAfter: number;
  readonly #upAfter: number;
  readonly #sampleMs: number;
  readonly #onChange: ((complexity: number) => void) | undefined;
  readonly #encoders = new Set<ComplexitySetter>();
  #step = 0;
  #high = 0;
  #low = 0;
  #timer: NodeJS.Timeout | undefined;
  #last: EventLoopUtilization | undefined;

  constructor(options: EncoderGovernorOptions = {}) {
    this.#ladder = options.ladder ?? EncoderGovernor.LADDER;
    this.#highWater = options.highWater ?? 0.85;
    this.#lowWater = options.lowWater ?? 0.7;
    this.#downAfter = options.downAfter ?? 2;
    this.#upAfter = options.upAfter ?? 5;
    this.#sampleMs = options.sampleMs ?? 1000;
    this.#onChange = options.onChange;
  }

  /** The complexity a new encoder should start at. */
  get complexity(): number {
    return this.#ladder[this.#step]!;
  }

  /** Encoders following the governor (one per live Opus call). */
  get encoders(): number {
    return this.#encoders.size;
  }

  /** Keeps an encoder at the current complexity until the returned function is called. */
  register(setComplexity: ComplexitySetter): () => void {
    this.#encoders.add(setComplexity);
    return () => this.#encoders.delete(setComplexity);
  }

  start(): void {
    if (this.#timer) return;
    this.#last = performance.eventLoopUtilization();
    this.#timer = setInterval(() => {
      const now = performance.eventLoopUtilization();
      this.observe(performance.eventLoopUtilization(now, this.#last).utilization);
      this.#last = now;
    }, this.#sampleMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One utilisation sample (0–1); public so the policy can be tested without load. */
  observe(utilization: number): void {
    if (utilization >= this.#highWater) {
      this.#low = 0;
      if (++this.#high >= this.#downAfter && this.#step < this.#ladder.length - 1) this.#move(+1);
    } else if (utilization <= this.#lowWater) {
      this.#high = 0;
      if (++this.#low >= this.#upAfter && this.#step > 0) this.#move(-1);
    } else {
      this.#high = 0;
      this.#low = 0;
    }
  }

  #move(direction: 1 | -1): void {
    this.#step += direction;
    this.#high = 0;
    this.#low = 0;
    const complexity = this.complexity;
    for (const set of this.#encoders) set(complexity);
    this.#onChange?.(complexity);
  }
}
