// Puts uplink RTP payloads back in sequence order and declares losses. It is driven by
// arrival: in-order packets pass straight through (no added delay); a gap holds later packets
// until the missing one arrives or `depth` packets have arrived past it, then the gap is
// declared lost and the consumer conceals it (with the next packet at hand for FEC).
// Bounded: a fixed ring of slots, never more than `RING` packets held. The depth may change
// while it runs (relay/media/reorder-depth.ts follows the link's measured jitter).

export interface JitterBufferStats {
  received: number;
  lost: number;
  late: number;
  /** Late packets that had been given up as lost: the buffer was too shallow for them. */
  tooLate: number;
  duplicate: number;
  reordered: number;
  resets: number;
  /** Sum over played packets of how long each waited here, ms (0 for one played on arrival). */
  heldMs: number;
  played: number;
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
    tooLate: 0,
    duplicate: 0,
    reordered: 0,
    resets: 0,
    heldMs: 0,
    played: 0,
  };
  #slots: (Uint8Array | undefined)[] = new Array(RING);
  #arrivedAt = new Float64Array(RING);
  /** The extended sequence number given up in each slot, to tell a too-late packet from a duplicate. */
  #givenUp = new Float64Array(RING).fill(-1);
  #now = 0;
  #depth = 1;
  #sink: JitterSink;
  /** Extended (unwrapped) sequence number of the next packet to hand out; -1 before the first. */
  #next = -1;
  #highest = -1;

  /** depth: packets that may arrive past a gap before it is declared lost (reorder tolerance). */
  constructor(depth: number, sink: JitterSink) {
    this.depth = depth;
    this.#sink = sink;
  }

  get depth(): number {
    return this.#depth;
  }

  /** A deeper buffer waits longer for a gap to fill; a shallower one lets a held gap go at the next push. */
  set depth(depth: number) {
    if (!Number.isInteger(depth) || depth < 1 || depth >= RING) throw new RangeError("depth out of range");
    this.#depth = depth;
  }

  /** Frames currently held waiting for a gap to fill. */
  get held(): number {
    return this.#next < 0 ? 0 : this.#highest - this.#next + 1;
  }

  /**
   * True if a packet with this sequence number would fill a gap the buffer still waits on: not
   * played, not given up, not already held. A redundant copy (RFC 2198) goes in only then, so
   * copies of packets that arrived count as neither duplicates nor late.
   */
  wants(sequenceNumber: number): boolean {
    if (this.#next < 0) return false;
    const ext = this.#extend(sequenceNumber);
    return ext >= this.#next && ext - this.#next < RING && this.#slots[ext % RING] === undefined;
  }

  /** `now`: arrival time in ms (performance.now()), for the hold time in the stats. */
  push(sequenceNumber: number, payload: Uint8Array, now = 0): void {
    this.#now = now;
    if (this.#next < 0) {
      this.#next = this.#highest = sequenceNumber;
    }
    const ext = this.#extend(sequenceNumber);
    if (ext < this.#next) {
      this.stats.late++;
      if (this.#givenUp[ext % RING] === ext) {
        this.stats.tooLate++;
        this.#givenUp[ext % RING] = -1;
      }
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
    this.#arrivedAt[slot] = now;
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
        this.stats.played++;
        this.stats.heldMs += this.#now - this.#arrivedAt[slot]!;
        this.#sink(payload, null);
        continue;
      }
      if (this.#highest - this.#next < this.#depth) return; // wait for the gap to fill
      this.stats.lost++;
      this.#givenUp[slot] = this.#next;
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
