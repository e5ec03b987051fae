// The nonces of signed relay requests a Durable Object has accepted, each kept until its
// signature expires, so a signature is accepted once (protocol/signed-request.ts). It lives in
// the object that applies the request: the RelayRegistry for heartbeats, each CallSession for
// its call's events, batches included, so a replayed event is refused where it would apply and
// no extra round trip is paid. Kept in the object's storage, so an evicted object still knows.

/** Live nonces one object keeps at most: beyond it the oldest go (their signatures expire soon). */
const MAX_NONCES = 10_000;

export class SeenNonces {
  readonly #storage: DurableObjectStorage;
  readonly #prefix: string;
  /** nonce → the epoch second its signature expires, in insertion (near-expiry) order. */
  readonly #expiries = new Map<string, number>();

  /** Call from the object's constructor, inside `blockConcurrencyWhile`. */
  constructor(storage: DurableObjectStorage, prefix = "nonce:") {
    this.#storage = storage;
    this.#prefix = prefix;
    for (const [key, expires] of storage.kv.list<number>({ prefix })) {
      this.#expiries.set(key.slice(prefix.length), expires);
    }
  }

  /** Records the nonce; false when it was seen before (a replay). */
  claim(nonce: string, expires: number, nowSeconds = Math.floor(Date.now() / 1000)): boolean {
    this.#purge(nowSeconds);
    if (this.#expiries.has(nonce)) return false;
    this.#expiries.set(nonce, expires);
    this.#storage.kv.put(this.#prefix + nonce, expires);
    return true;
  }

  /** Forgets every nonce (an ended call past its retention takes no more relay events). */
  clear(): void {
    for (const nonce of this.#expiries.keys()) this.#storage.kv.delete(this.#prefix + nonce);
    this.#expiries.clear();
  }

  #purge(nowSeconds: number): void {
    for (const [nonce, expires] of this.#expiries) {
      if (expires >= nowSeconds && this.#expiries.size < MAX_NONCES) break;
      this.#expiries.delete(nonce);
      this.#storage.kv.delete(this.#prefix + nonce);
    }
  }
}
