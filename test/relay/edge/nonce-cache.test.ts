// The ticket nonce cache on its own: replays, expiry, and a full cache.
import { describe, expect, it } from "vitest";
import { NonceCache } from "../../../relay/edge/nonce-cache.ts";

describe("NonceCache", () => {
  it("refuses a replay, forgets after expiry, and refuses new nonces when full of live ones", () => {
    const cache = new NonceCache(2);
    expect(cache.remember("n1", 100, 50)).toBe("ok");
    expect(cache.remember("n1", 100, 50)).toBe("replayed");
    expect(cache.remember("n2", 100, 50)).toBe("ok");
    expect(cache.remember("n3", 100, 50)).toBe("full");
    expect(cache.remember("n3", 200, 101)).toBe("ok"); // n1 and n2 expired
    expect(cache.size).toBe(1);
  });
});
