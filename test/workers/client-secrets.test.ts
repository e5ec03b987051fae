import { SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { base64url, fromBase64url, fromUtf8, utf8 } from "../../protocol/encoding.ts";
import { mintClientSecret, verifyClientSecret } from "../../workers/client-secret.ts";
import {
  API_KEY,
  edge,
  errorOf,
  mintSecret,
  offerSdp,
  OTHER_API_KEY,
  postOffer,
  SIGNING_KEYS,
  soloRelay,
  stubRecords,
  type ClientSecretBody,
  postClientSecret,
} from "./fixtures.ts";
import { INVALID_SESSIONS, VALID_SESSIONS } from "../protocol/session-examples.ts";

const key = (kid: string, secret: string) => ({ kid, secret: utf8(secret) });
const now = () => Math.floor(Date.now() / 1000);

function mintRequest(init: { apiKey?: string; body?: string; contentType?: string } = {}) {
  return edge("/v1/realtime/client_secrets", {
    method: "POST",
    ...(init.apiKey === undefined ? {} : { apiKey: init.apiKey }),
    headers: { "content-type": init.contentType ?? "application/json" },
    body: init.body ?? "{}",
  });
}

describe("POST /v1/realtime/client_secrets", () => {
  it("mints an ek_ secret in OpenAI's shape with a good API key", async () => {
    const before = now();
    const secret = await mintSecret({
      session: { instructions: "Be brief.", audio: { output: { voice: "alloy" } } },
    });
    expect(secret.value).toMatch(/^ek_[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(secret.expires_at).toBeGreaterThanOrEqual(before + 600);
    expect(secret.expires_at).toBeLessThanOrEqual(now() + 600);
    expect(secret.session).toMatchObject({
      type: "realtime",
      object: "realtime.session",
      model: "gpt-realtime",
      instructions: "Be brief.",
      audio: { output: { voice: "alloy" } },
    });
    expect(secret.session.id).toMatch(/^sess_/);
  });

  it("honours expires_after from 10 to 7200 seconds and refuses values outside", async () => {
    const short = await mintSecret({ expires_after: { anchor: "created_at", seconds: 10 } }, OTHER_API_KEY);
    expect(short.expires_at - now()).toBeLessThanOrEqual(10);
    const long = await mintSecret({ expires_after: { anchor: "created_at", seconds: 7200 } });
    expect(long.expires_at - now()).toBeGreaterThan(7190);
    for (const seconds of [9, 7201, 60.5]) {
      const response = await mintRequest({
        apiKey: API_KEY,
        body: JSON.stringify({ expires_after: { anchor: "created_at", seconds } }),
      });
      expect(response.status).toBe(400);
      expect(await errorOf(response)).toMatchObject({
        type: "invalid_request_error",
        param: "expires_after.seconds",
      });
    }
  });

  it("refuses a missing, wrong or client-secret key with 401 and never echoes it", async () => {
    const missing = await mintRequest();
    expect(missing.status).toBe(401);
    expect(await errorOf(missing)).toMatchObject({ type: "authentication_error", code: "missing_api_key" });

    const wrong = await mintRequest({ apiKey: "sk_test_not_a_real_key" });
    expect(wrong.status).toBe(401);
    const error = await errorOf(wrong);
    expect(error.code).toBe("invalid_api_key");
    expect(JSON.stringify(error)).not.toContain("sk_test_not_a_real_key");

    const almost = await mintRequest({ apiKey: API_KEY.slice(0, -1) });
    expect(almost.status).toBe(401);

    const secret = await mintSecret();
    const withSecret = await mintRequest({ apiKey: secret.value });
    expect(withSecret.status).toBe(401);
  });

  it("validates the body: JSON only, known fields only, a valid session, bounded size", async () => {
    const notJson = await mintRequest({ apiKey: API_KEY, body: "{nope" });
    expect(notJson.status).toBe(400);
    expect((await errorOf(notJson)).code).toBe("invalid_json");

    const unknownField = await mintRequest({ apiKey: API_KEY, body: JSON.stringify({ sesion: {} }) });
    expect(unknownField.status).toBe(400);

    const badSession = await mintRequest({
      apiKey: API_KEY,
      body: JSON.stringify({ session: { output_modalities: ["smell"] } }),
    });
    expect(badSession.status).toBe(400);
    expect((await errorOf(badSession)).param).toBe("session.output_modalities[0]");

    const wrongType = await mintRequest({ apiKey: API_KEY, contentType: "text/plain" });
    expect(wrongType.status).toBe(415);

    const huge = await mintRequest({
      apiKey: API_KEY,
      body: JSON.stringify({ session: { instructions: "x".repeat(70_000) } }),
    });
    expect(huge.status).toBe(413);
  });

  it("is server-only: no CORS preflight and no CORS headers", async () => {
    const preflight = await edge("/v1/realtime/client_secrets", {
      method: "OPTIONS",
      headers: { origin: "https://app.example", "access-control-request-method": "POST" },
    });
    expect(preflight.headers.get("access-control-allow-origin")).toBeNull();
    const response = await edge("/v1/realtime/client_secrets", {
      method: "POST",
      apiKey: API_KEY,
      headers: { origin: "https://app.example", "content-type": "application/json" },
      body: "{}",
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("the session a client secret is minted with: OpenAI's GA session object", () => {
  it.each(Object.entries(VALID_SESSIONS))("mints %s and echoes it", async (_name, session) => {
    const response = await postClientSecret({ session });
    expect(response.status, await response.clone().text()).toBe(200);
    const secret = (await response.json()) as ClientSecretBody;
    expect(secret.session).toMatchObject(session);
    if (session.type === "transcription") {
      // A transcription session is not made a realtime one, and gets no realtime model.
      expect(secret.session).toMatchObject({
        type: "transcription",
        object: "realtime.transcription_session",
      });
      expect(secret.session).not.toHaveProperty("model");
    } else {
      expect(secret.session).toMatchObject({ type: "realtime", object: "realtime.session" });
      expect(secret.session.model).toBe(session.model ?? "gpt-realtime");
    }
  });

  it.each(INVALID_SESSIONS)("refuses $name with 400 naming $param", async ({ session, code, param }) => {
    const response = await postClientSecret({ session });
    expect(response.status).toBe(400);
    const error = await errorOf(response);
    expect(error).toMatchObject({ type: "invalid_request_error", code, param });
    expect(error.message).toContain(param);
  });

  it.each(["a custom voice by id", "a transcription session"])(
    "%s: its secret places a call, and the relay gets the session as minted under a valid ticket",
    async (name) => {
      const { relayId, query } = await soloRelay();
      const secret = await mintSecret({ session: VALID_SESSIONS[name] });
      const response = await postOffer(offerSdp(), { apiKey: secret.value, query });
      expect(response.status, await response.clone().text()).toBe(201);
      const posted = (await stubRecords(relayId)).find((r) => r.path === "/calls")!;
      expect(posted.authenticated).toBe(true);
      expect((JSON.parse(posted.body) as { session: unknown }).session).toEqual(
        (({ object: _object, id: _id, ...session }) => session)(secret.session),
      );
    },
  );
});

describe("client secrets presented to POST /v1/realtime/calls", () => {
  async function realSecret() {
    return (await mintSecret()).value;
  }

  async function expectRefused(token: string, code = "invalid_client_secret") {
    const { query } = await soloRelay();
    const response = await postOffer(offerSdp(), { bearer: token, query });
    expect(response.status).toBe(401);
    expect(await errorOf(response)).toMatchObject({ type: "authentication_error", code });
  }

  function parts(token: string) {
    const [header, payload, signature] = token.slice(3).split(".") as [string, string, string];
    const decode = (part: string) => JSON.parse(fromUtf8(fromBase64url(part)!)) as Record<string, unknown>;
    return { header, payload, signature, headerJson: decode(header), payloadJson: decode(payload) };
  }
  const encode = (value: unknown) => base64url(utf8(JSON.stringify(value)));

  it("accepts a genuine secret", async () => {
    const { query } = await soloRelay();
    const response = await postOffer(offerSdp(), { bearer: await realSecret(), query });
    expect(response.status).toBe(201);
  });

  it("rejects a forged secret (right kid, wrong key)", async () => {
    const real = parts(await realSecret());
    const forged = await new SignJWT(real.payloadJson)
      .setProtectedHeader(real.headerJson as { alg: string })
      .sign(utf8("attacker-chosen-secret-1234"));
    await expectRefused(`ek_${forged}`);
  });

  it("rejects a tampered secret (claims changed, signature kept)", async () => {
    const real = parts(await realSecret());
    const tampered = encode({ ...real.payloadJson, exp: (real.payloadJson.exp as number) + 86_400 });
    await expectRefused(`ek_${real.header}.${tampered}.${real.signature}`);
  });

  it("rejects an expired secret", async () => {
    const minted = await mintClientSecret([key("k2", SIGNING_KEYS.k2)], {
      sessionSha256: "0".repeat(64),
      ttlSeconds: 10,
      nowSeconds: now() - 120,
    });
    await expectRefused(minted.value, "client_secret_expired");
  });

  it("rejects a secret that is not valid yet (beyond 30 s of skew)", async () => {
    const minted = await mintClientSecret([key("k2", SIGNING_KEYS.k2)], {
      sessionSha256: "0".repeat(64),
      ttlSeconds: 600,
      nowSeconds: now() + 120,
    });
    await expectRefused(minted.value);
  });

  it("rejects a secret under an unknown kid, even when its signature is good for that key", async () => {
    const minted = await mintClientSecret([key("k9", SIGNING_KEYS.k2)], {
      sessionSha256: "0".repeat(64),
      ttlSeconds: 600,
    });
    await expectRefused(minted.value);
  });

  it("rejects alg confusion: none, HS512, and RS256 with an HMAC signature", async () => {
    const real = parts(await realSecret());
    const none = encode({ ...real.headerJson, alg: "none" });
    await expectRefused(`ek_${none}.${real.payload}.`);
    const hs512 = await new SignJWT(real.payloadJson)
      .setProtectedHeader({ ...(real.headerJson as object), alg: "HS512" })
      .sign(utf8(SIGNING_KEYS.k2));
    await expectRefused(`ek_${hs512}`);
    const rs256 = encode({ ...real.headerJson, alg: "RS256" });
    await expectRefused(`ek_${rs256}.${real.payload}.${real.signature}`);
  });

  it("rejects garbage and oversized secrets", async () => {
    await expectRefused("ek_garbage");
    await expectRefused(`ek_${"a".repeat(2000)}`);
  });

  it("verifies secrets signed by any listed key, so signing keys rotate without downtime", async () => {
    const keys = [key("k2", SIGNING_KEYS.k2), key("k1", SIGNING_KEYS.k1)];
    const oldKey = await mintClientSecret([key("k1", SIGNING_KEYS.k1)], {
      sessionSha256: "a".repeat(64),
      ttlSeconds: 60,
    });
    await expect(verifyClientSecret(keys, oldKey.value)).resolves.toMatchObject({ id: oldKey.claims.id });
    const retired = await mintClientSecret([key("k0", "a-retired-signing-secret")], {
      sessionSha256: "a".repeat(64),
      ttlSeconds: 60,
    });
    await expect(verifyClientSecret(keys, retired.value)).rejects.toMatchObject({ status: 401 });
  });
});
