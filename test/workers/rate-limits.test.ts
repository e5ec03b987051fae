import { abortAllDurableObjects } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ipv6Bucket } from "../../workers/client-ip.ts";
import { API_KEY, edgeWith, errorOf, freshIp } from "./fixtures.ts";

// Limits with a slow refill (one request per 6 minutes), so a slow machine cannot refill the
// bucket while the test is still spending it.
const LIMITS = { EARSHOT_RATE_LIMIT_IP: "10/3600", EARSHOT_RATE_LIMIT_API_KEY: "20/3600" };
// On Cloudflare, where CF-Connecting-IP is Cloudflare's to set (the tests' default is a dev edge).
const ON_CLOUDFLARE = { ...LIMITS, EARSHOT_DEV: "0" };
const NO_CALL = "/v1/realtime/calls/rtc_nosuchcall12345";

/** A random IPv6 /64 in the documentation range, as its first four groups. */
function freshPrefix64(): string {
  const [a, b] = crypto.getRandomValues(new Uint16Array(2));
  return `2001:db8:${a!.toString(16)}:${b!.toString(16)}`;
}

describe("rate limits", () => {
  it("let a client IP make exactly its burst, then answer 429 with Retry-After", async () => {
    const ip = freshIp();
    for (let i = 0; i < 10; i++) {
      expect((await edgeWith(ON_CLOUDFLARE, NO_CALL, { ip, apiKey: API_KEY })).status).toBe(404);
    }
    const limited = await edgeWith(ON_CLOUDFLARE, NO_CALL, { ip, apiKey: API_KEY });
    expect(limited.status).toBe(429);
    // The next request refills 3600 / 10 = 360 s after the first.
    const retryAfter = Number(limited.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(340);
    expect(retryAfter).toBeLessThanOrEqual(360);
    expect(await errorOf(limited)).toMatchObject({ type: "rate_limit_error", code: "rate_limit_exceeded" });
    // Another address is not affected.
    expect((await edgeWith(ON_CLOUDFLARE, NO_CALL, { apiKey: API_KEY })).status).toBe(404);
  });

  it("let an API key make exactly its burst from any number of addresses, then answer 429", async () => {
    const key = "sk_test_ratelimit";
    const statuses = await Promise.all(
      Array.from({ length: 20 }, () =>
        edgeWith(ON_CLOUDFLARE, NO_CALL, { apiKey: key }).then((r) => r.status),
      ),
    );
    expect(statuses).toEqual(Array(20).fill(404));
    const limited = await edgeWith(ON_CLOUDFLARE, NO_CALL, { apiKey: key });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(100);
    // Minting with that key is limited too; other keys are not. The limit is asked while the
    // body is read, but still answers first: a bad body gets 429 as well.
    for (const body of ["{}", "{not json"]) {
      const mint = await edgeWith(ON_CLOUDFLARE, "/v1/realtime/client_secrets", {
        method: "POST",
        apiKey: key,
        headers: { "content-type": "application/json" },
        body,
      });
      expect(mint.status).toBe(429);
    }
    expect((await edgeWith(ON_CLOUDFLARE, NO_CALL, { apiKey: API_KEY })).status).toBe(404);
  });

  it("do not count preflights", async () => {
    const ip = freshIp();
    const limits = { EARSHOT_RATE_LIMIT_IP: "1/3600", EARSHOT_DEV: "0" };
    expect((await edgeWith(limits, NO_CALL, { ip, apiKey: API_KEY })).status).toBe(404);
    const preflight = await edgeWith(limits, "/v1/realtime/calls", {
      ip,
      method: "OPTIONS",
      headers: { origin: "https://app.example", "access-control-request-method": "POST" },
    });
    expect(preflight.status).toBe(204);
    expect((await edgeWith(limits, NO_CALL, { ip, apiKey: API_KEY })).status).toBe(429);
  });

  it("cover /admin/relays: guessing its API key from one address gets 429 with Retry-After", async () => {
    const ip = freshIp();
    const guess = (key: string, from = ip) =>
      edgeWith(ON_CLOUDFLARE, "/admin/relays", { ip: from, apiKey: key });
    for (let i = 0; i < 10; i++) {
      const wrong = await guess(`sk_guess_${i.toString().padStart(8, "0")}`);
      expect(wrong.status, `guess ${i + 1}`).toBe(401);
    }
    const limited = await guess("sk_guess_00000010");
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(340);
    expect(await errorOf(limited)).toMatchObject({ type: "rate_limit_error", code: "rate_limit_exceeded" });
    // Refused before the key is looked at, so a right guess learns nothing either.
    expect((await guess(API_KEY)).status).toBe(429);
    expect((await guess(API_KEY, freshIp())).status).toBe(200);
  });

  it("off Cloudflare (EARSHOT_DEV=1) count every request against one bucket, however CF-Connecting-IP rotates", async () => {
    // A fresh local bucket: this file's earlier tests run in the same workerd.
    await abortAllDurableObjects();
    const local = { ...LIMITS, EARSHOT_DEV: "1" };
    // No API key, so only the IP limit counts: 401 until it refuses.
    for (let i = 0; i < 10; i++) {
      expect((await edgeWith(local, NO_CALL, { ip: freshIp() })).status, `request ${i + 1}`).toBe(401);
    }
    for (const ip of [freshIp(), "198.51.100.7", "127.0.0.1"]) {
      const limited = await edgeWith(local, NO_CALL, { ip });
      expect(limited.status, ip).toBe(429);
      expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(340);
    }
  });

  it("on Cloudflare count an IPv6 client by its /64: any address in it shares the bucket, the next /64 does not", async () => {
    const prefix = freshPrefix64();
    // One /64, spelled every way an address in it can be.
    const sameNetwork = [
      `${prefix}::1`,
      `${prefix}:ffff:ffff:ffff:ffff`,
      `${prefix.toUpperCase()}:0:0:0:2`,
      `${prefix}:1::`,
      `${prefix}::198.51.100.7`,
    ];
    for (let i = 0; i < 10; i++) {
      const ip = sameNetwork[i % sameNetwork.length]!;
      expect((await edgeWith(ON_CLOUDFLARE, NO_CALL, { ip })).status, ip).toBe(401);
    }
    const limited = await edgeWith(ON_CLOUDFLARE, NO_CALL, { ip: `${prefix}:abcd::9` });
    expect(limited.status).toBe(429);
    const groups = prefix.split(":");
    const next = [...groups.slice(0, 3), (parseInt(groups[3]!, 16) ^ 1).toString(16)].join(":");
    expect((await edgeWith(ON_CLOUDFLARE, NO_CALL, { ip: `${next}::1` })).status).toBe(401);
  });
});

describe("ipv6Bucket", () => {
  it("names a /64 the same however its address is written, and maps IPv4-mapped addresses to IPv4", () => {
    for (const address of [
      "2001:db8:1:2::1",
      "2001:0db8:0001:0002:0000:0000:0000:0001",
      "2001:DB8:1:2:ffff::",
      "2001:db8:1:2:ffff:ffff:ffff:ffff",
      "2001:db8:1:2::203.0.113.9",
      "2001:db8:1:2::1%eth0",
    ]) {
      expect(ipv6Bucket(address.toLowerCase()), address).toBe("2001:db8:1:2::/64");
    }
    expect(ipv6Bucket("2001:db8:1:3::1")).toBe("2001:db8:1:3::/64");
    expect(ipv6Bucket("::1")).toBe("0:0:0:0::/64");
    expect(ipv6Bucket("::ffff:198.51.100.7")).toBe("198.51.100.7");
    expect(ipv6Bucket("::ffff:c633:6407")).toBe("198.51.100.7");
  });

  it("refuses text that is not an IPv6 address", () => {
    for (const text of [
      "2001:db8::1::2",
      "2001:db8:1:2:3:4:5:6:7",
      "2001:db8:1:2:3:4:5",
      "2001:db8:12345::1",
      "2001:db8:g::1",
      "::ffff:198.51.100.256",
      "::ffff:198.51.100",
      "1:2:3:4:5:6:7::8",
      "",
    ]) {
      expect(ipv6Bucket(text), text).toBeUndefined();
    }
  });
});
