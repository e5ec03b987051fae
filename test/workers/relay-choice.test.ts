import { reset } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { registry } from "../../workers/object-ids.ts";
import { chooseRelay, greatCircleKm, type RelayRecord } from "../../workers/relay-choice.ts";
import {
  API_KEY,
  edge,
  edgeWith,
  handleWith,
  errorOf,
  heartbeat,
  heartbeatOf,
  offerSdp,
  PLACES,
  postOffer,
  registerRelays,
  signedPost,
  stubRecords,
  stubRelayUrl,
  unique,
  type Geo,
  type RelaySpec,
} from "./fixtures.ts";

// Every test here starts from an empty registry: routing depends on every relay it knows.
beforeEach(async () => {
  await reset();
});
afterEach(() => {
  vi.useRealTimers();
});

const frankfurt = (over: Partial<RelaySpec> = {}): RelaySpec => ({
  relay_id: unique("fra"),
  region: "eu-central",
  lat: 50.11,
  lon: 8.68,
  ...over,
});
const amsterdam = (over: Partial<RelaySpec> = {}): RelaySpec => ({
  relay_id: unique("ams"),
  region: "eu-west",
  lat: 52.37,
  lon: 4.9,
  ...over,
});
const virginia = (over: Partial<RelaySpec> = {}): RelaySpec => ({
  relay_id: unique("iad"),
  region: "us-east",
  lat: 38.95,
  lon: -77.45,
  ...over,
});
const singapore = (over: Partial<RelaySpec> = {}): RelaySpec => ({
  relay_id: unique("sin"),
  region: "ap-southeast",
  lat: 1.35,
  lon: 103.82,
  ...over,
});

/** Places a call from `place` and returns the relay that received the offer. */
async function routedFrom(place: Geo, relays: RelaySpec[], query = ""): Promise<string | undefined> {
  const response = await postOffer(offerSdp(), { apiKey: API_KEY, cf: place, query });
  expect(response.status).toBe(201);
  for (const relay of relays) {
    if (
      (await stubRecords(relay.relay_id)).some(
        (r) => r.method === "POST" && r.callId === response.headers.get("location")!.split("/").at(-1),
      )
    ) {
      return relay.relay_id;
    }
  }
  return undefined;
}

describe("choosing a relay", () => {
  it("routes each caller to the nearest of three relays on three continents", async () => {
    const eu = frankfurt();
    const us = virginia();
    const ap = singapore();
    await registerRelays(eu, us, ap);
    const relays = [eu, us, ap];
    expect(await routedFrom(PLACES.paris, relays)).toBe(eu.relay_id);
    expect(await routedFrom(PLACES.newYork, relays)).toBe(us.relay_id);
    expect(await routedFrom(PLACES.tokyo, relays)).toBe(ap.relay_id);
    expect(await routedFrom(PLACES.saoPaulo, relays)).toBe(us.relay_id);
    expect(await routedFrom(PLACES.sydney, relays)).toBe(ap.relay_id);
  });

  it("skips a relay that missed three heartbeats", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
    const near = frankfurt({ interval_seconds: 5 });
    const far = virginia({ interval_seconds: 5 });
    await registerRelays(near);
    vi.setSystemTime(Date.now() + 14_000); // under 3 × 5 s: still usable
    await registerRelays(far);
    expect(await routedFrom(PLACES.paris, [near, far])).toBe(near.relay_id);
    vi.setSystemTime(Date.now() + 2_000); // 16 s since its last heartbeat
    await registerRelays(far);
    expect(await routedFrom(PLACES.paris, [near, far])).toBe(far.relay_id);
  });

  it("skips a draining relay and a full one", async () => {
    const far = virginia();
    const draining = frankfurt({ draining: true });
    const full = amsterdam({ capacity: 10, active_calls: 10 });
    await registerRelays(far, draining, full);
    expect(await routedFrom(PLACES.paris, [far, draining, full])).toBe(far.relay_id);
    await registerRelays({ ...draining, draining: false });
    expect(await routedFrom(PLACES.paris, [far, draining, full])).toBe(draining.relay_id);
  });

  it("adds a load penalty, so a busy near relay loses to an idle one a little farther", async () => {
    const fra = frankfurt({ capacity: 100, active_calls: 0 });
    const ams = amsterdam({ capacity: 100, active_calls: 0 });
    await registerRelays(fra, ams);
    expect(await routedFrom(PLACES.berlin, [fra, ams])).toBe(fra.relay_id);
    await registerRelays({ ...fra, active_calls: 90 });
    expect(await routedFrom(PLACES.berlin, [fra, ams])).toBe(ams.relay_id);
  });

  it("pins a region with ?region=, and says so when that region has no relay", async () => {
    const eu = frankfurt();
    const us = virginia();
    await registerRelays(eu, us);
    expect(await routedFrom(PLACES.paris, [eu, us], "?region=us-east")).toBe(us.relay_id);
    const none = await postOffer(offerSdp(), {
      apiKey: API_KEY,
      cf: PLACES.paris,
      query: "?region=ap-southeast",
    });
    expect(none.status).toBe(503);
    expect((await errorOf(none)).message).toContain("ap-southeast");
    const bad = await postOffer(offerSdp(), { apiKey: API_KEY, query: "?region=Not%20A%20Region" });
    expect(bad.status).toBe(400);
  });

  it("answers 503 with a clear error when no relay is usable", async () => {
    await registerRelays(frankfurt({ draining: true }));
    const response = await postOffer(offerSdp(), { apiKey: API_KEY, cf: PLACES.paris });
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toBe("5");
    expect(await errorOf(response)).toMatchObject({ type: "server_error", code: "no_relay_available" });
  });

  it("reads the registry through an isolate cache, refreshed every few seconds rather than per call", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
    const far = virginia();
    await registerRelays(far);
    // A relay the isolate has not heard about: it reported to the registry through another isolate.
    const near = frankfurt();
    await registry(env).heartbeat(heartbeatOf(near), { nonce: crypto.randomUUID(), expires: 2 ** 31 });
    const call = () =>
      edgeWith({}, "/v1/realtime/calls", {
        method: "POST",
        apiKey: API_KEY,
        cf: PLACES.paris,
        headers: { "content-type": "application/sdp" },
        body: offerSdp(),
      });
    const first = await call();
    expect(first.status).toBe(201);
    expect(await stubRecords(near.relay_id)).toEqual([]);
    vi.setSystemTime(Date.now() + 4_000); // past EARSHOT_REGISTRY_CACHE_SECONDS=3
    await call(); // served from the stale snapshot while the fresh one is fetched
    await call();
    expect((await stubRecords(near.relay_id)).length).toBe(1);
  });

  it("uses the Earshot-Geo header only under EARSHOT_DEV=1", async () => {
    const eu = frankfurt();
    const ap = singapore();
    await registerRelays(eu, ap);
    const request = (dev: "0" | "1") =>
      edgeWith({ EARSHOT_DEV: dev }, "/v1/realtime/calls", {
        method: "POST",
        apiKey: API_KEY,
        cf: PLACES.paris,
        headers: { "content-type": "application/sdp", "earshot-geo": "35.68,139.65" },
        body: offerSdp(),
      });
    expect((await request("1")).status).toBe(201);
    expect((await stubRecords(ap.relay_id)).length).toBe(1);
    expect((await request("0")).status).toBe(201);
    expect((await stubRecords(eu.relay_id)).length).toBe(1);
  });
});

describe("heartbeats", () => {
  it("need a valid signature and a valid body", async () => {
    const body = JSON.stringify(heartbeatOf(frankfurt()));
    const unsigned = await edge("/internal/relays/heartbeat", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    expect(unsigned.status).toBe(401);
    const forged = await fetchSigned("/internal/relays/heartbeat", body, "not-the-relay-secret");
    expect(forged.status).toBe(401);
    const bad = await fetchSigned(
      "/internal/relays/heartbeat",
      JSON.stringify({ ...heartbeatOf(frankfurt()), lat: 123 }),
    );
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).param).toBe("lat");
    expect((await heartbeat(frankfurt())).status).toBe(204);
  });

  it("refuse a plain-http public_url unless EARSHOT_DEV=1", async () => {
    const spec = frankfurt();
    expect(stubRelayUrl(spec.relay_id)).toMatch(/^http:/);
    const request = await signedPost("/internal/relays/heartbeat", JSON.stringify(heartbeatOf(spec)));
    const production = await handleWith({ EARSHOT_DEV: "0" }, request.clone());
    expect(production.status).toBe(400);
    expect(await errorOf(production)).toMatchObject({ code: "insecure_relay_url", param: "public_url" });
    expect((await handleWith({ EARSHOT_DEV: "1" }, request)).status).toBe(204);
    const https = { ...heartbeatOf(frankfurt()), public_url: "https://relay.example.com/" };
    const secure = await handleWith(
      { EARSHOT_DEV: "0" },
      await signedPost("/internal/relays/heartbeat", JSON.stringify(https)),
    );
    expect(secure.status).toBe(204);
  });
});

async function fetchSigned(path: string, body: string, secret?: string): Promise<Response> {
  return exports.default.fetch(await signedPost(path, body, { secret }));
}

describe("geo arithmetic", () => {
  it("measures great-circle distance", () => {
    expect(greatCircleKm({ lat: 48.8566, lon: 2.3522 }, { lat: 51.5074, lon: -0.1278 })).toBeCloseTo(344, -1);
    expect(greatCircleKm({ lat: 0, lon: 179 }, { lat: 0, lon: -179 })).toBeCloseTo(222, -1);
  });

  it("breaks ties by relay id, independent of registry order", () => {
    const base = {
      region: "x",
      lat: 0,
      lon: 0,
      boot_id: "boot-0001",
      public_url: "https://r",
      capacity: 1,
      active_calls: 0,
      draining: false,
      interval_seconds: 5,
      last_seen_ms: 1000,
    };
    const relays: RelayRecord[] = [
      { ...base, relay_id: "b" },
      { ...base, relay_id: "a" },
    ];
    const options = { from: { lat: 1, lon: 1 }, nowMs: 1000, loadPenaltyKm: 0 };
    expect(chooseRelay(relays, options)?.relay_id).toBe("a");
    expect(chooseRelay([...relays].reverse(), options)?.relay_id).toBe("a");
  });
});
