// Short-lived TURN credentials by the TURN REST API scheme (draft-uberti-behave-turn-rest, what
// coturn's `use-auth-secret` checks): username = "<expiry unix seconds>:<id>", credential =
// base64(HMAC-SHA1(EARSHOT_TURN_SECRET, username)). The TURN server needs no call to the edge:
// it recomputes the HMAC and refuses a username whose expiry has passed.

/** An RTCIceServer as browsers and OpenAI-style clients take it. */
export interface IceServer {
  urls: string[];
  username: string;
  credential: string;
}

export interface TurnConfig {
  /** EARSHOT_TURN_URLS: turn: / turns: URLs handed to clients, in order. */
  urls: readonly string[];
  /** EARSHOT_TURN_SECRET: coturn's static-auth-secret. Never logged. */
  secret: string;
  /** EARSHOT_TURN_TTL_SECONDS, default 3600: the longest a credential lives. */
  ttlSeconds: number;
}

export const DEFAULT_TURN_TTL_SECONDS = 3600;
export const MIN_TURN_TTL_SECONDS = 60;
export const MAX_TURN_TTL_SECONDS = 86_400;
export const MIN_TURN_SECRET_LENGTH = 16;

/** turn:host[:port][?transport=udp|tcp] or turns:…, as RFC 7065 writes them; hosts without spaces or commas. */
const TURN_URL = /^turns?:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?(\?transport=(udp|tcp))?$/;

/** Checks one EARSHOT_TURN_URLS entry; returns a problem to report, or undefined when it is fine. */
export function turnUrlProblem(url: string): string | undefined {
  const match = TURN_URL.exec(url);
  if (!match) return `"${url}" is not a turn: or turns: URL such as turn:turn.example.com:3478?transport=udp`;
  const port = match[2] === undefined ? undefined : Number(match[2].slice(1));
  if (port !== undefined && (port < 1 || port > 65_535)) return `"${url}" has no valid port`;
  return undefined;
}

let cachedKey: { secret: string; key: Promise<CryptoKey> } | undefined;

function hmacKey(secret: string): Promise<CryptoKey> {
  if (cachedKey?.secret !== secret) {
    cachedKey = {
      secret,
      key: crypto.subtle.importKey(
        "raw",
        new TextEncoder().encode(secret),
        { name: "HMAC", hash: "SHA-1" },
        false,
        ["sign"],
      ),
    };
  }
  return cachedKey.key;
}

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** The coturn credential for a username: base64(HMAC-SHA1(secret, username)). */
export async function turnCredential(secret: string, username: string): Promise<string> {
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(secret), new TextEncoder().encode(username));
  return base64(new Uint8Array(mac));
}

/**
 * ICE servers for one holder (`id` names it in the TURN server's logs: a client secret id or
 * an API key's hash id). The credential expires after the configured TTL, or at `notAfter`
 * (unix seconds) if that comes first, so it never outlives the client secret it came with.
 * No TURN configured: an empty list.
 */
export async function iceServersFor(
  turn: TurnConfig | undefined,
  options: { id: string; nowSeconds?: number; notAfter?: number },
): Promise<{ iceServers: IceServer[]; expiresAt: number | null }> {
  if (!turn) return { iceServers: [], expiresAt: null };
  const now = options.nowSeconds ?? Math.floor(Date.now() / 1000);
  const expiresAt = Math.min(now + turn.ttlSeconds, options.notAfter ?? Infinity);
  // coturn splits the username at its first ":" (rest-api-separator); the id must not hold one.
  const username = `${expiresAt}:${options.id.replaceAll(":", "_")}`;
  return {
    iceServers: [{ urls: [...turn.urls], username, credential: await turnCredential(turn.secret, username) }],
    expiresAt,
  };
}
