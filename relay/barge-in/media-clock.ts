// Maps a stream's media time (its RTP timestamps, in ms) to the relay's clock (performance.now()),
// free of the jitter of when things happen to arrive. A frame can arrive late (network jitter, a
// loaded machine delaying timers, a burst after a stall) but never early, so the smallest
// (arrival − media time) seen lately is the stream's true offset plus the least transit; adding
// it to a frame's media time gives when the frame would have arrived with no delay at all.
// The minimum is taken over a sliding window (two blocks: the last one to two of BLOCK_MS), so
// the mapping follows clock drift and forgets one unusually early frame. Allocation-free.

/** Half the sliding window. Long enough to contain an undelayed frame even on a busy host. */
const BLOCK_MS = 2000;
/** A change this large in (arrival − media time) is a new timeline (a restarted stream), not delay. */
const RESET_MS = 5000;

export class MediaClock {
  #offset = NaN;
  #current = Infinity;
  #previous = Infinity;
  #blockStart = -Infinity;

  /** The relay-clock time (ms) of media time `mediaMs`, for a frame that arrived at `nowMs`. */
  wallTime(mediaMs: number, nowMs: number): number {
    const transit = nowMs - mediaMs;
    if (!(Math.abs(transit - this.#offset) <= RESET_MS)) {
      // First frame, or the media timeline jumped: start the window again.
      this.#previous = Infinity;
      this.#current = Infinity;
      this.#blockStart = nowMs;
    }
    if (nowMs - this.#blockStart >= BLOCK_MS) {
      this.#previous = this.#current;
      this.#current = Infinity;
      this.#blockStart = nowMs;
    }
    if (transit < this.#current) this.#current = transit;
    this.#offset = Math.min(this.#current, this.#previous);
    return mediaMs + this.#offset;
  }

  /** The current offset (relay clock − media time), NaN before the first frame (tests). */
  get offsetMs(): number {
    return this.#offset;
  }
}
