// Calls and client secrets carry their Durable Object's own id, so a new object skips the
// worldwide name check; ids from before that (plain names) keep working, and an id that is
// not ours is a 404 or a 401, never a 500.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { utf8 } from "../../protocol/encoding.ts";
import { mintClientSecret } from "../../workers/client-secret.ts";
import { bindSession } from "../../workers/session-config.ts";
import {
  API_KEY,
  callIdOf,
  callView,
  edge,
  errorOf,
  getCall,
  mintSecret,
  offerSdp,
  postOffer,
  relayEvent,
  SIGNING_KEYS,
  soloRelay,
  STUB_BOOT_ID,
  stubRelayUrl,
  textOf,
  unique,
} from "./fixtures.ts";

const SIGNER = [{ kid: "k2", secret: utf8(SIGNING_KEYS.k2) }];
const secretIdOf = (secret: string) => {
  const [, payload] = secret.slice(3).split(".");
  return (JSON.parse(atob(payload!.replace(/-/g, "+").replace(/_/g, "/"))) as { jti: string }).jti;
};
const randomHex = () =>
  [...crypto.getRandomValues(new Uint8Array(32))].map((b) => b.toString(16).padStart(2, "0")).join("");

describe("object ids", () => {
  it("a call's id and its secret's id are their objects' ids", async () => {
    const { query } = await soloRelay();
    const secret = await mintSecret();
    expect(secretIdOf(secret.value)).toMatch(/^cs_[0-9a-f]{64}$/);
    const response = await postOffer(offerSdp(), { bearer: secret.value, query });
    expect(response.status).toBe(201);
    expect(callIdOf(response)).toMatch(/^rtc_[0-9a-f]{64}$/);
  });

  it("a call id of 64 hex digits that no object has is 404, for clients and for relay events", async () => {
    const forged = `rtc_${randomHex()}`;
    const read = await getCall(forged);
    expect(read.status).toBe(404);
    expect((await errorOf(read)).message).toBe("No such call.");
    const event = await relayEvent(forged, { type: "first_audio", relay_id: "relay-x", at: Date.now() });
    expect(event.status).toBe(404);
  });

  it("a client secret minted before, whose ledger is found by name, still places a call", async () => {
    const { query } = await soloRelay();
    const legacyId = `cs_${unique("legacy").replace(/-/g, "")}`;
    const bound = await bindSession({ instructions: "From before." });
    const minted = await mintClientSecret(SIGNER, {
      id: legacyId,
      sessionSha256: bound.sha256,
      ttlSeconds: 60,
    });
    await env.CLIENT_SECRET_LEDGER.getByName(legacyId).issue(
      bound.session,
      bound.sha256,
      Date.now() + 60_000,
    );
    const response = await postOffer(offerSdp(), { bearer: minted.value, query });
    expect(response.status).toBe(201);
    expect(await textOf(response)).toMatch(/^v=0/);
  });

  it("a signed secret whose 64-hex id no ledger has is refused 401", async () => {
    const { query } = await soloRelay();
    const minted = await mintClientSecret(SIGNER, {
      id: `cs_${randomHex()}`,
      sessionSha256: "0".repeat(64),
      ttlSeconds: 60,
    });
    const response = await postOffer(offerSdp(), { bearer: minted.value, query });
    expect(response.status).toBe(401);
    expect((await errorOf(response)).code).toBe("invalid_client_secret");
  });

  it("a call placed before, under a plain name, can still be read and hung up", async () => {
    const relayId = unique("relay");
    const callId = `rtc_${unique("legacy").replace(/-/g, "")}`;
    const started = await env.CALL_SESSION.getByName(callId).start({
      callId,
      owner: { kind: "api_key", keyId: "key_test" },
      relays: [{ id: relayId, region: "test", publicUrl: stubRelayUrl(relayId), bootId: STUB_BOOT_ID }],
      offerSdp: offerSdp(),
      session: { type: "realtime", model: "gpt-realtime" },
    });
    expect(started.ok).toBe(true);
    expect((await callView(callId)).state).toBe("answered");
    const hangup = await edge(`/v1/realtime/calls/${callId}`, { method: "DELETE", apiKey: API_KEY });
    expect(hangup.status).toBe(200);
    expect((await callView(callId)).end_reason).toBe("hangup");
  });
});
