// POST /internal/relays/{relay_id}/events: a relay's events for many calls in one signed request.
// Each event gets its own result; each call's events are applied in the order sent.
import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { MAX_EVENT_BATCH, MAX_EVENT_BATCH_BYTES } from "../../protocol/relay-api.ts";
import { callView, edge, errorOf, placeCall, relayEvent, signedPost, soloRelay } from "./fixtures.ts";

const stats = { packets_in: 500, packets_out: 480, packets_lost: 2, jitter_ms: 4.5, late_frames: 0 };

async function postBatch(relayId: string, events: unknown[], secret?: string): Promise<Response> {
  const path = `/internal/relays/${relayId}/events`;
  return exports.default.fetch(await signedPost(path, JSON.stringify({ events }), { secret }));
}

async function resultsOf(response: Response): Promise<{ status: number; code?: string }[]> {
  expect(response.status).toBe(200);
  return ((await response.json()) as { results: { status: number; code?: string }[] }).results;
}

describe("relay event batches", () => {
  it("apply many calls' events, each call's in order: connected, stats, then ended with its reason", async () => {
    const relay = await soloRelay();
    const a = await placeCall(relay.query);
    const b = await placeCall(relay.query);
    const base = (call_id: string) => ({ call_id, relay_id: relay.relayId, at: Date.now() });
    const results = await resultsOf(
      await postBatch(relay.relayId, [
        { ...base(a), type: "connected" },
        { ...base(b), type: "connected" },
        { ...base(a), type: "first_audio" },
        { ...base(b), type: "stats", stats },
        { ...base(a), type: "ended", reason: "client_hangup" },
      ]),
    );
    expect(results).toEqual([
      { status: 204 },
      { status: 204 },
      { status: 204 },
      { status: 204 },
      { status: 204 },
    ]);
    const viewA = await callView(a);
    expect(viewA).toMatchObject({ state: "ended", end_reason: "client_hangup" });
    expect(viewA.timestamps.connected).toBeLessThanOrEqual(viewA.timestamps.ended!);
    expect(viewA.timestamps.first_audio).toBeDefined();
    expect(await callView(b)).toMatchObject({ state: "connected", stats });
  });

  it("answer each event on its own: a bad, foreign or unknown one does not stop the others", async () => {
    const relay = await soloRelay();
    const other = await soloRelay();
    const call = await placeCall(relay.query);
    const otherCall = await placeCall(other.query);
    const base = { relay_id: relay.relayId, at: Date.now() };
    const results = await resultsOf(
      await postBatch(relay.relayId, [
        { ...base, call_id: call, type: "connected", surprise: true },
        { ...base, call_id: call, type: "connected" },
        { ...base, call_id: "rtc_nosuchcall12345", type: "connected" },
        { ...base, call_id: otherCall, type: "ended", reason: "relay_error" },
        { ...base, relay_id: other.relayId, call_id: otherCall, type: "ended", reason: "relay_error" },
        { ...base, call_id: call, type: "ended", reason: "ice_failed" },
      ]),
    );
    expect(results.map((r) => r.status)).toEqual([400, 204, 404, 403, 403, 204]);
    expect(results[0]!.code).toBe("invalid_event");
    expect(await callView(call)).toMatchObject({ state: "failed", end_reason: "ice_failed" });
    // Another relay's call is not this relay's to end, even if its id is in the body.
    expect((await callView(otherCall)).state).not.toMatch(/ended|failed/);
  });

  it("keep the per-call endpoint for relays from before batches", async () => {
    const relay = await soloRelay();
    const call = await placeCall(relay.query);
    expect(
      (await relayEvent(call, { type: "connected", relay_id: relay.relayId, at: Date.now() })).status,
    ).toBe(204);
    expect((await callView(call)).state).toBe("connected");
  });

  it("refuse an unsigned batch, an empty or oversized one, and a bad relay id", async () => {
    const relay = await soloRelay();
    const call = await placeCall(relay.query);
    const event = { call_id: call, relay_id: relay.relayId, at: Date.now(), type: "connected" };
    const forged = await postBatch(relay.relayId, [event], "not-the-relay-secret");
    expect(forged.status).toBe(401);
    expect((await errorOf(forged)).code).toBe("invalid_signature");
    expect((await postBatch(relay.relayId, [])).status).toBe(400);
    const many = Array.from({ length: MAX_EVENT_BATCH + 1 }, () => event);
    expect((await postBatch(relay.relayId, many)).status).toBe(400);
    const big = [{ ...event, pad: "x".repeat(MAX_EVENT_BATCH_BYTES) }];
    expect((await postBatch(relay.relayId, big)).status).toBe(413);
    expect((await postBatch("bad relay", [event])).status).toBe(404);
    const get = await edge(`/internal/relays/${relay.relayId}/events`, { method: "GET" });
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");
    expect((await callView(call)).state).toBe("answered");
  });
});
