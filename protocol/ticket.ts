// Tickets authorise one offer on one relay for one call. The edge signs, the relay verifies;
// both import this module so the two sides cannot drift apart.
//
//   ticket = "v1." base64url(JSON claims) "." base64url(HMAC-SHA256(secret, "v1." claims))
//
// The claims bind the call id, the relay id, the SHA-256 of the offer SDP and of the canonical
// session config, the relay's boot id, a nonce (the relay remembers it until expiry, so a ticket
// is good once) and an expiry. A ticket therefore cannot be replayed, moved to another relay or
// another offer. The relay keeps its nonces in memory only; the boot id (random at each start,
// sent in its heartbeats) is what stops a ticket from replaying after the relay restarts.
// The secret is the relay's own key (protocol/relay-key.ts), so only the edge and that relay can
// sign or check it.
//
// A sideband ticket (signSidebandTicket) has the same envelope and other claims: it lets one app
// server attach one WebSocket to one live call on that relay (`purpose: "sideband"`, no offer).
// Each claims schema is strict, so neither kind of ticket passes for the other.
import { z } from "zod";
import {
  base64url,
  canonicalJson,
  fromBase64url,
  fromUtf8,
  randomToken,
  sha256Hex,
  utf8,
} from "./encoding.ts";
import { hmacSha256, hmacVerify } from "./hmac.ts";

export const TICKET_VERSION = "v1";
export const TICKET_MAX_LENGTH = 2048;
/** Clock difference tolerated between edge and relay, in seconds. */
export const CLOCK_SKEW_SECONDS = 30;
/** How far in the future a signed request's time may be: a clock a little ahead, no more. */
export const MAX_FUTURE_SECONDS = 5;
export const DEFAULT_TICKET_TTL_SECONDS = 30;

export const TicketClaims = z.strictObject({
  call_id: z.string().min(1).max(128),
  relay_id: z.string().min(1).max(128),
  /** The relay process this ticket is for (Heartbeat.boot_id): a restarted relay refuses it. */
  boot_id: z.string().min(8).max(64),
  offer_sha256: z.string().regex(/^[0-9a-f]{64}$/),
  session_sha256: z.string().regex(/^[0-9a-f]{64}$/),
  nonce: z.string().min(16).max(64),
  iat: z.number().int().nonnegative(),
  exp: z.number().int().positive(),
  /**
   * When the call must end whatever happens (epoch seconds: its start plus the edge's
   * EARSHOT_MAX_CALL_SECONDS). The relay enforces it itself, so a call the edge cannot reach
   * still ends on time.
   */
  call_deadline: z.number().int().positive().optional(),
});
export type TicketClaims = z.infer<typeof TicketClaims>;

export interface TicketSubject {
  callId: string;
  relayId: string;
  /** The relay's boot id, from its last heartbeat. */
  bootId: string;
  offerSdp: string;
  session: unknown;
}

export interface TicketOptions {
  nowSeconds?: number;
  ttlSeconds?: number;
  nonce?: string;
  /** The call's deadline, epoch seconds (claims.call_deadline). */
  callDeadline?: number;
}

export type TicketErrorCode =
  | "ticket_missing"
  | "ticket_malformed"
  | "ticket_bad_signature"
  | "ticket_expired"
  | "ticket_not_yet_valid"
  | "ticket_mismatch"
  | "ticket_stale_boot";

export type TicketVerification =
  { ok: true; claims: TicketClaims } | { ok: false; code: TicketErrorCode; message: string };

export async function signTicket(
  secret: string,
  subject: TicketSubject,
  options: TicketOptions = {},
): Promise<string> {
  const iat = options.nowSeconds ?? Math.floor(Date.now() / 1000);
  const claims: TicketClaims = {
    call_id: subject.callId,
    relay_id: subject.relayId,
    boot_id: subject.bootId,
    offer_sha256: await sha256Hex(subject.offerSdp),
    session_sha256: await sha256Hex(canonicalJson(subject.session ?? {})),
    nonce: options.nonce ?? randomToken(18),
    iat,
    exp: iat + (options.ttlSeconds ?? DEFAULT_TICKET_TTL_SECONDS),
    ...(options.callDeadline === undefined ? {} : { call_deadline: options.callDeadline }),
  };
  return signClaims(secret, claims);
}

async function signClaims(secret: string, claims: object): Promise<string> {
  const signed = `${TICKET_VERSION}.${base64url(utf8(JSON.stringify(claims)))}`;
  return `${signed}.${base64url(await hmacSha256(secret, signed))}`;
}

function fail(code: TicketErrorCode, message: string): { ok: false; code: TicketErrorCode; message: string } {
  return { ok: false, code, message };
}

/**
 * Checks signature, time and binding. Replay (the nonce seen before) is the caller's to check,
 * since only it keeps state; `claims.nonce` and `claims.exp` say what to remember and how long.
 */
export async function verifyTicket(
  secret: string,
  ticket: string | null | undefined,
  subject: TicketSubject,
  nowSeconds = Math.floor(Date.now() / 1000),
): Promise<TicketVerification> {
  const opened = await openTicket(secret, ticket, TicketClaims, nowSeconds);
  if (!opened.ok) return opened;
  const claims = opened.claims;
  const bound = checkBinding(claims, subject);
  if (bound) return bound;
  if (claims.offer_sha256 !== (await sha256Hex(subject.offerSdp))) {
    return fail("ticket_mismatch", "The ticket is for another offer.");
  }
  if (claims.session_sha256 !== (await sha256Hex(canonicalJson(subject.session ?? {})))) {
    return fail("ticket_mismatch", "The ticket is for another session config.");
  }
  return { ok: true, claims };
}

/** The envelope checks every kind of ticket shares: size, version, signature, claims, time. */
async function openTicket<T extends { iat: number; exp: number }>(
  secret: string,
  ticket: string | null | undefined,
  schema: z.ZodType<T>,
  nowSeconds: number,
): Promise<{ ok: true; claims: T } | { ok: false; code: TicketErrorCode; message: string }> {
  if (!ticket) return fail("ticket_missing", "A ticket is required.");
  if (ticket.length > TICKET_MAX_LENGTH) return fail("ticket_malformed", "The ticket is too long.");
  const parts = ticket.split(".");
  if (parts.length !== 3 || parts[0] !== TICKET_VERSION) {
    return fail("ticket_malformed", "The ticket is not a v1 ticket.");
  }
  const mac = fromBase64url(parts[2]!);
  const payload = fromBase64url(parts[1]!);
  if (!mac || !payload) return fail("ticket_malformed", "The ticket is not base64url.");
  // The signature is checked before the claims are parsed, so forged input costs one HMAC.
  if (!(await hmacVerify(secret, `${parts[0]}.${parts[1]}`, mac))) {
    return fail("ticket_bad_signature", "The ticket's signature does not match.");
  }
  let parsed: z.ZodSafeParseResult<T>;
  try {
    parsed = schema.safeParse(JSON.parse(fromUtf8(payload)));
  } catch {
    return fail("ticket_malformed", "The ticket's claims are not JSON.");
  }
  if (!parsed.success) return fail("ticket_malformed", "The ticket's claims are invalid.");
  const claims = parsed.data;
  if (claims.exp + CLOCK_SKEW_SECONDS < nowSeconds) return fail("ticket_expired", "The ticket has expired.");
  if (claims.iat - CLOCK_SKEW_SECONDS > nowSeconds) {
    return fail("ticket_not_yet_valid", "The ticket is not valid yet.");
  }
  return { ok: true, claims };
}

function checkBinding(
  claims: { call_id: string; relay_id: string; boot_id: string },
  subject: { callId: string; relayId: string; bootId: string },
): { ok: false; code: TicketErrorCode; message: string } | undefined {
  if (claims.call_id !== subject.callId) return fail("ticket_mismatch", "The ticket is for another call.");
  if (claims.relay_id !== subject.relayId) return fail("ticket_mismatch", "The ticket is for another relay.");
  if (claims.boot_id !== subject.bootId) {
    return fail("ticket_stale_boot", "The ticket is for an earlier run of this relay.");
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Sideband tickets
// ---------------------------------------------------------------------------------------------

/** A sideband ticket is used at once (the edge passes the upgrade straight on): a short life. */
export const SIDEBAND_TICKET_TTL_SECONDS = 15;

export const SidebandTicketClaims = z.strictObject({
  purpose: z.literal("sideband"),
  call_id: z.string().min(1).max(128),
  relay_id: z.string().min(1).max(128),
  boot_id: z.string().min(8).max(64),
  /** Who attaches: the API key's id (a hash prefix, never the key), for the relay's logs. */
  key_id: z.string().min(1).max(64),
  nonce: z.string().min(16).max(64),
  iat: z.number().int().nonnegative(),
  exp: z.number().int().positive(),
});
export type SidebandTicketClaims = z.infer<typeof SidebandTicketClaims>;

export interface SidebandSubject {
  callId: string;
  relayId: string;
  bootId: string;
}

export type SidebandTicketVerification =
  { ok: true; claims: SidebandTicketClaims } | { ok: false; code: TicketErrorCode; message: string };

export async function signSidebandTicket(
  secret: string,
  subject: SidebandSubject & { keyId: string },
  options: { nowSeconds?: number; nonce?: string } = {},
): Promise<string> {
  const iat = options.nowSeconds ?? Math.floor(Date.now() / 1000);
  const claims: SidebandTicketClaims = {
    purpose: "sideband",
    call_id: subject.callId,
    relay_id: subject.relayId,
    boot_id: subject.bootId,
    key_id: subject.keyId,
    nonce: options.nonce ?? randomToken(18),
    iat,
    exp: iat + SIDEBAND_TICKET_TTL_SECONDS,
  };
  return signClaims(secret, claims);
}

/** As verifyTicket, for a sideband ticket; replay is the caller's to check (`claims.nonce`). */
export async function verifySidebandTicket(
  secret: string,
  ticket: string | null | undefined,
  subject: SidebandSubject,
  nowSeconds = Math.floor(Date.now() / 1000),
): Promise<SidebandTicketVerification> {
  const opened = await openTicket(secret, ticket, SidebandTicketClaims, nowSeconds);
  if (!opened.ok) return opened;
  return checkBinding(opened.claims, subject) ?? opened;
}
