// The sideband: an app server's WebSocket attached to a live call (`GET /v1/realtime?call_id=…`,
// as OpenAI's clients build it). It speaks the Realtime protocol both ways, plus vendor events:
// `earshot.call.state` tells the server when the caller's connection drops, comes back or ends
// (OpenAI sends nothing of the kind: openai-agents-js#684), `earshot.call.quality` how the
// caller's link is doing, and `earshot.call.usage` what the call used. Shared by the edge, which checks
// the request, and the relay, where the sideband terminates in the call's bridge.
import type { CallStats, CallUsage, EndReason } from "./relay-api.ts";

/**
 * Sidebands one call may have at once: a tool handler and an observer (a logger, a supervisor).
 * More would fan every event of the call out to sockets that a leaked key could open at will;
 * a third is refused with 409 `too_many_sidebands`.
 */
export const MAX_SIDEBANDS_PER_CALL = 2;

/**
 * Largest WebSocket message the relay reads from a sideband. Events up to MAX_CLIENT_EVENT_BYTES
 * (the data channel's limit) are handled; a larger one within this gets an `error` event naming
 * the limit; past this the socket is closed with 1009, before the message is buffered whole.
 */
export const MAX_SIDEBAND_MESSAGE_BYTES = 1024 * 1024;

/**
 * Bytes a sideband may leave unread (queued at the relay beyond the kernel's socket buffer). A
 * server that stops reading is closed with 1008 past this, so it can neither hold the relay's
 * memory nor slow the call: the call's audio never waits for a sideband.
 */
export const MAX_SIDEBAND_UNREAD_BYTES = 1024 * 1024;

/** The relay's path for a call's sideband (the edge passes the upgrade on to it). */
export const sidebandPath = (callId: string) => `/calls/${callId}/sideband`;

/** The subprotocol browsers' `new WebSocket(url, ["realtime", "openai-insecure-api-key.<key>"])` offer. */
export const REALTIME_SUBPROTOCOL = "realtime";
/** The subprotocol that carries the API key where a client cannot set headers. */
export const API_KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key.";

export type CallState = "connecting" | "connected" | "disconnected" | "ended";

/** `earshot.call.state`: sent on attach (the state now) and at every change of the caller's link. */
export interface CallStateEvent {
  type: "earshot.call.state";
  event_id: string;
  call_id: string;
  state: CallState;
  /** Why the call ended (`ended` only). */
  reason: EndReason | null;
  message: string | null;
}

/**
 * `earshot.call.quality`: the caller's link as the relay measures it (RTT, loss, jitter, concealed
 * and FEC-recovered frames each way, the jitter buffer's delay), every RELAY_STATS_SECONDS while
 * the call is connected: the same figures as the call record's `stats`.
 */
export interface CallQualityEvent {
  type: "earshot.call.quality";
  event_id: string;
  call_id: string;
  stats: CallStats;
}

/** `earshot.call.usage`: what the call used, sent once at its end, just before `ended`. */
export interface CallUsageEvent {
  type: "earshot.call.usage";
  event_id: string;
  call_id: string;
  usage: CallUsage;
}

/** Close codes the relay uses on a sideband. */
export const SIDEBAND_CLOSE = {
  /** The call ended (after a final `earshot.call.state`). */
  callEnded: 1000,
  /** The server did not read its events fast enough (MAX_SIDEBAND_UNREAD_BYTES). */
  tooSlow: 1008,
  /** A message over MAX_SIDEBAND_MESSAGE_BYTES (ws closes with it itself). */
  tooLarge: 1009,
} as const;
