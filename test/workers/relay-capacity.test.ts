// Issue 13, item 3: a full relay is not a server error. An offer goes to the next-best relay
// when one is full, draining or out of reach; when none can take it the client gets 503 with
// Retry-After; a bad offer is a 400 naming the problem; refused calls do not count against the
// client secret's cap; and calls that never connect are bounded per secret and per IP.
import { describe, expect, it } from "vitest";
import {
  API_KEY,
  callIdOf,
  callView,
  edgeWith,
  errorOf,
  freshIp,
  mintSecret,
  offerSdp,
  postOffer,
  registerRelays,
  relayEvent,
  stubRecords,
  unique,
} from "./fixtures.ts";

/** Relays in a region of their own, registered in order: with no caller location they rank by id. */
async function relaysInRegion(...modes: ("ok" | "full" | "badoffer" | "error")[]) {
  const region = unique("cap");
  const ids = modes.map((mode, i) => `${region}-${String.fromCharCode(97 + i)}-${mode}`);
  await registerRelays(...ids.map((relay_id, i) => ({ relay_id, region, mode: modes[i] })));
  return { ids, query: `?region=${region}` };
}

describe("a full relay", () => {
  it("sends the offer on to the next-best relay, which answers", async () => {
    const { ids, query } = await relaysInRegion("full", "full", "ok");
    const response = await postOffer(offerSdp(), { apiKey: API_KEY, query });
    expect(response.status).toBe(201);
    const callId = callIdOf(response);
    for (const id of ids) expect((await stubRecords(id)).map((r) => r.callId)).toEqual([callId]);
    expect((await callView(callId)).relay.id).toBe(ids[2]);
  });

  it("when every relay is full: 503 with Retry-After in OpenAI's envelope, and the call is recorded as relay_full", async () => {
    const { ids, query } = await relaysInRegion("full", "full");
    const response = await postOffer(offerSdp(), { apiKey: API_KEY, query });
    expect(response.status).toBe(503);
    expect(Number(response.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(await errorOf(response)).toMatchObject({ type: "server_error", code: "no_relay_available" });
    const [post] = await stubRecords(ids[1]!);
    expect(await callView(post!.callId!)).toMatchObject({ state: "failed", end_reason: "relay_full" });
  });

  it("tries at most three relays, the three best", async () => {
    const { ids, query } = await relaysInRegion("full", "full", "full", "ok");
    const response = await postOffer(offerSdp(), { apiKey: API_KEY, query });
    expect(response.status).toBe(503);
    expect(await stubRecords(ids[3]!)).toEqual([]);
  });

  it("a relay that errors (500) is a 502, not tried again elsewhere", async () => {
    const { ids, query } = await relaysInRegion("error", "ok");
    const response = await postOffer(offerSdp(), { apiKey: API_KEY, query });
    expect(response.status).toBe(502);
    expect(await stubRecords(ids[1]!)).toEqual([]);
  });
});

describe("a bad offer", () => {
  it("is a 400 naming the problem, not a 502", async () => {
    const { query } = await relaysInRegion("badoffer");
    const response = await postOffer(offerSdp(), { apiKey: API_KEY, query });
    expect(response.status).toBe(400);
    const error = await errorOf(response);
    expect(error).toMatchObject({ type: "invalid_request_error", code: "invalid_offer", param: "sdp" });
    expect(error.message).toMatch(/exactly one audio m-line/);
  });
});

describe("refused calls and the client secret's cap (EARSHOT_MAX_CALLS_PER_SECRET=2 in the tests)", () => {
  it("three refusals (full, full, bad offer) leave both calls of the secret's cap", async () => {
    const secret = await mintSecret();
    const full = await relaysInRegion("full");
    const bad = await relaysInRegion("badoffer");
    for (const [query, status] of [
      [full.query, 503],
      [full.query, 503],
      [bad.query, 400],
    ] as const) {
      expect((await postOffer(offerSdp(), { bearer: secret.value, query })).status).toBe(status);
    }
    const ok = await relaysInRegion("ok");
    expect((await postOffer(offerSdp(), { bearer: secret.value, query: ok.query })).status).toBe(201);
    expect((await postOffer(offerSdp(), { bearer: secret.value, query: ok.query })).status).toBe(201);
    // The cap still holds: the third answered call is refused.
    const third = await postOffer(offerSdp(), { bearer: secret.value, query: ok.query });
    expect(third.status).toBe(403);
    expect((await errorOf(third)).code).toBe("call_limit_reached");
  });
});

describe("calls that never connect", () => {
  const offer = (vars: Record<string, string>, init: Parameters<typeof postOffer>[1]) => {
    const { query = "", ...rest } = init ?? {};
    return edgeWith(vars, `/v1/realtime/calls${query}`, {
      method: "POST",
      ...rest,
      headers: { "content-type": "application/sdp" },
      body: offerSdp(),
    });
  };

  it("are bounded per client secret: at the limit an offer is taken, past it 429 until one connects", async () => {
    const vars = { EARSHOT_MAX_UNCONNECTED_PER_SECRET: "1", EARSHOT_MAX_CALLS_PER_SECRET: "5" };
    const secret = await mintSecret();
    const { query } = await relaysInRegion("ok");
    const first = await offer(vars, { bearer: secret.value, query });
    expect(first.status).toBe(201);
    const refused = await offer(vars, { bearer: secret.value, query });
    expect(refused.status).toBe(429);
    expect(await errorOf(refused)).toMatchObject({ code: "too_many_unconnected_calls" });
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
    // The first call connects: its slot is free again.
    const firstId = callIdOf(first);
    const relayId = (await callView(firstId)).relay.id;
    expect((await relayEvent(firstId, { type: "connected", relay_id: relayId, at: Date.now() })).status).toBe(
      204,
    );
    await expect.poll(async () => (await offer(vars, { bearer: secret.value, query })).status).toBe(201);
  });

  it("are bounded per client IP: offers per connect timeout, at the limit and just past it", async () => {
    // Off Cloudflare (EARSHOT_DEV=1) all requests are one client; the bound is for deployments.
    const vars = { EARSHOT_MAX_UNCONNECTED_PER_IP: "2", EARSHOT_DEV: "0" };
    const { query } = await relaysInRegion("ok");
    const ip = freshIp();
    expect((await offer(vars, { apiKey: API_KEY, query, ip })).status).toBe(201);
    expect((await offer(vars, { apiKey: API_KEY, query, ip })).status).toBe(201);
    const past = await offer(vars, { apiKey: API_KEY, query, ip });
    expect(past.status).toBe(429);
    expect(Number(past.headers.get("retry-after"))).toBeGreaterThan(0);
    // Another address is not affected.
    expect((await offer(vars, { apiKey: API_KEY, query, ip: freshIp() })).status).toBe(201);
  });
});
