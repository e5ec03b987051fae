// Hostile client secrets (issue 7): every forged, confused, mistimed or oversized ek_ token is
// refused with 401 and OpenAI's error envelope, at the verifier and through the front door.
// The cases already in client-secrets.test.ts (forged key, tampered exp, HS512, garbage) are
// not repeated; this file fills the gaps and pins the skew and length limits at their edges.
import { SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { base64url, fromBase64url, fromUtf8, utf8 } from "../../protocol/encoding.ts";
import {
  MAX_CLIENT_SECRET_LENGTH,
  mintClientSecret,
  verifyClientSecret,
} from "../../workers/client-secret.ts";
import { errorOf, mintSecret, offerSdp, postOffer, SIGNING_KEYS, soloRelay } from "./fixtures.ts";

const KEYS = [
  { kid: "k2", secret: utf8(SIGNING_KEYS.k2) },
  { kid: "k1", secret: utf8(SIGNING_KEYS.k1) },
];
const SESSION = "0".repeat(64);
const now = () => Math.floor(Date.now() / 1000);
const encode = (value: unknown) => base64url(utf8(JSON.stringify(value)));
const decode = (part: string) => JSON.parse(fromUtf8(fromBase64url(part)!)) as Record<string, unknown>;

async function hmac(secret: string, input: string, hash = "SHA-256"): Promise<string> {
  const key = await crypto.subtle.importKey("raw", utf8(secret), { name: "HMAC", hash }, false, ["sign"]);
  return base64url(new Uint8Array(await crypto.subtle.sign("HMAC", key, utf8(input))));
}

/** A token with any header and claims, signed HS256-style with `secret` over what it says. */
async function handMade(header: Record<string, unknown>, claims: Record<string, unknown>, secret: string) {
  const input = `${encode(header)}.${encode(claims)}`;
  return `ek_${input}.${await hmac(secret, input)}`;
}

async function genuine() {
  const minted = await mintClientSecret(KEYS, { sessionSha256: SESSION, ttlSeconds: 600 });
  const [header, payload] = minted.value.slice(3).split(".") as [string, string];
  return { value: minted.value, header: decode(header), claims: decode(payload) };
}

/** The verifier refuses it with a 401 ApiError carrying `code`. */
async function refused(token: string, code = "invalid_client_secret", nowSeconds?: number) {
  await expect(
    verifyClientSecret(KEYS, token, nowSeconds === undefined ? {} : { nowSeconds }),
  ).rejects.toMatchObject({ status: 401, code });
}

/** The front door refuses it too, with the envelope and no detail about why beyond the code. */
async function refusedAtEdge(token: string, code = "invalid_client_secret") {
  const { query } = await soloRelay();
  const response = await postOffer(offerSdp(), { bearer: token, query });
  expect(response.status).toBe(401);
  expect(response.headers.get("www-authenticate")).toContain("Bearer");
  expect(await errorOf(response)).toMatchObject({ type: "authentication_error", code, param: null });
}

describe("alg: none and algorithm confusion", () => {
  it("refuses none in every spelling, with or without a signature", async () => {
    const { header, claims } = await genuine();
    for (const alg of ["none", "None", "NONE", "nOnE", ""]) {
      const unsigned = `ek_${encode({ ...header, alg })}.${encode(claims)}.`;
      await refused(unsigned);
      await refused(await handMade({ ...header, alg }, claims, SIGNING_KEYS.k2));
    }
    await refusedAtEdge(`ek_${encode({ ...header, alg: "none" })}.${encode(claims)}.`);
  });

  it("refuses RS256, ES256, PS256 and EdDSA headers whose signature is an HMAC with the signing key", async () => {
    // The classic confusion: a verifier that picks the algorithm from the header would treat
    // the HMAC secret as the public key. Here the HMAC over exactly what the header says is
    // valid for the real key, so only the algorithm check stands in the way.
    const { header, claims } = await genuine();
    for (const alg of ["RS256", "ES256", "PS256", "EdDSA", "HS384", "HS512"]) {
      const token = await handMade({ ...header, alg }, claims, SIGNING_KEYS.k2);
      await refused(token);
    }
    await refusedAtEdge(await handMade({ ...header, alg: "RS256" }, claims, SIGNING_KEYS.k2));
  });

  it("refuses a header that carries its own key (jwk, jku, x5u) or critical extensions", async () => {
    const { header, claims } = await genuine();
    const attacker = "attacker-chosen-secret-1234567890";
    const jwk = { kty: "oct", k: base64url(utf8(attacker)) };
    await refused(await handMade({ ...header, kid: undefined, jwk }, claims, attacker));
    await refused(await handMade({ ...header, jku: "https://evil.example/jwks" }, claims, attacker));
    await refused(await handMade({ ...header, x5u: "https://evil.example/cert" }, claims, attacker));
    await refused(await handMade({ ...header, crit: ["exp"], exp: 1 }, claims, SIGNING_KEYS.k2));
    // b64: false changes what is signed (RFC 7797); it must not be honoured.
    await refused(await handMade({ ...header, b64: false, crit: ["b64"] }, claims, SIGNING_KEYS.k2));
  });
});

describe("kid", () => {
  it("refuses a missing, unknown, non-string or other key's kid", async () => {
    const { header, claims } = await genuine();
    const { kid: _kid, ...noKid } = header;
    await refused(await handMade(noKid, claims, SIGNING_KEYS.k2));
    await refused(await handMade({ ...header, kid: "k3" }, claims, SIGNING_KEYS.k2));
    await refused(await handMade({ ...header, kid: "" }, claims, SIGNING_KEYS.k2));
    await refused(await handMade({ ...header, kid: 2 }, claims, SIGNING_KEYS.k2));
    await refused(await handMade({ ...header, kid: ["k2"] }, claims, SIGNING_KEYS.k2));
    await refused(await handMade({ ...header, kid: "__proto__" }, claims, SIGNING_KEYS.k2));
    // Signed with k2's secret but naming k1: a real kid, the wrong key.
    await refused(await handMade({ ...header, kid: "k1" }, claims, SIGNING_KEYS.k2));
    // Re-labelled: the genuine k2 signature under a header that says k1.
    const [, payload, signature] = (await genuine()).value.slice(3).split(".");
    await refused(`ek_${encode({ ...header, kid: "k1" })}.${payload}.${signature}`);
    await refusedAtEdge(await handMade({ ...header, kid: "k3" }, claims, SIGNING_KEYS.k2));
  });
});

describe("time, with at most 30 s of clock skew", () => {
  const T = 1_900_000_000;

  it("a not-yet-valid secret: accepted 30 s early, refused 31 s early", async () => {
    const early30 = await mintClientSecret(KEYS, {
      sessionSha256: SESSION,
      ttlSeconds: 600,
      nowSeconds: T + 30,
    });
    await expect(verifyClientSecret(KEYS, early30.value, { nowSeconds: T })).resolves.toMatchObject({
      id: early30.claims.id,
    });
    const early31 = await mintClientSecret(KEYS, {
      sessionSha256: SESSION,
      ttlSeconds: 600,
      nowSeconds: T + 31,
    });
    await refused(early31.value, "invalid_client_secret", T);
    // And through the edge with the real clock (a minute ahead is well past the skew).
    const ahead = await mintClientSecret(KEYS, {
      sessionSha256: SESSION,
      ttlSeconds: 600,
      nowSeconds: now() + 60,
    });
    await refusedAtEdge(ahead.value);
  });

  it("an expired secret: accepted 29 s after exp, refused at 30 s and 31 s (exp is exclusive, RFC 7519)", async () => {
    // minted at T - 100 with a TTL of 70 s: exp = T - 30.
    const minted = await mintClientSecret(KEYS, {
      sessionSha256: SESSION,
      ttlSeconds: 70,
      nowSeconds: T - 100,
    });
    await expect(verifyClientSecret(KEYS, minted.value, { nowSeconds: T - 1 })).resolves.toBeDefined();
    await refused(minted.value, "client_secret_expired", T);
    await refused(minted.value, "client_secret_expired", T + 1);
    const old = await mintClientSecret(KEYS, {
      sessionSha256: SESSION,
      ttlSeconds: 10,
      nowSeconds: now() - 41,
    });
    await refusedAtEdge(old.value, "client_secret_expired");
  });

  it("refuses tokens without exp, nbf or iat, and ones whose iat is older than the longest TTL", async () => {
    const { header, claims } = await genuine();
    for (const claim of ["exp", "nbf", "iat", "jti"]) {
      const { [claim]: _dropped, ...rest } = claims;
      await refused(await handMade(header, rest, SIGNING_KEYS.k2));
    }
    // A long exp on an old iat: a key can never live longer than 7200 s (+ skew).
    const stale = { ...claims, iat: now() - 7300, nbf: now() - 7300, exp: now() + 600 };
    await refused(await handMade(header, stale, SIGNING_KEYS.k2), "client_secret_expired");
    // Non-numeric times.
    await refused(await handMade(header, { ...claims, exp: "9999999999" }, SIGNING_KEYS.k2));
  });
});

describe("tampering", () => {
  it("refuses any change to the claims or header under the original signature", async () => {
    const { value } = await genuine();
    const [h, p, s] = value.slice(3).split(".") as [string, string, string];
    const claims = decode(p);
    const variants = [
      { ...claims, ses: "f".repeat(64) },
      { ...claims, jti: "cs_someoneelsesid00" },
      { ...claims, aud: "other" },
      { ...claims, extra: true },
    ];
    for (const changed of variants) await refused(`ek_${h}.${encode(changed)}.${s}`);
    // One flipped bit in the signature, and a signature cut short.
    const sig = fromBase64url(s)!;
    sig[0]! ^= 1;
    await refused(`ek_${h}.${p}.${base64url(sig)}`);
    await refused(`ek_${h}.${p}.${s.slice(0, -4)}`);
    // Right signature on other claims signed by the right key but with the wrong issuer/audience.
    await refused(await handMade(decode(h), { ...claims, iss: "mallory" }, SIGNING_KEYS.k2));
    await refused(await handMade(decode(h), { ...claims, aud: "earshot:admin" }, SIGNING_KEYS.k2));
    // Claims that pass the signature but are not the shapes the edge mints.
    await refused(await handMade(decode(h), { ...claims, jti: "x" }, SIGNING_KEYS.k2));
    await refused(await handMade(decode(h), { ...claims, ses: "not-a-hash" }, SIGNING_KEYS.k2));
    await refusedAtEdge(`ek_${h}.${encode(variants[0])}.${s}`);
  });

  it("refuses structural garbage: extra segments, bad base64, JSON that is not an object", async () => {
    const { value } = await genuine();
    for (const token of [
      `${value}.extra`,
      "ek_..",
      "ek_a.b.c",
      `ek_${encode("string")}.${encode({})}.AAAA`,
      `ek_${encode([1])}.${encode([2])}.AAAA`,
      `ek_!!!.${encode({})}.AAAA`,
      `ek_${"\u0000".repeat(8)}`,
    ]) {
      await refused(token);
    }
  });
});

describe("size", () => {
  /** A genuinely signed secret padded (with a header field jose ignores) to exactly `length`. */
  async function paddedTo(length: number): Promise<string> {
    for (let pad = 0; pad < 1000; pad++) {
      for (let extra = 0; extra < 3; extra++) {
        const token = await new SignJWT({ ses: SESSION, p: "x".repeat(extra) })
          .setProtectedHeader({ alg: "HS256", kid: "k2", typ: "JWT", pad: "y".repeat(pad) })
          .setIssuer("earshot")
          .setAudience("earshot:realtime")
          .setJti("cs_padded0000000000")
          .setIssuedAt()
          .setNotBefore("0s")
          .setExpirationTime("10m")
          .sign(utf8(SIGNING_KEYS.k2));
        if (token.length + 3 === length) return `ek_${token}`;
      }
    }
    throw new Error(`no padding reaches ${length}`);
  }

  it(`accepts a valid secret of exactly ${MAX_CLIENT_SECRET_LENGTH} characters and refuses one more`, async () => {
    const atLimit = await paddedTo(MAX_CLIENT_SECRET_LENGTH);
    await expect(verifyClientSecret(KEYS, atLimit)).resolves.toMatchObject({ id: "cs_padded0000000000" });
    const over = await paddedTo(MAX_CLIENT_SECRET_LENGTH + 1);
    await expect(verifyClientSecret(KEYS, over)).rejects.toMatchObject({
      status: 401,
      message: "The client secret is too long.",
    });
    await refusedAtEdge(over);
    // A megabyte of token is refused at the same cost, before any parsing.
    await refusedAtEdge(`ek_${"A".repeat(1 << 20)}`);
  });

  it("an edge-minted secret is well under the cap", async () => {
    expect((await mintSecret()).value.length).toBeLessThan(MAX_CLIENT_SECRET_LENGTH / 2);
  });
});
