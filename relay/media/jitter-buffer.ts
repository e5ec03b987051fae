// Puts uplink RTP payloads back in sequence order and declares losses. It is driven by
// arrival: in-order packets pass straight through (no added delay); a gap holds later packets
// until the missing one arrives or `depth` packets have arrived past it, then the gap is
// declared lost and the consumer conceals it (with the next packet at hand for FEC).
// Bounded: a fixed ring of slots, never more than `RING` packets held.

export interface JitterBufferStats {
  received: number;
  lost: number;
  late: number;
  duplicate: number;
  reordered: number;
  resets: number;
}

/** Called in order, once per sequence number: a payload, or null for a lost packet. */
export type JitterSink = (payload: Uint8Array | null, next: Uint8Array | null) => void;

const RING = 64;

export class JitterBuffer {
  static readonly RING = RING;
  readonly stats: JitterBufferStats = {
    received: 0,
    lost: 0,
    late: 0,
    duplicate: 0,
    reordered: 0,
    resets: 0,
  };
  #slots: (Uint8Array | undefined)[] = new Array(RING);
  #depth: number;
  #sink: JitterSink;
  /** Extended (unwrapped) sequence number of the next packet to hand out; -1 before the first. */
  #next = -1;
  #highest = -1;

  /** depth: packets that may arrive past a gap before it is declared lost (reorder tolerance). */
  constructor(depth: number, sink: JitterSink) {
    if (!Number.isInteger(depth) || depth < 1 || depth >= RING) throw new RangeError("depth out of range");
    this.#depth = depth;
    this.#sink = sink;
  }

  /** Frames currently held waiting for a gap to fill. */
  get held(): number {
    return this.#next < 0 ? 0 : this.#highest - this.#next + 1;
  }

  push(sequenceNumber: number, payload: Uint8Array): void {
    if (this.#next < 0) {
      this.#next = this.#highest = sequenceNumber;
    }
    const ext = this.#extend(sequenceNumber);
    if (ext < this.#next) {
      this.stats.late++;
      return;
    }
    if (ext - this.#next >= RING) {
      // A jump this big is a restarted stream or a long outage: concealing it would only
      // produce a second of mush, so start again from here.
      this.stats.resets++;
      this.#slots.fill(undefined);
      this.#next = this.#highest = ext;
    }
    const slot = ext % RING;
    if (this.#slots[slot] !== undefined) {
      this.stats.duplicate++;
      return;
    }
    this.stats.received++;
    if (ext < this.#highest) this.stats.reordered++;
    this.#slots[slot] = payload;
    if (ext > this.#highest) this.#highest = ext;
    this.#drain();
  }

  #drain(): void {
    while (this.#next <= this.#highest) {
      const slot = this.#next % RING;
      const payload = this.#slots[slot];
      if (payload !== undefined) {
        this.#slots[slot] = undefined;
        this.#next++;
        this.#sink(payload, null);
        continue;
      }
      if (this.#highest - this.#next < this.#depth) return; // wait for the gap to fill
      this.stats.lost++;
      this.#next++;
      this.#sink(null, this.#slots[this.#next % RING] ?? null);
    }
  }

  /** Unwraps a 16-bit sequence number to the one nearest the highest seen. */
  #extend(seq: number): number {
    const base = this.#highest;
    let ext = (base & ~0xffff) | seq;
    if (ext < base - 0x8000) ext += 0x10000;
    else if (ext > base + 0x8000) ext -= 0x10000;
    return ext;
  }
}
