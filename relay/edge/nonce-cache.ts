// Remembers ticket nonces until their ticket expires, so a ticket is good once. Bounded: when
// full of unexpired nonces it refuses new ones rather than forgetting (which would allow replay).
export class NonceCache {
  #expiries = new Map<string, number>();
  #max: number;

  constructor(max = 100_000) {
    this.#max = max;
  }

  get size(): number {
    return this.#expiries.size;
  }

  /**
   * Records the nonce; "replayed" if it was seen before, "full" if there is no room.
   * `forgetAt` is the epoch second after which the ticket can no longer verify.
   */
  remember(
    nonce: string,
    forgetAt: number,
    nowSeconds = Math.floor(Date.now() / 1000),
  ): "ok" | "replayed" | "full" {
    this.#purge(nowSeconds);
    if (this.#expiries.has(nonce)) return "replayed";
    if (this.#expiries.size >= this.#max) this.#purge(nowSeconds, true);
    if (this.#expiries.size >= this.#max) return "full";
    this.#expiries.set(nonce, forgetAt);
    return "ok";
  }

  #purge(nowSeconds: number, full = false): void {
    // Tickets have near-equal lifetimes, so insertion order is nearly expiry order: stop at the
    // first live one instead of scanning everything, unless the cache is full.
    for (const [nonce, forgetAt] of this.#expiries) {
      if (forgetAt >= nowSeconds) {
        if (full) continue;
        break;
      }
      this.#expiries.delete(nonce);
    }
  }
}
