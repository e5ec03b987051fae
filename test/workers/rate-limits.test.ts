import { describe, expect, it } from "vitest";
import { API_KEY, edgeWith, errorOf, freshIp } from "./fixtures.ts";

// Limits with a slow refill (one request per 6 minutes), so a slow machine cannot refill the
// bucket while the test is still spending it.
const LIMITS = { EARSHOT_RATE_LIMIT_IP: "10/3600", EARSHOT_RATE_LIMIT_API_KEY: "20/3600" };
const NO_CALL = "/v1/realtime/calls/rtc_nosuchcall12345";

describe("rate limits", () => {
  it("let a client IP make exactly its burst, then answer 429 with Retry-After", async () => {
    const ip = freshIp();
    for (let i = 0; i < 10; i++) {
      expect((await edgeWith(LIMITS, NO_CALL, { ip, apiKey: API_KEY })).status).toBe(404);
    }
    const limited = await edgeWith(LIMITS, NO_CALL, { ip, apiKey: API_KEY });
    expect(limited.status).toBe(429);
    // The next request refills 3600 / 10 = 360 s after the first.
    const retryAfter = Number(limited.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(340);
    expect(retryAfter).toBeLessThanOrEqual(360);
    expect(await errorOf(limited)).toMatchObject({ type: "rate_limit_error", code: "rate_limit_exceeded" });
    // Another address is not affected.
    expect((await edgeWith(LIMITS, NO_CALL, { apiKey: API_KEY })).status).toBe(404);
  });

  it("let an API key make exactly its burst from any number of addresses, then answer 429", async () => {
    const key = "sk_test_ratelimit";
    const statuses = await Promise.all(
      Array.from({ length: 20 }, () => edgeWith(LIMITS, NO_CALL, { apiKey: key }).then((r) => r.status)),
    );
    expect(statuses).toEqual(Array(20).fill(404));
    const limited = await edgeWith(LIMITS, NO_CALL, { apiKey: key });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(100);
    // Minting with that key is limited too; other keys are not. The limit is asked while the
    // body is read, but still answers first: a bad body gets 429 as well.
    for (const body of ["{}", "{not json"]) {
      const mint = await edgeWith(LIMITS, "/v1/realtime/client_secrets", {
        method: "POST",
        apiKey: key,
        headers: { "content-type": "application/json" },
        body,
      });
      expect(mint.status).toBe(429);
    }
    expect((await edgeWith(LIMITS, NO_CALL, { apiKey: API_KEY })).status).toBe(404);
  });

  it("do not count preflights", async () => {
    const ip = freshIp();
    const limits = { EARSHOT_RATE_LIMIT_IP: "1/3600" };
    expect((await edgeWith(limits, NO_CALL, { ip, apiKey: API_KEY })).status).toBe(404);
    const preflight = await edgeWith(limits, "/v1/realtime/calls", {
      ip,
      method: "OPTIONS",
      headers: { origin: "https://app.example", "access-control-request-method": "POST" },
    });
    expect(preflight.status).toBe(204);
    expect((await edgeWith(limits, NO_CALL, { ip, apiKey: API_KEY })).status).toBe(429);
  });
});
