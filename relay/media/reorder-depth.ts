// How many packets the uplink's jitter buffer lets arrive past a gap before it gives the missing
// packet up (relay/media/jitter-buffer.ts). A fixed 3 (60 ms) conceals packets that jitter merely
// delayed once the link's delay varies by more than that; a large fixed depth delays every
// concealment on a clean link. So the depth follows the link: from the measured interarrival
// jitter (RFC 3550 J; for a delay spread uniformly over a width W, J ≈ W/3, so 3J covers the
// spread), raised at once by a packet that came after it was given up, and lowered slowly.
// Its cost is delay only when a packet is missing: in-order packets still pass straight through.

/** The fixed depth before this module, and the floor: 60 ms of reordering. */
export const MIN_REORDER_DEPTH = 3;
/** 400 ms: beyond it a packet is too late to matter to a conversation. */
export const MAX_REORDER_DEPTH = 20;
/** How long without a late packet before the late-arrival bump is let down by one packet. */
const LATE_DECAY_MS = 5000;
const PACKET_MS = 20;

export class ReorderDepth {
  #fromLate = MIN_REORDER_DEPTH;
  #lastLateAt = 0;
  depth = MIN_REORDER_DEPTH;

  /** After each packet: the jitter now, and whether a packet arrived after being given up. */
  update(jitterMs: number, lateArrival: boolean, now: number): number {
    if (lateArrival) {
      this.#fromLate = Math.min(MAX_REORDER_DEPTH, Math.max(this.#fromLate, this.depth) + 1);
      this.#lastLateAt = now;
    } else if (this.#fromLate > MIN_REORDER_DEPTH && now - this.#lastLateAt > LATE_DECAY_MS) {
      this.#fromLate--;
      this.#lastLateAt = now;
    }
    const fromJitter = Math.ceil((3 * jitterMs) / PACKET_MS) + 1;
    this.depth = Math.min(MAX_REORDER_DEPTH, Math.max(MIN_REORDER_DEPTH, fromJitter, this.#fromLate));
    return this.depth;
  }
}
