// The OpenAI Realtime protocol (GA event names) as data: the client events the relay forwards
// upstream and the built-in agent serves, and the server events the relay and its clients read.
// Every event is validated once at a boundary (a data-channel message, a WebSocket frame).
//
// Unknown event types: OpenAI adds events over time, so an event with an unknown `type` that is
// a JSON object within the size cap passes through untouched (client → upstream, upstream →
// client); the upstream answers it (OpenAI replies `invalid_request_error` itself). A known type
// with a bad shape is rejected here with an `error` event naming the field.
import { z } from "zod";
import { paramProblem } from "./param-problem.ts";
import { SessionConfig } from "./session.ts";

/** Largest client event accepted on the `oai-events` data channel (SCTP's usual max message). */
export const MAX_CLIENT_EVENT_BYTES = 256 * 1024;
/** Largest WebSocket frame the agent or the relay accepts from the other side (OpenAI: 15 MiB). */
export const MAX_UPSTREAM_EVENT_BYTES = 16 * 1024 * 1024;

const eventId = z.string().max(128).optional();
const id = z.string().min(1).max(128);
const index = z.number().int().min(0).max(1_000_000);
const ms = z
  .number()
  .int()
  .min(0)
  .max(24 * 3600 * 1000);
/** Base64 of PCM16 bytes; the charset is checked where the bytes are decoded. */
const base64 = z.string();

// ---------------------------------------------------------------------------------------------
// Client events
// ---------------------------------------------------------------------------------------------

export const SessionUpdate = z.looseObject({
  type: z.literal("session.update"),
  event_id: eventId,
  session: SessionConfig,
});
export const InputAudioBufferAppend = z.looseObject({
  type: z.literal("input_audio_buffer.append"),
  event_id: eventId,
  audio: base64,
});
export const InputAudioBufferCommit = z.looseObject({
  type: z.literal("input_audio_buffer.commit"),
  event_id: eventId,
});
export const InputAudioBufferClear = z.looseObject({
  type: z.literal("input_audio_buffer.clear"),
  event_id: eventId,
});
export const ConversationItemCreate = z.looseObject({
  type: z.literal("conversation.item.create"),
  event_id: eventId,
  previous_item_id: z.string().max(128).nullable().optional(),
  item: z.looseObject({ type: z.string().max(64).optional() }),
});
export const ConversationItemTruncate = z.looseObject({
  type: z.literal("conversation.item.truncate"),
  event_id: eventId,
  item_id: id,
  content_index: index,
  audio_end_ms: ms,
});
export const ConversationItemDelete = z.looseObject({
  type: z.literal("conversation.item.delete"),
  event_id: eventId,
  item_id: id,
});
export const ResponseCreate = z.looseObject({
  type: z.literal("response.create"),
  event_id: eventId,
  response: z.looseObject({}).optional(),
});
export const ResponseCancel = z.looseObject({
  type: z.literal("response.cancel"),
  event_id: eventId,
  response_id: id.optional(),
});
/** WebRTC/SIP only: the client asks the relay to drop the assistant audio not yet played. */
export const OutputAudioBufferClear = z.looseObject({
  type: z.literal("output_audio_buffer.clear"),
  event_id: eventId,
});

/**
 * Served by the built-in agent; not in ClientEvent, so the relay passes it through to the model
 * untouched as it does any event it does not act on.
 */
export const ConversationItemRetrieve = z.looseObject({
  type: z.literal("conversation.item.retrieve"),
  event_id: eventId,
  item_id: id,
});

export const ClientEvent = z.discriminatedUnion("type", [
  SessionUpdate,
  InputAudioBufferAppend,
  InputAudioBufferCommit,
  InputAudioBufferClear,
  ConversationItemCreate,
  ConversationItemTruncate,
  ConversationItemDelete,
  ResponseCreate,
  ResponseCancel,
  OutputAudioBufferClear,
]);
export type ClientEvent = z.infer<typeof ClientEvent>;
const CLIENT_TYPES: ReadonlySet<string> = new Set(ClientEvent.options.map((o) => o.shape.type.value));

// ---------------------------------------------------------------------------------------------
// Server events
// ---------------------------------------------------------------------------------------------

const serverBase = { event_id: z.string().max(128) };

export const ErrorDetail = z.looseObject({
  type: z.string(),
  code: z.string().nullable().optional(),
  message: z.string(),
  param: z.string().nullable().optional(),
  event_id: z.string().nullable().optional(),
});
export type ErrorDetail = z.infer<typeof ErrorDetail>;

export const ResponseObject = z.looseObject({
  id: id,
  object: z.literal("realtime.response").optional(),
  status: z.enum(["in_progress", "completed", "cancelled", "failed", "incomplete"]),
  status_details: z.looseObject({}).nullable().optional(),
  output: z.array(z.looseObject({})).optional(),
});

const sessionEvent = (type: "session.created" | "session.updated") =>
  z.looseObject({ ...serverBase, type: z.literal(type), session: z.looseObject({}) });
const itemEvent = (
  type: "conversation.item.added" | "conversation.item.done" | "conversation.item.created",
) =>
  z.looseObject({
    ...serverBase,
    type: z.literal(type),
    previous_item_id: z.string().nullable().optional(),
    item: z.looseObject({ id: id }),
  });
const outputItemEvent = (type: "response.output_item.added" | "response.output_item.done") =>
  z.looseObject({
    ...serverBase,
    type: z.literal(type),
    response_id: id,
    output_index: index,
    item: z.looseObject({ id: id }),
  });
const contentPartEvent = (type: "response.content_part.added" | "response.content_part.done") =>
  z.looseObject({
    ...serverBase,
    type: z.literal(type),
    response_id: id,
    item_id: id,
    output_index: index,
    content_index: index,
    part: z.looseObject({ type: z.string() }),
  });
const contentRef = { response_id: id, item_id: id, output_index: index, content_index: index };
const outputAudioBufferEvent = (
  type: "output_audio_buffer.started" | "output_audio_buffer.stopped" | "output_audio_buffer.cleared",
) => z.looseObject({ ...serverBase, type: z.literal(type), response_id: z.string() });

export const ResponseOutputAudioDelta = z.looseObject({
  ...serverBase,
  type: z.enum(["response.output_audio.delta", "response.audio.delta"]),
  ...contentRef,
  delta: base64,
});
export type ResponseOutputAudioDelta = z.infer<typeof ResponseOutputAudioDelta>;

export const ServerEvent = z.discriminatedUnion("type", [
  sessionEvent("session.created"),
  sessionEvent("session.updated"),
  z.looseObject({ ...serverBase, type: z.literal("error"), error: ErrorDetail }),
  z.looseObject({
    ...serverBase,
    type: z.literal("input_audio_buffer.speech_started"),
    audio_start_ms: ms,
    item_id: id,
  }),
  z.looseObject({
    ...serverBase,
    type: z.literal("input_audio_buffer.speech_stopped"),
    audio_end_ms: ms,
    item_id: id,
  }),
  z.looseObject({
    ...serverBase,
    type: z.literal("input_audio_buffer.committed"),
    previous_item_id: z.string().nullable().optional(),
    item_id: id,
  }),
  z.looseObject({ ...serverBase, type: z.literal("input_audio_buffer.cleared") }),
  itemEvent("conversation.item.added"),
  itemEvent("conversation.item.done"),
  itemEvent("conversation.item.created"),
  z.looseObject({
    ...serverBase,
    type: z.literal("conversation.item.truncated"),
    item_id: id,
    content_index: index,
    audio_end_ms: ms,
  }),
  z.looseObject({ ...serverBase, type: z.literal("conversation.item.deleted"), item_id: id }),
  z.looseObject({ ...serverBase, type: z.literal("response.created"), response: ResponseObject }),
  z.looseObject({ ...serverBase, type: z.literal("response.done"), response: ResponseObject }),
  outputItemEvent("response.output_item.added"),
  outputItemEvent("response.output_item.done"),
  contentPartEvent("response.content_part.added"),
  contentPartEvent("response.content_part.done"),
  ResponseOutputAudioDelta,
  z.looseObject({
    ...serverBase,
    type: z.enum(["response.output_audio.done", "response.audio.done"]),
    ...contentRef,
  }),
  z.looseObject({
    ...serverBase,
    type: z.enum(["response.output_audio_transcript.delta", "response.audio_transcript.delta"]),
    ...contentRef,
    delta: z.string(),
  }),
  z.looseObject({
    ...serverBase,
    type: z.enum(["response.output_audio_transcript.done", "response.audio_transcript.done"]),
    ...contentRef,
    transcript: z.string(),
  }),
  outputAudioBufferEvent("output_audio_buffer.started"),
  outputAudioBufferEvent("output_audio_buffer.stopped"),
  outputAudioBufferEvent("output_audio_buffer.cleared"),
  z.looseObject({
    ...serverBase,
    type: z.literal("rate_limits.updated"),
    rate_limits: z.array(z.looseObject({})),
  }),
]);
export type ServerEvent = z.infer<typeof ServerEvent>;
const SERVER_TYPES: ReadonlySet<string> = new Set(
  ServerEvent.options.flatMap((o) => {
    const t = o.shape.type;
    return "options" in t ? [...t.options] : [t.value];
  }),
);

// ---------------------------------------------------------------------------------------------
// Parsing at the boundary
// ---------------------------------------------------------------------------------------------

export type Parsed<T> =
  | { kind: "known"; event: T }
  /** A JSON object with a string `type` this module does not model: passed through as is. */
  | { kind: "unknown"; type: string; event: Record<string, unknown> }
  | { kind: "invalid"; code: string; message: string; param: string | null; eventId: string | null };

function parseWith<T>(
  text: string,
  maxBytes: number,
  known: ReadonlySet<string>,
  schema: z.ZodType<T>,
): Parsed<T> {
  // A JS string's length is at most its UTF-8 byte length; check the cheap bound first.
  if (text.length > maxBytes || (text.length * 3 > maxBytes && utf8Length(text) > maxBytes)) {
    return invalid("message_too_large", `Event is larger than the ${maxBytes}-byte limit.`, null, null);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return invalid("invalid_json", "Event is not valid JSON.", null, null);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return invalid("invalid_event", "Event must be a JSON object.", null, null);
  }
  const record = value as Record<string, unknown>;
  const eventIdValue = typeof record.event_id === "string" ? record.event_id.slice(0, 128) : null;
  if (typeof record.type !== "string" || record.type.length === 0 || record.type.length > 128) {
    return invalid("missing_type", "Event must have a string `type`.", "type", eventIdValue);
  }
  if (!known.has(record.type)) return { kind: "unknown", type: record.type, event: record };
  const result = schema.safeParse(value);
  if (result.success) return { kind: "known", event: result.data };
  // Said as OpenAI says it (`session.audio.output.voice`, `unknown_parameter`, ...).
  const problem = paramProblem(result.error, value);
  return invalid(problem.code, `Invalid '${record.type}': ${problem.message}`, problem.param, eventIdValue);
}

/** UTF-8 byte length without encoding (this module also runs in workerd, where Buffer is absent). */
function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    bytes += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c <= 0xdfff ? 2 : 3;
  }
  return bytes;
}

function invalid(code: string, message: string, param: string | null, eventId: string | null) {
  return { kind: "invalid" as const, code, message, param, eventId };
}

export function parseClientEvent(text: string, maxBytes = MAX_CLIENT_EVENT_BYTES): Parsed<ClientEvent> {
  return parseWith(text, maxBytes, CLIENT_TYPES, ClientEvent);
}

export function parseServerEvent(text: string, maxBytes = MAX_UPSTREAM_EVENT_BYTES): Parsed<ServerEvent> {
  return parseWith(text, maxBytes, SERVER_TYPES, ServerEvent);
}

// ---------------------------------------------------------------------------------------------
// Building events
// ---------------------------------------------------------------------------------------------

let counter = 0;
/** Short, unique-per-process ids in OpenAI's style (`event_…`, `item_…`, `resp_…`). */
export function newId(prefix: "event" | "item" | "resp"): string {
  counter = (counter + 1) % 0x100000;
  const random = Math.floor(Math.random() * 0x1000000000)
    .toString(36)
    .padStart(7, "0");
  return `${prefix}_${Date.now().toString(36)}${counter.toString(36).padStart(4, "0")}${random}`;
}

/** OpenAI's Realtime `error` server event. */
export function errorEvent(detail: {
  type: string;
  code: string | null;
  message: string;
  param: string | null;
  event_id?: string | null;
}): { type: "error"; event_id: string; error: ErrorDetail } {
  return {
    type: "error",
    event_id: newId("event"),
    error: {
      type: detail.type,
      code: detail.code,
      message: detail.message,
      param: detail.param,
      event_id: detail.event_id ?? null,
    },
  };
}

/** The `error` event for a message `parse*Event` rejected. */
export function invalidEventError(parsed: Extract<Parsed<unknown>, { kind: "invalid" }>) {
  return errorEvent({
    type: "invalid_request_error",
    code: parsed.code,
    message: parsed.message,
    param: parsed.param,
    event_id: parsed.eventId,
  });
}
