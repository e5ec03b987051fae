import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { CallSession, StartCall } from "../../workers/call-session.ts";
import { callSession } from "../../workers/object-ids.ts";
import {
  API_KEY,
  callView,
  getCall,
  offerSdp,
  postOffer,
  relayEvent,
  signedPost,
  soloRelay,
  stubRecords,
  STUB_BOOT_ID,
  stubRelayUrl,
  unique,
  waitFor,
  placeCall,
  edge,
  errorOf,
  heartbeat,
} from "./fixtures.ts";

afterEach(() => {
  vi.useRealTimers();
});

const at = () => Date.now();
const stubFor = (callId: string) => callSession(env, callId)!;

async function connectedCall() {
  const relay = await soloRelay();
  const callId = await placeCall(relay.query);
  expect((await relayEvent(callId, { type: "connected", relay_id: relay.relayId, at: at() })).status).toBe(
    204,
  );
  return { ...relay, callId };
}

function advance(ms: number) {
  vi.setSystemTime(Date.now() + ms);
}

describe("relay events", () => {
  it("move the call to connected and record first audio and stats", async () => {
    const { relayId, callId } = await connectedCall();
    expect((await relayEvent(callId, { type: "connected", relay_id: relayId, at: at() })).status).toBe(204); // repeat: no-op
    expect((await relayEvent(callId, { type: "first_audio", relay_id: relayId, at: at() })).status).toBe(204);
    const stats = { packets_in: 500, packets_out: 480, packets_lost: 2, jitter_ms: 4.5, late_frames: 0 };
    expect((await relayEvent(callId, { type: "stats", relay_id: relayId, at: at(), stats })).status).toBe(
      204,
    );
    const view = (await (await getCall(callId)).json()) as {
      state: string;
      stats: unknown;
      timestamps: Record<string, number>;
    };
    expect(view.state).toBe("connected");
    expect(view.stats).toEqual(stats);
    expect(view.timestamps.connected).toBeGreaterThanOrEqual(view.timestamps.answered!);
    expect(view.timestamps.first_audio).toBeGreaterThan(0);
  });

  it("show the call's media quality each way from the relay's stats, and refuse a malformed one", async () => {
    const { relayId, callId } = await connectedCall();
    const stats = {
      packets_in: 500,
      packets_out: 480,
      packets_lost: 25,
      jitter_ms: 27.1,
      late_frames: 3,
      rtt_ms: 84.2,
      quality: {
        uplink: {
          loss_percent: 4.8,
          fec_recovered_frames: 19,
          concealed_frames: 6,
          jitter_buffer_ms: 12.5,
          jitter_buffer_max_ms: 120,
        },
        downlink: {
          loss_percent: 5.1,
          packets_lost: 24,
          jitter_ms: 22,
          fec_expected_loss_percent: 6,
          fec_frames: 480,
        },
      },
    };
    expect((await relayEvent(callId, { type: "stats", relay_id: relayId, at: at(), stats })).status).toBe(
      204,
    );
    expect(await callView(callId)).toMatchObject({ stats });
    const bad = {
      ...stats,
      quality: { ...stats.quality, uplink: { ...stats.quality.uplink, loss_percent: 101 } },
    };
    expect(
      (await relayEvent(callId, { type: "stats", relay_id: relayId, at: at(), stats: bad })).status,
    ).toBe(400);
    expect(await callView(callId)).toMatchObject({ stats });
  });

  it("end the call with the relay's reason: ended for a hangup, failed for a failure", async () => {
    const a = await connectedCall();
    await relayEvent(a.callId, { type: "ended", relay_id: a.relayId, at: at(), reason: "client_hangup" });
    expect(await callView(a.callId)).toMatchObject({ state: "ended", end_reason: "client_hangup" });
    const b = await connectedCall();
    await relayEvent(b.callId, {
      type: "ended",
      relay_id: b.relayId,
      at: at(),
      reason: "ice_failed",
      message: "ICE failed after 8 s",
    });
    const view = (await (await getCall(b.callId)).json()) as {
      state: string;
      end_reason: string;
      end_message: string;
    };
    expect(view).toMatchObject({
      state: "failed",
      end_reason: "ice_failed",
      end_message: "ICE failed after 8 s",
    });
    // A late `ended` is harmless. Any other report of the ended call means the relay still runs
    // it: 410 tells the relay to end it too (issue 13.2).
    expect(
      (await relayEvent(b.callId, { type: "ended", relay_id: b.relayId, at: at(), reason: "relay_lost" }))
        .status,
    ).toBe(204);
    expect((await callView(b.callId)).end_reason).toBe("ice_failed");
    const late = await relayEvent(b.callId, { type: "connected", relay_id: b.relayId, at: at() });
    expect(late.status).toBe(410);
    expect(await errorOf(late)).toMatchObject({ code: "call_ended" });
    const stats = { packets_in: 1, packets_out: 1, packets_lost: 0, jitter_ms: 1, late_frames: 0 };
    expect((await relayEvent(b.callId, { type: "stats", relay_id: b.relayId, at: at(), stats })).status).toBe(
      410,
    );
  });

  it("ticket the relay with the call's deadline (EARSHOT_MAX_CALL_SECONDS after its creation)", async () => {
    const { relayId, query } = await soloRelay();
    const callId = await placeCall(query);
    const [post] = await stubRecords(relayId);
    const claims = JSON.parse(
      new TextDecoder().decode(
        Uint8Array.from(atob(post!.ticket!.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/")), (c) =>
          c.charCodeAt(0),
        ),
      ),
    ) as { call_deadline: number };
    const created = (await callView(callId)).timestamps.created!;
    expect(claims.call_deadline).toBe(Math.ceil((created + 3600 * 1000) / 1000));
  });

  it("refuse an illegal transition with 409: connected before the relay answered", async () => {
    const { relayId, query } = await soloRelay("hang");
    const pending = postOffer(offerSdp(), { apiKey: API_KEY, query });
    const callId = await waitFor(
      async () => (await stubRecords(relayId))[0]?.callId,
      "the offer at the relay",
    );
    expect((await callView(callId)).state).toBe("offered");
    const early = await relayEvent(callId, { type: "connected", relay_id: relayId, at: at() });
    expect(early.status).toBe(409);
    expect((await errorOf(early)).code).toBe("illegal_transition");
    expect((await pending).status).toBe(504);
  });

  it("are accepted only signed, for their own call, from the call's own relay", async () => {
    const { relayId, callId } = await connectedCall();
    const body = JSON.stringify({ type: "first_audio", call_id: callId, relay_id: relayId, at: at() });
    const path = `/internal/calls/${callId}/events`;
    const unsigned = await edge(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    expect(unsigned.status).toBe(401);
    const forged = await exports.default.fetch(
      await signedPost(path, body, { secret: "some-other-relay-secret" }),
    );
    expect(forged.status).toBe(401);
    const otherRelay = await relayEvent(callId, { type: "first_audio", relay_id: "another-relay", at: at() });
    expect(otherRelay.status).toBe(403);
    const wrongCall = await exports.default.fetch(
      await signedPost(`/internal/calls/rtc_someothercall1/events`, body),
    );
    expect(wrongCall.status).toBe(400);
    const unknown = await relayEvent("rtc_nosuchcall12345", {
      type: "first_audio",
      relay_id: relayId,
      at: at(),
    });
    expect(unknown.status).toBe(404);
    const invalid = await relayEvent(callId, { type: "connected", relay_id: relayId, at: -5 } as never);
    expect(invalid.status).toBe(400);
  });
});

describe("alarms", () => {
  it("fail a call that never connects (10 s) and tell its relay", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
    const { relayId, query } = await soloRelay();
    const callId = await placeCall(query);
    advance(9_000);
    expect(await runDurableObjectAlarm(stubFor(callId))).toBe(true);
    expect((await callView(callId)).state).toBe("answered"); // an early alarm changes nothing
    advance(2_000);
    expect(await runDurableObjectAlarm(stubFor(callId))).toBe(true);
    expect(await callView(callId)).toMatchObject({ state: "failed", end_reason: "never_connected" });
    expect((await stubRecords(relayId)).filter((r) => r.method === "DELETE")).toHaveLength(1);
    // Alarms run at least once: running it again changes nothing.
    await runDurableObjectAlarm(stubFor(callId));
    expect(await callView(callId)).toMatchObject({ state: "failed", end_reason: "never_connected" });
    expect((await stubRecords(relayId)).filter((r) => r.method === "DELETE")).toHaveLength(1);
  });

  it("retry an end the relay did not confirm, from the alarm with backoff and on the next hang-up", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
    const { relayId, query } = await soloRelay("dropfail");
    const callId = await placeCall(query);
    const deletes = async () => (await stubRecords(relayId)).filter((r) => r.method === "DELETE").length;
    expect((await edge(`/v1/realtime/calls/${callId}`, { method: "DELETE", apiKey: API_KEY })).status).toBe(
      200,
    );
    expect(await deletes()).toBe(1);
    // 1 s, then 2 s: each due alarm asks the relay again.
    advance(1_000);
    await runDurableObjectAlarm(stubFor(callId));
    expect(await deletes()).toBe(2);
    advance(1_000);
    await runDurableObjectAlarm(stubFor(callId));
    expect(await deletes()).toBe(2); // not due yet
    advance(1_000);
    await runDurableObjectAlarm(stubFor(callId));
    expect(await deletes()).toBe(3);
    // A hang-up of the ended call asks at once.
    expect((await edge(`/v1/realtime/calls/${callId}`, { method: "DELETE", apiKey: API_KEY })).status).toBe(
      200,
    );
    expect(await deletes()).toBe(4);
    expect(await callView(callId)).toMatchObject({ state: "ended", end_reason: "hangup" });
  });

  it("fail a connected call whose relay stops reporting (15 s)", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
    const { relayId, callId } = await connectedCall();
    const stats = { packets_in: 1, packets_out: 1, packets_lost: 0, jitter_ms: 1, late_frames: 0 };
    advance(10_000);
    await relayEvent(callId, { type: "stats", relay_id: relayId, at: at(), stats });
    advance(10_000);
    await runDurableObjectAlarm(stubFor(callId));
    expect((await callView(callId)).state).toBe("connected"); // 10 s since its last report
    advance(6_000);
    expect(await runDurableObjectAlarm(stubFor(callId))).toBe(true);
    expect(await callView(callId)).toMatchObject({ state: "failed", end_reason: "relay_lost" });
  });

  it("end a call at its max duration (60 min)", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
    const { relayId, callId } = await connectedCall();
    const stats = { packets_in: 1, packets_out: 1, packets_lost: 0, jitter_ms: 1, late_frames: 0 };
    advance(3595_000);
    await relayEvent(callId, { type: "stats", relay_id: relayId, at: at(), stats });
    advance(6_000);
    expect(await runDurableObjectAlarm(stubFor(callId))).toBe(true);
    expect(await callView(callId)).toMatchObject({ state: "ended", end_reason: "max_duration" });
  });

  it("forget an ended call after its record's retention (EARSHOT_CALL_RECORD_DAYS, 30)", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
    const { query } = await soloRelay();
    const callId = await placeCall(query);
    await edge(`/v1/realtime/calls/${callId}`, { method: "DELETE", apiKey: API_KEY });
    advance(86_400_000 + 1000);
    await runDurableObjectAlarm(stubFor(callId));
    expect((await getCall(callId)).status).toBe(200);
    advance(29 * 86_400_000);
    await runDurableObjectAlarm(stubFor(callId));
    expect((await getCall(callId)).status).toBe(404);
    await runInDurableObject(stubFor(callId), async (_instance, state) => {
      expect([...state.storage.kv.list()]).toEqual([]);
    });
  });
});

describe("one call, one relay", () => {
  function startFor(callId: string, relayId: string, offer = offerSdp()): StartCall {
    return {
      callId,
      owner: { kind: "api_key", keyId: "key_test" },
      relays: [{ id: relayId, region: "test", publicUrl: stubRelayUrl(relayId), bootId: STUB_BOOT_ID }],
      offerSdp: offer,
      session: { type: "realtime", model: "gpt-realtime" },
    };
  }

  it("never sends two concurrent offers for one call to two relays", async () => {
    const callId = `rtc_${unique("race").replace(/-/g, "")}`;
    const relayA = unique("relay-a");
    const relayB = unique("relay-b");
    const stub: DurableObjectStub<CallSession> = stubFor(callId);
    const results = await Promise.all([
      stub.start(startFor(callId, relayA)),
      stub.start(startFor(callId, relayB, offerSdp().replace("o=- 4215775240449105457", "o=- 1"))),
    ]);
    expect(results.map((r) => r.ok).sort()).toEqual([false, true]);
    const refused = results.find((r) => !r.ok)!;
    expect(!refused.ok && refused.error.status).toBe(409);
    const posts = [...(await stubRecords(relayA)), ...(await stubRecords(relayB))].filter(
      (r) => r.method === "POST",
    );
    expect(posts).toHaveLength(1);
    expect(posts[0]!.callId).toBe(callId);
  });

  it("answers a repeated offer once: concurrent or later, the relay hears it once", async () => {
    const callId = `rtc_${unique("again").replace(/-/g, "")}`;
    const relay = unique("relay");
    const stub = stubFor(callId);
    const [a, b] = await Promise.all([
      stub.start(startFor(callId, relay)),
      stub.start(startFor(callId, relay)),
    ]);
    expect(a).toEqual(b);
    expect(a.ok).toBe(true);
    const later = await stub.start(startFor(callId, relay));
    expect(later.ok && later.value.answerSdp).toBe(a.ok && a.value.answerSdp);
    const elsewhere = await stub.start(startFor(callId, unique("relay-elsewhere")));
    expect(elsewhere.ok).toBe(false);
    expect((await stubRecords(relay)).filter((r) => r.method === "POST")).toHaveLength(1);
  });

  it("drops the relay's call when it is hung up while the relay is still answering", async () => {
    const callId = `rtc_${unique("hung").replace(/-/g, "")}`;
    const relay = unique("relay");
    const stub = stubFor(callId);
    const start = {
      ...startFor(callId, relay),
      relays: [{ id: relay, region: "test", publicUrl: stubRelayUrl(relay, "hang"), bootId: STUB_BOOT_ID }],
    };
    const pending = stub.start(start);
    await waitFor(async () => (await stubRecords(relay))[0], "the offer at the relay");
    const hung = await stub.hangup({ kind: "api_key", keyId: "key_test" });
    expect(hung.ok && hung.value.state).toBe("ended");
    const result = await pending;
    expect(!result.ok && result.error.status).toBe(409);
    expect((await callView(callId)).end_reason).toBe("hangup");
  });
});

describe("heartbeats that list the relay's live calls (issue 13.2)", () => {
  afterEach(() => vi.useRealTimers());

  it("a call the relay stops listing while it is live here ends relay_lost after a grace, unless the relay's own ended comes first", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
    const { relayId, region, callId } = await connectedCall();
    const other = await placeCall(`?region=${region}`);
    const beat = (callIds: string[]) => heartbeat({ relay_id: relayId, region, call_ids: callIds });
    expect((await beat([callId, other])).status).toBe(204);
    // Both calls gone from the list: one's `ended` arrives within the grace and wins.
    expect((await beat([])).status).toBe(204);
    await relayEvent(other, { type: "ended", relay_id: relayId, at: at(), reason: "client_hangup" });
    advance(4_000);
    await runDurableObjectAlarm(stubFor(callId));
    expect((await callView(callId)).state).toBe("connected"); // within the 5 s grace
    advance(1_500);
    await runDurableObjectAlarm(stubFor(callId));
    const view = (await (await getCall(callId)).json()) as {
      state: string;
      end_reason: string;
      end_message: string;
    };
    expect(view).toMatchObject({
      state: "failed",
      end_reason: "relay_lost",
      end_message: "The relay no longer has the call.",
    });
    expect(await callView(other)).toMatchObject({ state: "ended", end_reason: "client_hangup" });
  });

  it("a heartbeat without a call list (a relay with more than 1000 calls) ends nothing", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
    const { relayId, region, callId } = await connectedCall();
    expect((await heartbeat({ relay_id: relayId, region, call_ids: [callId] })).status).toBe(204);
    expect((await heartbeat({ relay_id: relayId, region })).status).toBe(204);
    advance(6_000);
    await runDurableObjectAlarm(stubFor(callId));
    expect((await callView(callId)).state).toBe("connected");
  });

  it("a list of 1000 calls is taken; 1001 is refused", async () => {
    const { relayId, region } = await soloRelay();
    const ids = (n: number) => Array.from({ length: n }, (_, i) => `rtc_${String(i).padStart(64, "0")}`);
    expect((await heartbeat({ relay_id: relayId, region, call_ids: ids(1000) })).status).toBe(204);
    expect((await heartbeat({ relay_id: relayId, region, call_ids: ids(1001) })).status).toBe(400);
  });
});

describe("a call's usage", () => {
  const usage = {
    audio_in_seconds: 12.3,
    audio_out_seconds: 8.2,
    turns: 3,
    model: { input_tokens: 60, output_tokens: 30, input_token_details: { audio_tokens: 24 } },
  };

  it("is what the relay reported at the end, shown on the call; null before", async () => {
    const { callId, relayId } = await connectedCall();
    expect((await callView(callId)) as unknown as { usage: unknown }).toMatchObject({ usage: null });
    const ended = { type: "ended" as const, relay_id: relayId, at: at(), reason: "hangup" as const, usage };
    expect((await relayEvent(callId, ended)).status).toBe(204);
    expect(await callView(callId)).toMatchObject({ state: "ended", usage });
  });

  it("arrives after a hangup at the edge too, with the relay's own report of the end", async () => {
    const { callId, relayId } = await connectedCall();
    await edge(`/v1/realtime/calls/${callId}/hangup`, { method: "POST", apiKey: API_KEY });
    const ended = { type: "ended" as const, relay_id: relayId, at: at(), reason: "hangup" as const, usage };
    expect((await relayEvent(callId, ended)).status).toBe(204);
    expect(await callView(callId)).toMatchObject({ state: "ended", end_reason: "hangup", usage });
  });

  it("is refused past its bounds (11 model fields), leaving the call as it was", async () => {
    const { callId, relayId } = await connectedCall();
    const model = Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`f_${i}`, 1]));
    const ended = {
      type: "ended" as const,
      relay_id: relayId,
      at: at(),
      reason: "hangup" as const,
      usage: { ...usage, model },
    };
    expect((await relayEvent(callId, ended)).status).toBe(400);
    expect(await callView(callId)).toMatchObject({ state: "connected" });
  });
});
