// Who is calling: a server with an API key, or a client with an ek_ client secret.
import { constantTimeEqual, sha256Hex, utf8 } from "../protocol/encoding.ts";
import { CLIENT_SECRET_PREFIX, verifyClientSecret, type ClientSecretClaims } from "./client-secret.ts";
import type { EdgeConfig } from "./config.ts";
import { unauthorized } from "./errors.ts";

export type Caller =
  | {
      kind: "api_key";
      /** A hash prefix naming the key in logs and rate limits; never the key. */ keyId: string;
    }
  | { kind: "client_secret"; claims: ClientSecretClaims };

export function bearerToken(request: Request): string | undefined {
  const header = request.headers.get("authorization");
  if (!header) return undefined;
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return match?.[1];
}

const missing = () =>
  unauthorized("missing_api_key", "An Authorization header with a Bearer token is required.");
const invalidKey = () => unauthorized("invalid_api_key", "The API key is not valid.");

/** The id that names an API key (a hash prefix, never the key): its rate limit, its project. */
export async function apiKeyId(token: string): Promise<string> {
  return `key_${(await sha256Hex(token)).slice(0, 12)}`;
}

/**
 * Compares the token with every configured key, each through SHA-256 so lengths match, and
 * without stopping at the first match, so timing says nothing about which key or prefix matched.
 */
export async function matchApiKey(config: EdgeConfig, token: string): Promise<string | undefined> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", utf8(token)));
  let matched = false;
  for (const key of config.apiKeys) {
    const keyDigest = new Uint8Array(await crypto.subtle.digest("SHA-256", utf8(key)));
    matched = constantTimeEqual(digest, keyDigest) || matched;
  }
  return matched ? apiKeyId(token) : undefined;
}

/** `token`: the bearer token, unless it came another way (a WebSocket subprotocol). */
export async function requireApiKey(
  config: EdgeConfig,
  request: Request,
  token = bearerToken(request),
): Promise<Caller & { kind: "api_key" }> {
  if (!token) throw missing();
  if (token.startsWith(CLIENT_SECRET_PREFIX)) {
    throw unauthorized("invalid_api_key", "This endpoint needs a server API key, not a client secret.");
  }
  const keyId = await matchApiKey(config, token);
  if (!keyId) throw invalidKey();
  return { kind: "api_key", keyId };
}

/**
 * An API key or a client secret. `allowExpired` lets the holder of a secret keep managing the
 * calls it started after the secret itself has expired (a call outlives the key that began it).
 */
export async function requireCaller(
  config: EdgeConfig,
  request: Request,
  options: { allowExpired?: boolean } = {},
): Promise<Caller> {
  const token = bearerToken(request);
  if (!token) throw missing();
  if (token.startsWith(CLIENT_SECRET_PREFIX)) {
    const claims = await verifyClientSecret(config.signingKeys, token, options);
    return { kind: "client_secret", claims };
  }
  const keyId = await matchApiKey(config, token);
  if (!keyId) throw invalidKey();
  return { kind: "api_key", keyId };
}
