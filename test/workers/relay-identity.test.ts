// Who a relay is (issue 13.4): each relay signs with its own key, names itself, reports from a
// bare origin it cannot move without an operator, and a signature is good once.
import { reset } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { deriveRelayKey } from "../../protocol/relay-key.ts";
import {
  API_KEY,
  RELAY_SECRET,
  callIdOf,
  callView,
  edge,
  errorOf,
  heartbeatOf,
  offerSdp,
  placeCall,
  postOffer,
  registerRelays,
  signedPost,
  soloRelay,
  stubRecords,
  stubRelayUrl,
  unique,
} from "./fixtures.ts";

beforeEach(async () => {
  await reset();
});

const HEARTBEAT = "/internal/relays/heartbeat";

function beat(relayId: string, overrides: Record<string, unknown> = {}): string {
  return JSON.stringify({ ...heartbeatOf({ relay_id: relayId }), ...overrides });
}

const send = (request: Request) => exports.default.fetch(request);

describe("per-relay keys", () => {
  it("a relay's key speaks only for that relay: another relay's key, or the body naming another id, is refused", async () => {
    const victim = unique("victim");
    const attacker = unique("attacker");
    const region = unique("r");
    await registerRelays({ relay_id: victim, region }, { relay_id: attacker });
    const attackerKey = await deriveRelayKey(RELAY_SECRET, attacker);
    const moved = { public_url: stubRelayUrl(attacker) };

    // Names the victim, signs with its own key: the signature does not verify.
    const asVictim = await send(
      await signedPost(HEARTBEAT, beat(victim, { ...moved, region }), { relayId: victim, key: attackerKey }),
    );
    expect(asVictim.status).toBe(401);
    expect((await errorOf(asVictim)).code).toBe("invalid_signature");
    // Names itself, with a body for the victim: refused before the registry hears of it.
    const mismatch = await send(
      await signedPost(HEARTBEAT, beat(victim, { ...moved, region }), { relayId: attacker }),
    );
    expect(mismatch.status).toBe(403);
    expect((await errorOf(mismatch)).code).toBe("relay_id_mismatch");
    // The shared secret itself is no relay's key.
    const withSecret = await send(await signedPost(HEARTBEAT, beat(victim), { key: RELAY_SECRET }));
    expect(withSecret.status).toBe(401);
    // No Earshot-Relay header: the edge cannot tell whose key to check.
    const request = await signedPost(HEARTBEAT, beat(victim));
    const headers = new Headers(request.headers);
    headers.delete("earshot-relay");
    expect((await send(new Request(request, { headers }))).status).toBe(401);

    // The victim's calls, offer and ticket, still go to the victim and nowhere else.
    const call = await placeCall(`?region=${region}`);
    expect((await callView(call)).relay.id).toBe(victim);
    expect((await stubRecords(victim)).filter((r) => r.callId === call)).toHaveLength(1);
    expect(await stubRecords(attacker)).toEqual([]);
  });

  it("per-call events and batches must come from the relay they name", async () => {
    const relay = await soloRelay();
    const call = await placeCall(relay.query);
    const other = unique("other");
    const event = JSON.stringify({
      call_id: call,
      relay_id: relay.relayId,
      type: "connected",
      at: Date.now(),
    });
    const forged = await send(
      await signedPost(`/internal/calls/${call}/events`, event, {
        relayId: relay.relayId,
        key: await deriveRelayKey(RELAY_SECRET, other),
      }),
    );
    expect(forged.status).toBe(401);
    const batch = await send(
      await signedPost(
        `/internal/relays/${relay.relayId}/events`,
        JSON.stringify({ events: [JSON.parse(event)] }),
        {
          relayId: other,
        },
      ),
    );
    expect(batch.status).toBe(403);
    expect((await errorOf(batch)).code).toBe("relay_id_mismatch");
    expect((await callView(call)).state).toBe("answered");
  });
});

describe("public_url", () => {
  it("is a bare origin: scheme, host and port (a trailing / at most); a path, query, fragment or credentials is 400", async () => {
    const id = unique("relay");
    const origin = stubRelayUrl(id);
    expect(origin).toMatch(/^http:\/\/[^/]+$/);
    for (const accepted of [origin, `${origin}/`]) {
      expect((await send(await signedPost(HEARTBEAT, beat(id, { public_url: accepted })))).status).toBe(204);
    }
    const withPort = unique("relay");
    expect(
      (await send(await signedPost(HEARTBEAT, beat(withPort, { public_url: "http://127.0.0.1:8790" }))))
        .status,
    ).toBe(204);
    for (const refused of [
      `${origin}/x`,
      `${origin}/relays/relay-local`,
      `${origin}/?`,
      `${origin}?a=1`,
      `${origin}#f`,
      origin.replace("http://", "http://user:pass@"),
    ]) {
      const other = unique("relay");
      const response = await send(await signedPost(HEARTBEAT, beat(other, { public_url: refused })));
      expect(response.status, refused).toBe(400);
      expect(await errorOf(response), refused).toMatchObject({
        code: "invalid_relay_url",
        param: "public_url",
      });
    }
  });
});

describe("origin pinning", () => {
  it("a known relay id reporting from another origin is 409 relay_origin_mismatch until an operator removes it", async () => {
    const id = unique("relay");
    const region = unique("r");
    await registerRelays({ relay_id: id, region });
    // The same origin, with or without its trailing slash, is the same relay.
    expect(
      (await send(await signedPost(HEARTBEAT, beat(id, { region, public_url: `${stubRelayUrl(id)}/` }))))
        .status,
    ).toBe(204);
    const elsewhere = stubRelayUrl(unique("listener"));
    const moved = await send(await signedPost(HEARTBEAT, beat(id, { region, public_url: elsewhere })));
    expect(moved.status).toBe(409);
    expect(await errorOf(moved)).toMatchObject({ code: "relay_origin_mismatch", param: "public_url" });
    // Calls still go to the first origin.
    const call = await postOffer(offerSdp(), { apiKey: API_KEY, query: `?region=${region}` });
    expect(call.status).toBe(201);
    expect((await stubRecords(id)).some((r) => r.callId === callIdOf(call))).toBe(true);

    // Only an API key removes a relay.
    expect((await edge(`/admin/relays/${id}`, { method: "DELETE" })).status).toBe(401);
    expect(
      (await edge(`/admin/relays/${unique("nobody")}`, { method: "DELETE", apiKey: API_KEY })).status,
    ).toBe(404);
    expect((await edge(`/admin/relays/${id}`, { method: "DELETE", apiKey: API_KEY })).status).toBe(204);
    const listed = (await (await edge("/admin/relays", { apiKey: API_KEY })).json()) as {
      data: { relay_id: string }[];
    };
    expect(listed.data.map((r) => r.relay_id)).not.toContain(id);
    // Removed, the id registers from its new origin.
    expect(
      (await send(await signedPost(HEARTBEAT, beat(id, { region, public_url: elsewhere })))).status,
    ).toBe(204);
  });
});

describe("replayed signatures", () => {
  it("a heartbeat's signature is accepted once", async () => {
    const id = unique("relay");
    const request = await signedPost(HEARTBEAT, beat(id));
    const replay = request.clone();
    expect((await send(request)).status).toBe(204);
    const again = await send(replay);
    expect(again.status).toBe(401);
    expect((await errorOf(again)).code).toBe("signature_replayed");
    // A fresh signature over the same body is a new heartbeat.
    expect((await send(await signedPost(HEARTBEAT, beat(id)))).status).toBe(204);
  });

  it("a call event's signature is accepted once, on the per-call route and in a batch", async () => {
    const relay = await soloRelay();
    const call = await placeCall(relay.query);
    const base = { call_id: call, relay_id: relay.relayId, at: Date.now() };
    const one = await signedPost(
      `/internal/calls/${call}/events`,
      JSON.stringify({ ...base, type: "connected" }),
    );
    const oneReplay = one.clone();
    expect((await send(one)).status).toBe(204);
    const again = await send(oneReplay);
    expect(again.status).toBe(401);
    expect((await errorOf(again)).code).toBe("signature_replayed");

    const ended = { ...base, type: "ended", reason: "relay_error" };
    const batch = await signedPost(
      `/internal/relays/${relay.relayId}/events`,
      JSON.stringify({ events: [{ ...base, type: "first_audio" }, ended] }),
    );
    const batchReplay = batch.clone();
    const first = (await (await send(batch)).json()) as { results: { status: number; code?: string }[] };
    expect(first.results).toEqual([{ status: 204 }, { status: 204 }]);
    const replayed = await send(batchReplay);
    expect(replayed.status).toBe(200);
    expect(((await replayed.json()) as { results: unknown[] }).results).toEqual([
      { status: 401, code: "signature_replayed" },
      { status: 401, code: "signature_replayed" },
    ]);
    expect(await callView(call)).toMatchObject({ state: "failed", end_reason: "relay_error" });
  });

  it("a signature dated up to 5 s ahead is accepted; 6 s ahead is refused", async () => {
    const now = Math.floor(Date.now() / 1000);
    const id = unique("relay");
    expect((await send(await signedPost(HEARTBEAT, beat(id), { nowSeconds: now + 5 }))).status).toBe(204);
    const ahead = await send(await signedPost(HEARTBEAT, beat(id), { nowSeconds: now + 6 }));
    expect(ahead.status).toBe(401);
    expect((await errorOf(ahead)).message).toMatch(/clock skew/);
  });
});

describe("boot ids", () => {
  it("a relay restarted since its heartbeat refuses the ticket (403 ticket_stale_boot): the edge tries the next relay", async () => {
    const region = unique("r");
    const rebooted = unique("rebooted");
    const next = unique("next");
    // The rebooted relay is nearer, so it is tried first.
    await registerRelays(
      { relay_id: rebooted, region, mode: "rebooted", lat: 48.86, lon: 2.35 },
      { relay_id: next, region, lat: -33.87, lon: 151.21 },
    );
    const response = await postOffer(offerSdp(), {
      apiKey: API_KEY,
      query: `?region=${region}`,
      cf: { latitude: "48.8566", longitude: "2.3522" },
    });
    expect(response.status).toBe(201);
    const callId = callIdOf(response);
    expect((await stubRecords(rebooted)).map((r) => r.authError)).toEqual(["ticket_stale_boot"]);
    expect((await callView(callId)).relay.id).toBe(next);
  });
});
