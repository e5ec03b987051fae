// Messages between the edge and the relays: the HTTP bodies of the relay's API and of the
// edge's internal routes. Validated once at each boundary with these schemas.
import { z } from "zod";
import { SessionConfig } from "./session.ts";

export const MAX_OFFER_BYTES = 32 * 1024;

/** Header carrying the ticket on `POST /calls`. */
export const TICKET_HEADER = "Earshot-Ticket";

export const RelayId = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/);
/** A relay process's random id for this run, made at start (see Heartbeat.boot_id). */
export const BootId = z.string().regex(/^[A-Za-z0-9_-]{8,64}$/);
export const CallId = z.string().regex(/^rtc_[A-Za-z0-9_-]{8,64}$/);

export const CreateCallResponse = z.strictObject({
  call_id: CallId,
  answer_sdp: z.string().min(1),
});
export type CreateCallResponse = z.infer<typeof CreateCallResponse>;

/** Relay → edge `POST /internal/relays/heartbeat`, every few seconds. */
export const Heartbeat = z.strictObject({
  relay_id: RelayId,
  /** New at every start of the relay; the edge puts it in tickets, so a restarted relay refuses old ones. */
  boot_id: BootId,
  region: z.string().regex(/^[a-z0-9-]{1,32}$/),
  lat: z.number().min(-90).max(90),
  lon: z.number().min(-180).max(180),
  /** A bare origin (`https://host[:port]`): no path, query, fragment or credentials. */
  public_url: z.url({ protocol: /^https?$/ }),
  capacity: z.number().int().min(0).max(100_000),
  active_calls: z.number().int().min(0),
  draining: z.boolean(),
  /** Seconds between heartbeats; the edge drops a relay after three missed ones. */
  interval_seconds: z.number().positive().max(60),
  /**
   * The relay's live calls (absent from a relay with more than MAX_HEARTBEAT_CALL_IDS): a call
   * that was listed and no longer is, and that the edge still thinks runs, has ended there.
   */
  call_ids: z.array(CallId).max(1000).optional(),
});
export type Heartbeat = z.infer<typeof Heartbeat>;
/** Most call ids a heartbeat lists (about 72 KB). */
export const MAX_HEARTBEAT_CALL_IDS = 1000;

/**
 * `url`'s origin if `url` is nothing more than one (scheme, host, optional port, at most a
 * trailing `/`), else undefined: no path, query, fragment or credentials, not even empty ones.
 */
export function bareOrigin(url: string): string | undefined {
  if (!/^https?:\/\/[^/?#@\\]+\/?$/i.test(url)) return undefined;
  try {
    return new URL(url).origin;
  } catch {
    return undefined;
  }
}

export const EndReason = z.enum([
  "hangup",
  "client_hangup",
  "ice_failed",
  "dtls_failed",
  "never_connected",
  "max_duration",
  "secret_expired",
  "relay_lost",
  "relay_error",
  "relay_timeout",
  "relay_draining",
  /** The edge's: every relay it tried was full or draining, so the call never started. */
  "relay_full",
  /** The relay's: the edge had already ended the call (it answered a report with 410). */
  "edge_ended",
  "inference_lost",
  "inference_error",
]);
export type EndReason = z.infer<typeof EndReason>;

export const CallStats = z.strictObject({
  packets_in: z.number().int().nonnegative(),
  packets_out: z.number().int().nonnegative(),
  packets_lost: z.number().int().nonnegative(),
  jitter_ms: z.number().nonnegative(),
  late_frames: z.number().int().nonnegative(),
  rtt_ms: z.number().nonnegative().optional(),
  /** The selected ICE pair's transport: `tcp` when the client reached the relay by ICE-TCP. */
  transport: z.enum(["udp", "tcp"]).optional(),
  /** Media quality each way (relays from issue 19 on). */
  quality: z
    .strictObject({
      uplink: z.strictObject({
        /** Packets the relay never received in time (lost or too late), % of expected. */
        loss_percent: z.number().nonnegative().max(100),
        /** 20 ms frames the relay rebuilt from the next packet's in-band FEC. */
        fec_recovered_frames: z.number().int().nonnegative(),
        /** 20 ms frames the relay synthesised (PLC) because nothing of them arrived. */
        concealed_frames: z.number().int().nonnegative(),
        /** 20 ms frames taken from a later packet's RED (RFC 2198) copy; absent before RED. */
        red_recovered_frames: z.number().int().nonnegative().optional(),
        /** Mean time a packet waited in the relay's jitter buffer. */
        jitter_buffer_ms: z.number().nonnegative(),
        /** The longest the jitter buffer waits for a missing packet now (it follows jitter). */
        jitter_buffer_max_ms: z.number().nonnegative(),
      }),
      downlink: z.strictObject({
        /** From the client's last RTCP receiver report: loss over its interval, %. */
        loss_percent: z.number().nonnegative().max(100),
        /** From the client's RTCP receiver reports: packets it never got. */
        packets_lost: z.number().int(),
        /** From the client's RTCP receiver reports: interarrival jitter it measured. */
        jitter_ms: z.number().nonnegative(),
        /** The loss the downlink's Opus in-band FEC plans for now; 0 while the link is clean. */
        fec_expected_loss_percent: z.number().nonnegative().max(100),
        /** Frames sent with in-band FEC. */
        fec_frames: z.number().int().nonnegative(),
        /** Earlier frames copied into each RED packet now (0 while clean); absent without RED. */
        red_distance: z.number().int().nonnegative().optional(),
      }),
    })
    .optional(),
});
export type CallStats = z.infer<typeof CallStats>;

const usageKey = z.string().regex(/^[a-z0-9_]{1,40}$/);
const count = z.number().nonnegative().max(1e12);
/**
 * The model's `usage` from every `response.done`, summed field by field: numbers, and objects of
 * numbers one level down (input_token_details, …). Bounded, whatever the model sends.
 */
export const ModelUsage = z
  .record(usageKey, z.union([count, z.record(usageKey, count)]))
  .refine((usage) => Object.keys(usage).length <= 10, "at most 10 fields")
  .refine(
    (usage) => Object.values(usage).every((v) => typeof v === "number" || Object.keys(v).length <= 8),
    "at most 8 fields in each detail",
  );
export type ModelUsage = z.infer<typeof ModelUsage>;

/** What a call used, as its relay counts it at the end. */
export const CallUsage = z.strictObject({
  /** Audio received from the caller and sent to it, in seconds (20 ms per packet). */
  audio_in_seconds: z.number().nonnegative().max(1e7),
  audio_out_seconds: z.number().nonnegative().max(1e7),
  /** The model's responses (`response.done`), and their usage summed. */
  turns: z.number().int().nonnegative().max(1e7),
  /** Replies the caller interrupted (relay/barge-in/barge-in.ts); absent from older relays. */
  barge_ins: z.number().int().nonnegative().max(1e7).optional(),
  model: ModelUsage,
});
export type CallUsage = z.infer<typeof CallUsage>;

const eventBase = { call_id: CallId, relay_id: RelayId, at: z.number().int().positive() };

/**
 * Relay → edge, in batches (`RelayEventBatch`) or one at a time on `POST /internal/calls/{id}/events`.
 * `at` is epoch milliseconds.
 */
/** Most characters of one text field (text, transcript, arguments, output) in a log item. */
export const MAX_LOG_TEXT_CHARS = 4096;
/** Most log items in one `log` event; the relay sends more in the next one. */
export const MAX_LOG_ITEMS_PER_EVENT = 20;
const itemId = z.string().min(1).max(64);
const logText = z.string().max(MAX_LOG_TEXT_CHARS);

/**
 * One conversation item as the call's log keeps it: never audio. The relay sends an item again
 * when it changes (a transcript arrives, a reply is cut by a barge-in); the edge keeps the
 * latest, in the order items first arrived, which is the conversation's.
 */
export const LogItem = z.strictObject({
  id: itemId,
  previous_item_id: itemId.nullable(),
  type: z.enum(["message", "function_call", "function_call_output"]),
  role: z.enum(["user", "assistant", "system"]).optional(),
  /** A message's text, or its audio's transcript. */
  text: logText.optional(),
  /** function_call and function_call_output: the call they belong to. */
  call_id: z.string().min(1).max(64).optional(),
  name: z.string().min(1).max(64).optional(),
  arguments: logText.optional(),
  output: logText.optional(),
  /** A reply cut short by a barge-in: how much of its audio the caller heard. */
  truncated_at_ms: z.number().int().nonnegative().max(1e8).optional(),
});
export type LogItem = z.infer<typeof LogItem>;

/** Most conversation items a resumed call's new relay is handed: the edge log's own bound. */
export const MAX_RESUME_ITEMS = 1000;

/**
 * A call moving to this relay because its relay was lost (POST /v1/realtime/calls/{id}/resume):
 * the conversation so far, from the edge's log, for the new model session to be primed with.
 */
export const ResumeOf = z.strictObject({
  previous_relay_id: RelayId,
  conversation: z.array(LogItem).max(MAX_RESUME_ITEMS),
});
export type ResumeOf = z.infer<typeof ResumeOf>;

/** Edge → relay `POST /calls` (ticket in the `Earshot-Ticket` header). */
export const CreateCallRequest = z.strictObject({
  call_id: CallId,
  offer_sdp: z.string().min(1).max(MAX_OFFER_BYTES),
  session: SessionConfig,
  resume: ResumeOf.optional(),
});
export type CreateCallRequest = z.infer<typeof CreateCallRequest>;

/**
 * What a call's ticket binds besides its offer: the session, and for a resumed call the
 * conversation handed over with it, so neither can be swapped on the way.
 */
export function ticketSubject(request: Pick<CreateCallRequest, "session" | "resume">): unknown {
  return request.resume ? { session: request.session, resume: request.resume } : request.session;
}

export const RelayCallEvent = z.discriminatedUnion("type", [
  z.strictObject({
    ...eventBase,
    type: z.literal("connected"),
    /** From the relay taking the offer to ICE and DTLS connected, in ms. */
    connect_ms: z.number().nonnegative().max(3_600_000).optional(),
  }),
  z.strictObject({ ...eventBase, type: z.literal("first_audio") }),
  z.strictObject({ ...eventBase, type: z.literal("stats"), stats: CallStats }),
  z.strictObject({
    ...eventBase,
    type: z.literal("ended"),
    reason: EndReason,
    message: z.string().max(512).optional(),
    usage: CallUsage.optional(),
  }),
  /**
   * The call's session as the model confirmed it, after a client's or a sideband's
   * session.update changed it: what a relay the call is resumed on must run.
   */
  z.strictObject({ ...eventBase, type: z.literal("session"), session: SessionConfig }),
  /** Conversation items, new or changed since the last one, in conversation order. */
  z.strictObject({
    ...eventBase,
    type: z.literal("log"),
    items: z.array(LogItem).min(1).max(MAX_LOG_ITEMS_PER_EVENT),
  }),
]);
export type RelayCallEvent = z.infer<typeof RelayCallEvent>;

/** Relay → edge `POST /internal/relays/{relay_id}/events`: at most this many events… */
export const MAX_EVENT_BATCH = 100;
/**
 * …in at most this many bytes of JSON. A stats event is ~250 bytes, an ended one about 1 KB with
 * its usage (about 5 KB at most, with every usage field the schema allows).
 */
export const MAX_EVENT_BATCH_BYTES = 128 * 1024;

/**
 * Many calls' events in one signed request. Each event is checked on its own (`RelayCallEvent`),
 * so one bad event cannot sink the `ended` of another call beside it.
 */
export const RelayEventBatch = z.strictObject({
  events: z.array(z.unknown()).min(1).max(MAX_EVENT_BATCH),
});

/**
 * The edge's answer to a batch: one result per event, in order, with the status the per-call
 * endpoint would have answered (204 done; 4xx but 429 refused for good; 429, 5xx try again).
 */
export const RelayEventResult = z.strictObject({
  status: z.number().int().min(100).max(599),
  code: z.string().max(64).optional(),
});
export type RelayEventResult = z.infer<typeof RelayEventResult>;
export const RelayEventBatchResponse = z.strictObject({ results: z.array(RelayEventResult) });
export type RelayEventBatchResponse = z.infer<typeof RelayEventBatchResponse>;

/** The error envelope every Earshot HTTP surface answers with (OpenAI's shape). */
export const ErrorBody = z.object({
  error: z.object({
    type: z.string(),
    code: z.string().nullable(),
    message: z.string(),
    param: z.string().nullable(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;
