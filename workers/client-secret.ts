// Client secrets ("ek_…"): short-lived bearer keys a server mints for a browser. Each is an
// HS256 compact JWS (jose) with a `kid` header, so signing keys rotate without downtime: the
// first key in EARSHOT_SIGNING_KEYS signs, every listed key verifies. The claims bind the secret
// to the SHA-256 of its canonical session config; the config itself is kept by the secret's
// ClientSecretLedger, which also counts the calls it starts. A secret also names its project: the
// API key that minted it (`prj`, the key's id), so the calls it places belong to that key.
import { SignJWT, errors, jwtVerify, type JWTPayload } from "jose";
import { randomToken } from "../protocol/encoding.ts";
import type { SigningKey } from "./config.ts";
import { unauthorized } from "./errors.ts";

export const CLIENT_SECRET_PREFIX = "ek_";
/** What names an API key in logs, rate limits and projects (auth.ts apiKeyId): a hash prefix, never the key. */
export const API_KEY_ID = /^key_[0-9a-f]{12}$/;
/** Longer tokens are refused before any parsing; a real one is about 330 characters. */
export const MAX_CLIENT_SECRET_LENGTH = 1024;
export const MIN_TTL_SECONDS = 10;
export const MAX_TTL_SECONDS = 7200;
export const DEFAULT_TTL_SECONDS = 600;
const ISSUER = "earshot";
const AUDIENCE = "earshot:realtime";
const ALGORITHM = "HS256";
/** Clock difference tolerated between isolates, in seconds. */
const CLOCK_TOLERANCE_SECONDS = 30;

export interface ClientSecretClaims {
  /** The secret's id (`jti`): names its ClientSecretLedger and owns the calls it starts. */
  id: string;
  sessionSha256: string;
  issuedAt: number;
  expiresAt: number;
  /** Set when verified with `allowExpired` and the secret has expired. */
  expired: boolean;
  /** The id of the API key that minted it (auth.ts apiKeyId); absent from secrets minted before projects. */
  project?: string;
}

export interface MintedClientSecret {
  value: string;
  claims: ClientSecretClaims;
}

export async function mintClientSecret(
  keys: readonly SigningKey[],
  options: { sessionSha256: string; ttlSeconds: number; project?: string; nowSeconds?: number; id?: string },
): Promise<MintedClientSecret> {
  const key = keys[0];
  if (!key) throw new Error("no signing key");
  const issuedAt = options.nowSeconds ?? Math.floor(Date.now() / 1000);
  const claims: ClientSecretClaims = {
    id: options.id ?? `cs_${randomToken(16)}`,
    sessionSha256: options.sessionSha256,
    issuedAt,
    expiresAt: issuedAt + options.ttlSeconds,
    expired: false,
    ...(options.project === undefined ? {} : { project: options.project }),
  };
  const jws = await new SignJWT({ ses: claims.sessionSha256, prj: options.project })
    .setProtectedHeader({ alg: ALGORITHM, kid: key.kid, typ: "JWT" })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setJti(claims.id)
    .setIssuedAt(issuedAt)
    .setNotBefore(issuedAt)
    .setExpirationTime(claims.expiresAt)
    .sign(key.secret);
  return { value: `${CLIENT_SECRET_PREFIX}${jws}`, claims };
}

const invalid = (message = "The client secret is not valid.") =>
  unauthorized("invalid_client_secret", message);

function claimsOf(payload: JWTPayload, expired: boolean): ClientSecretClaims {
  const { jti, ses, iat, exp, prj } = payload;
  if (
    (prj !== undefined && (typeof prj !== "string" || !API_KEY_ID.test(prj))) ||
    typeof jti !== "string" ||
    !/^cs_[A-Za-z0-9_-]{8,64}$/.test(jti) ||
    typeof ses !== "string" ||
    !/^[0-9a-f]{64}$/.test(ses) ||
    typeof iat !== "number" ||
    typeof exp !== "number"
  ) {
    throw invalid();
  }
  return {
    id: jti,
    sessionSha256: ses,
    issuedAt: iat,
    expiresAt: exp,
    expired,
    ...(prj === undefined ? {} : { project: prj }),
  };
}

/**
 * Accepts only HS256 under a known kid (no `none`, no other algorithm, no key confusion), with a
 * valid signature, issuer, audience and times (30 s of skew). Throws a 401 ApiError otherwise.
 */
export async function verifyClientSecret(
  keys: readonly SigningKey[],
  token: string,
  options: { allowExpired?: boolean; nowSeconds?: number } = {},
): Promise<ClientSecretClaims> {
  if (!token.startsWith(CLIENT_SECRET_PREFIX)) throw invalid();
  if (token.length > MAX_CLIENT_SECRET_LENGTH) throw invalid("The client secret is too long.");
  const jws = token.slice(CLIENT_SECRET_PREFIX.length);
  try {
    const { payload } = await jwtVerify(
      jws,
      (header) => {
        const key = keys.find((k) => k.kid === header.kid);
        if (header.alg !== ALGORITHM || !key) throw invalid();
        return key.secret;
      },
      {
        algorithms: [ALGORITHM],
        issuer: ISSUER,
        audience: AUDIENCE,
        typ: "JWT",
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        maxTokenAge: MAX_TTL_SECONDS,
        requiredClaims: ["jti", "iat", "nbf", "exp"],
        ...(options.nowSeconds === undefined ? {} : { currentDate: new Date(options.nowSeconds * 1000) }),
      },
    );
    return claimsOf(payload, false);
  } catch (error) {
    // jose raises JWTExpired only after the signature and the other claims checked out.
    if (error instanceof errors.JWTExpired) {
      if (options.allowExpired && error.payload) return claimsOf(error.payload, true);
      throw unauthorized("client_secret_expired", "The client secret has expired.");
    }
    if (
      error instanceof errors.JWTClaimValidationFailed &&
      (error.claim === "nbf" || error.claim === "iat")
    ) {
      throw invalid("The client secret is not valid yet.");
    }
    if (error instanceof errors.JOSEError || error instanceof TypeError) throw invalid();
    throw error;
  }
}
