// One Realtime session of the built-in agent: one WebSocket. It speaks the GA protocol the way
// OpenAI's server does, as an honest test double for apps: session.update, the input audio
// buffer with its own turn detection (server_vad, semantic_vad, none; create_response,
// interrupt_response, idle_timeout_ms), conversation items (create, retrieve, delete, truncate),
// and responses: what a response says and whether it calls a tool is decided here, its streaming
// is agent-response.ts (audio by eSpeak, text, or a function call). What it cannot do for real
// it reports with OpenAI's failure event: it has no speech recogniser, so transcription fails
// with conversation.item.input_audio_transcription.failed.
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import { z } from "zod";
import type { SessionConfig } from "../protocol/session.ts";
import { assertNever } from "../protocol/assert-never.ts";
import {
  type ClientEvent,
  ConversationItemRetrieve,
  MAX_UPSTREAM_EVENT_BYTES,
  errorEvent,
  invalidEventError,
  newId,
  parseClientEvent,
} from "../protocol/realtime.ts";
import { FRAME_SAMPLES, PCM_SAMPLE_RATE, samplesToMs } from "../relay/media/audio-format.ts";
import type { ReplyMode } from "./config.ts";
import { Conversation, type RealtimeItem } from "./conversation.ts";
import { EnergyTurnDetector, type TurnEvent } from "./energy-turn-detector.ts";
import {
  AGENT_VOICE,
  ToolChoice,
  type TurnPolicy,
  defaultSession,
  functionTools,
  sessionObject,
  sessionType,
  toolProblem,
  toolToCall,
  transcriptionRequested,
  turnPolicy,
} from "./session-settings.ts";
import { AgentResponse, type ResponseHost } from "./agent-response.ts";
import { type ReplyContext, replyText } from "./reply-text.ts";
import type { SpeechSynthesizer } from "./tts.ts";

/** Input audio kept for echo replies and commits; older audio is forgotten. */
const INPUT_CAPACITY_SAMPLES = 30 * PCM_SAMPLE_RATE;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export interface AgentSessionOptions {
  reply: ReplyMode;
  speed: number;
  tts: SpeechSynthesizer;
  send(event: object): void;
  log?: Logger;
  /** `?intent=transcription` on the URL: the session starts as a transcription session. */
  intent?: "realtime" | "transcription";
}

/** The item kinds a client may add (OpenAI's conversation.item.create), checked at the boundary. */
const CreatedItem = z.discriminatedUnion("type", [
  z.looseObject({
    type: z.literal("message"),
    role: z.enum(["user", "assistant", "system"]),
    content: z.array(z.looseObject({ type: z.string() })),
  }),
  z.looseObject({
    type: z.literal("function_call"),
    name: z.string().min(1),
    call_id: z.string().min(1).max(128).optional(),
    arguments: z.string(),
  }),
  z.looseObject({
    type: z.literal("function_call_output"),
    call_id: z.string().min(1).max(128),
    output: z.string(),
  }),
]);

/** The parts of response.create's `response` the agent acts on. */
const ResponseParams = z.looseObject({
  output_modalities: z
    .array(z.enum(["audio", "text"]))
    .min(1)
    .max(1)
    .optional(),
  tools: z.array(z.unknown()).optional(),
  tool_choice: ToolChoice.optional(),
  instructions: z.string().optional(),
  conversation: z.string().optional(),
  input: z.array(z.looseObject({ type: z.string().optional() })).optional(),
  metadata: z.record(z.string(), z.string()).nullable().optional(),
  max_output_tokens: z.union([z.number().int().min(1).max(4096), z.literal("inf")]).optional(),
});
type ResponseParams = z.infer<typeof ResponseParams>;

type ReplyReason = ReplyContext["reason"];

export class AgentSession {
  readonly #options: AgentSessionOptions;
  readonly #sessionId = `sess_${newId("event").slice(6)}`;
  readonly #createdAt = Math.floor(Date.now() / 1000);
  #session: SessionConfig;
  #policy: TurnPolicy | null = null;
  #detector: EnergyTurnDetector | null = null;

  // Input audio: a ring of the last 30 s, addressed by absolute sample index.
  readonly #input = new Int16Array(INPUT_CAPACITY_SAMPLES);
  #inputSamples = 0;
  #committedSamples = 0;
  readonly #partial = new Int16Array(FRAME_SAMPLES);
  #partialLength = 0;
  #pendingUserItemId: string | null = null;
  #speechStartSample = 0;
  #lastUtterance: Int16Array | null = null;
  #userAudioSamples = 0;

  readonly #conversation = new Conversation();
  #response: AgentResponse | null = null;
  readonly #responseHost: ResponseHost;
  #toolCalls = 0;
  /** When the last reply's audio finished playing at the client (estimated); null while a turn is open. */
  #playbackEndsAt: number | null = null;
  #idleTimer: NodeJS.Timeout | undefined;
  #transcriptionLogged = false;
  readonly #mcpServersListed = new Set<string>();
  /** Once the assistant has spoken, the voice is fixed (OpenAI's rule). */
  #audioProduced = false;
  #closed = false;

  constructor(options: AgentSessionOptions) {
    this.#options = options;
    this.#responseHost = {
      send: (event) => this.#send(event),
      conversation: this.#conversation,
      tts: options.tts,
      streamSpeed: options.speed,
      log: options.log,
      usageInputs: () => {
        const instructions = (this.#session as { instructions?: unknown }).instructions;
        return {
          instructions: typeof instructions === "string" ? instructions : "",
          userAudioSamples: this.#userAudioSamples,
        };
      },
      audioProduced: () => {
        this.#audioProduced = true;
      },
      ended: (response, playbackEndsAt) => {
        if (this.#response === response) this.#response = null;
        if (playbackEndsAt === null) return;
        this.#playbackEndsAt = playbackEndsAt;
        this.#armIdleTimer();
      },
    };
    this.#session = defaultSession(options.intent ?? "realtime");
    this.#applyTurnDetection();
    this.#send({ type: "session.created", session: this.#sessionObject() });
  }

  /** A WebSocket text frame from the client. No input may throw out of here. */
  onMessage(text: string): void {
    if (this.#closed) return;
    try {
      this.#onMessage(text);
    } catch (error) {
      this.#options.log?.error({ err: error }, "agent failed on a client event");
      this.#error(
        "server_error",
        "internal_error",
        "The built-in agent failed on this event.",
        null,
        undefined,
      );
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#response?.stop();
    this.#response = null;
    clearTimeout(this.#idleTimer);
  }

  #onMessage(text: string): void {
    const parsed = parseClientEvent(text, MAX_UPSTREAM_EVENT_BYTES);
    switch (parsed.kind) {
      case "invalid":
        this.#options.send(invalidEventError(parsed));
        return;
      case "unknown":
        // conversation.item.retrieve is the agent's to answer; the relay passes it through.
        if (parsed.type === "conversation.item.retrieve") return this.#retrieve(parsed.event);
        this.#error(
          "invalid_request_error",
          "unknown_event",
          `Unsupported event type '${parsed.type}'.`,
          "type",
          parsed.event,
        );
        return;
      case "known":
        this.#handle(parsed.event);
        return;
      default:
        assertNever(parsed, "parse result");
    }
  }

  #handle(event: ClientEvent): void {
    switch (event.type) {
      case "session.update":
        return this.#updateSession(event.session, event.event_id);
      case "input_audio_buffer.append":
        return this.#append(event.audio, event.event_id);
      case "input_audio_buffer.commit": {
        const pending = this.#inputSamples - this.#committedSamples;
        if (samplesToMs(pending) < 100) {
          return this.#error(
            "invalid_request_error",
            "input_audio_buffer_commit_empty",
            `Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but buffer only has ${samplesToMs(pending).toFixed(2)}ms of audio.`,
            null,
            event,
          );
        }
        this.#commit(this.#pendingUserItemId ?? newId("item"), this.#committedSamples, this.#inputSamples);
        return;
      }
      case "input_audio_buffer.clear":
        this.#committedSamples = this.#inputSamples;
        this.#pendingUserItemId = null;
        this.#detector?.reset();
        return this.#send({ type: "input_audio_buffer.cleared" });
      case "conversation.item.create":
        return this.#createItem(event);
      case "conversation.item.delete":
        if (!this.#conversation.delete(event.item_id)) {
          return this.#error(
            "invalid_request_error",
            "item_delete_invalid_item_id",
            `Item with item_id not found: ${event.item_id}`,
            "item_id",
            event,
          );
        }
        return this.#send({ type: "conversation.item.deleted", item_id: event.item_id });
      case "conversation.item.truncate":
        return this.#truncate(event);
      case "response.create": {
        if (this.#response) {
          return this.#error(
            "invalid_request_error",
            "conversation_already_has_active_response",
            `Conversation already has an active response in progress: ${this.#response.id}. Wait until the response is finished before creating a new one.`,
            null,
            event,
          );
        }
        if (sessionType(this.#session) === "transcription") {
          return this.#error(
            "invalid_request_error",
            "invalid_request",
            "Responses are not available in a transcription session.",
            "type",
            event,
          );
        }
        const params = ResponseParams.safeParse(event.response ?? {});
        if (!params.success) {
          const issue = params.error.issues[0]!;
          return this.#error(
            "invalid_request_error",
            "invalid_value",
            `Invalid 'response.create': ${issue.message}.`,
            ["response", ...issue.path].join("."),
            event,
          );
        }
        const problem = toolProblem(params.data, "response");
        if (problem)
          return this.#error("invalid_request_error", "invalid_value", problem.message, problem.param, event);
        return this.#startResponse(params.data, "client");
      }
      case "response.cancel":
        if (!this.#response || (event.response_id && event.response_id !== this.#response.id)) {
          return this.#error(
            "invalid_request_error",
            "response_cancel_not_active",
            "Cancellation failed: no active response found",
            null,
            event,
          );
        }
        return this.#cancel("client_cancelled");
      case "output_audio_buffer.clear":
        // Only meaningful over WebRTC, where the server owns playback; a WebSocket has none.
        return this.#error(
          "invalid_request_error",
          "unsupported_event",
          "output_audio_buffer.clear is only supported for WebRTC sessions.",
          "type",
          event,
        );
      default:
        assertNever(event, "client event");
    }
  }

  // ─── Session ─────────────────────────────────────────────────────────────────────────────────

  #updateSession(update: SessionConfig, eventId: string | undefined): void {
    const cause = { event_id: eventId };
    for (const [direction, format] of [
      ["input", update.audio?.input?.format],
      ["output", update.audio?.output?.format],
    ] as const) {
      if (
        format &&
        (format.type !== "audio/pcm" || (format.rate !== undefined && format.rate !== PCM_SAMPLE_RATE))
      ) {
        return this.#error(
          "invalid_request_error",
          "invalid_value",
          `The built-in agent speaks audio/pcm at ${PCM_SAMPLE_RATE} Hz only.`,
          `session.audio.${direction}.format`,
          cause,
        );
      }
    }
    const voice = (update.audio?.output as { voice?: unknown } | undefined)?.voice;
    const currentVoice = (this.#session.audio?.output as { voice?: unknown } | undefined)?.voice;
    if (
      this.#audioProduced &&
      voice !== undefined &&
      JSON.stringify(voice) !== JSON.stringify(currentVoice)
    ) {
      return this.#error(
        "invalid_request_error",
        "cannot_update_voice",
        "Cannot update a conversation's voice if assistant audio is present.",
        "session.audio.output.voice",
        cause,
      );
    }
    const problem = toolProblem(update as { tools?: unknown; tool_choice?: unknown }, "session");
    if (problem)
      return this.#error("invalid_request_error", "invalid_value", problem.message, problem.param, cause);
    const current = this.#session;
    const merged = {
      ...current,
      ...update,
      audio: {
        ...current.audio,
        ...update.audio,
        input: { ...current.audio?.input, ...update.audio?.input },
        ...(sessionType({ ...current, ...update } as SessionConfig) === "transcription"
          ? {}
          : { output: { ...current.audio?.output, ...update.audio?.output } }),
      },
    } as SessionConfig;
    const choice = (merged as { tool_choice?: unknown }).tool_choice;
    if (
      choice &&
      typeof choice === "object" &&
      (choice as { type?: unknown }).type === "function" &&
      !functionTools((merged as { tools?: unknown }).tools).some(
        (t) => t.name === (choice as { name?: unknown }).name,
      )
    ) {
      return this.#error(
        "invalid_request_error",
        "invalid_value",
        `tool_choice names the function '${String((choice as { name?: unknown }).name)}', which is not among the session's tools.`,
        "session.tool_choice",
        cause,
      );
    }
    this.#session = merged;
    if (update.audio?.input && "turn_detection" in update.audio.input) this.#applyTurnDetection();
    this.#armIdleTimer();
    this.#send({ type: "session.updated", session: this.#sessionObject() });
    this.#listMcpTools((update as { tools?: unknown }).tools);
  }

  /**
   * OpenAI lists an MCP server's tools when a session gains it, as an `mcp_list_tools` item. The
   * agent reaches no MCP server, so each listing fails, with OpenAI's event for that.
   */
  #listMcpTools(tools: unknown): void {
    if (!Array.isArray(tools)) return;
    for (const tool of tools as { type?: unknown; server_label?: unknown }[]) {
      if (tool?.type !== "mcp" || typeof tool.server_label !== "string") continue;
      if (this.#mcpServersListed.has(tool.server_label)) continue;
      this.#mcpServersListed.add(tool.server_label);
      this.#options.log?.info(
        { server_label: tool.server_label },
        "MCP tools asked for; the built-in agent has none",
      );
      const item: RealtimeItem = {
        id: newId("item"),
        type: "mcp_list_tools",
        object: "realtime.item",
        server_label: tool.server_label,
        tools: [],
      };
      const previous = this.#conversation.add(item);
      this.#send({ type: "conversation.item.added", previous_item_id: previous, item });
      this.#send({ type: "mcp_list_tools.in_progress", item_id: item.id });
      this.#send({ type: "mcp_list_tools.failed", item_id: item.id });
      this.#send({ type: "conversation.item.done", previous_item_id: previous, item });
    }
  }

  /** Turn detection as the session now says; a detector mid-utterance starts over. */
  #applyTurnDetection(): void {
    this.#policy = turnPolicy(
      this.#session.audio?.input?.turn_detection as Record<string, unknown> | null | undefined,
    );
    this.#detector = this.#policy
      ? new EnergyTurnDetector({
          threshold: this.#policy.threshold,
          silenceDurationMs: this.#policy.silenceDurationMs,
        })
      : null;
  }

  #sessionObject() {
    return sessionObject(this.#session, this.#sessionId, this.#createdAt);
  }

  // ─── Input audio and turns ──────────────────────────────────────────────────────────────────

  #append(audio: string, eventId: string | undefined): void {
    if (!BASE64.test(audio) || audio.length % 4 !== 0) {
      return this.#error("invalid_request_error", "invalid_value", "Invalid base64 audio.", "audio", {
        event_id: eventId,
      });
    }
    const bytes = Buffer.from(audio, "base64");
    if (bytes.length % 2 !== 0) {
      return this.#error(
        "invalid_request_error",
        "invalid_value",
        "audio/pcm must be whole 16-bit samples (an even number of bytes).",
        "audio",
        { event_id: eventId },
      );
    }
    const samples = new Int16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
    for (let i = 0; i < samples.length; i++) {
      const s = samples[i]!;
      this.#input[this.#inputSamples % INPUT_CAPACITY_SAMPLES] = s;
      this.#inputSamples++;
      this.#partial[this.#partialLength++] = s;
      if (this.#partialLength === FRAME_SAMPLES) {
        this.#partialLength = 0;
        const frameStartMs = samplesToMs(this.#inputSamples - FRAME_SAMPLES);
        const turn = this.#detector?.push(this.#partial, frameStartMs);
        if (turn) this.#onTurn(turn);
      }
    }
  }

  #onTurn(turn: TurnEvent): void {
    const policy = this.#policy;
    if (!policy) return;
    if (turn.type === "speech_started") {
      const startMs = Math.max(samplesToMs(this.#committedSamples), turn.onsetMs - policy.prefixPaddingMs);
      this.#speechStartSample = Math.round((startMs * PCM_SAMPLE_RATE) / 1000);
      this.#pendingUserItemId = newId("item");
      // The user has the floor: no idle prompt until the next reply has played.
      this.#playbackEndsAt = null;
      clearTimeout(this.#idleTimer);
      this.#send({
        type: "input_audio_buffer.speech_started",
        audio_start_ms: Math.round(startMs),
        item_id: this.#pendingUserItemId,
      });
      if (policy.interruptResponse && this.#response) this.#cancel("turn_detected");
      return;
    }
    const itemId = this.#pendingUserItemId ?? newId("item");
    this.#send({
      type: "input_audio_buffer.speech_stopped",
      audio_end_ms: Math.round(turn.stopMs),
      item_id: itemId,
    });
    const voicedEnd = Math.round((turn.lastVoicedEndMs * PCM_SAMPLE_RATE) / 1000);
    this.#commit(itemId, this.#speechStartSample, voicedEnd);
    // With interrupt_response false the reply still playing wins (OpenAI: "may fail to create").
    if (policy.createResponse && !this.#response && sessionType(this.#session) === "realtime")
      this.#startResponse({}, "turn");
  }

  /** Commits input audio [from, to) as a user item; keeps the utterance for an echo reply. */
  #commit(itemId: string, from: number, to: number): void {
    const start = Math.max(from, this.#inputSamples - INPUT_CAPACITY_SAMPLES, 0);
    const utterance = new Int16Array(Math.max(0, to - start));
    for (let i = 0; i < utterance.length; i++)
      utterance[i] = this.#input[(start + i) % INPUT_CAPACITY_SAMPLES]!;
    this.#lastUtterance = utterance;
    this.#userAudioSamples += utterance.length;
    this.#committedSamples = this.#inputSamples;
    this.#pendingUserItemId = null;
    const item: RealtimeItem = {
      id: itemId,
      type: "message",
      object: "realtime.item",
      status: "completed",
      role: "user",
      content: [{ type: "input_audio", transcript: null }],
    };
    const previous = this.#conversation.add(item, utterance);
    this.#send({ type: "input_audio_buffer.committed", previous_item_id: previous, item_id: itemId });
    this.#send({ type: "conversation.item.added", previous_item_id: previous, item });
    this.#send({ type: "conversation.item.done", previous_item_id: previous, item });
    if (transcriptionRequested(this.#session)) this.#transcriptionFailed(itemId);
  }

  /** OpenAI's failure event for input transcription: the agent has no speech recogniser. */
  #transcriptionFailed(itemId: string): void {
    if (!this.#transcriptionLogged) {
      this.#transcriptionLogged = true;
      this.#options.log?.info("input transcription asked for; the built-in agent cannot transcribe");
    }
    this.#send({
      type: "conversation.item.input_audio_transcription.failed",
      item_id: itemId,
      content_index: 0,
      error: {
        type: "invalid_request_error",
        code: "transcription_unavailable",
        message:
          "Input audio transcription is not available in Earshot's built-in agent: it has no speech recogniser. Set INFERENCE_URL to a model that transcribes.",
        param: "session.audio.input.transcription",
      },
    });
  }

  // ─── Idle timeout (server_vad) ──────────────────────────────────────────────────────────────

  /**
   * OpenAI: after `idle_timeout_ms` of silence following the end of the last reply's playback,
   * `input_audio_buffer.timeout_triggered` and a response. Playback is estimated as the first
   * audio delta plus the reply's duration (the client plays from the first delta, in real time).
   */
  #armIdleTimer(): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    const idleMs = this.#policy?.idleTimeoutMs;
    if (!idleMs || this.#playbackEndsAt === null || this.#response || this.#closed) return;
    const delay = Math.max(0, this.#playbackEndsAt + idleMs - performance.now());
    this.#idleTimer = setTimeout(() => this.#onIdle(idleMs), delay);
  }

  #onIdle(idleMs: number): void {
    this.#idleTimer = undefined;
    if (this.#closed || this.#response || this.#detector?.speaking) return;
    const endMs = Math.round(samplesToMs(this.#inputSamples));
    const startMs = Math.max(Math.round(samplesToMs(this.#committedSamples)), endMs - idleMs);
    const itemId = this.#pendingUserItemId ?? newId("item");
    this.#playbackEndsAt = null;
    this.#send({
      type: "input_audio_buffer.timeout_triggered",
      audio_start_ms: startMs,
      audio_end_ms: endMs,
      item_id: itemId,
    });
    this.#commit(itemId, Math.round((startMs * PCM_SAMPLE_RATE) / 1000), this.#inputSamples);
    this.#startResponse({}, "idle");
  }

  // ─── Conversation items ─────────────────────────────────────────────────────────────────────

  #createItem(event: Extract<ClientEvent, { type: "conversation.item.create" }>): void {
    const raw = event.item as Record<string, unknown>;
    // A message may leave out its type (OpenAI infers it from the role).
    const parsed = CreatedItem.safeParse(
      raw.type === undefined && "role" in raw ? { ...raw, type: "message" } : raw,
    );
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      return this.#error(
        "invalid_request_error",
        "invalid_value",
        `Invalid 'conversation.item.create': ${issue.message}.`,
        ["item", ...issue.path].join("."),
        event,
      );
    }
    const item = parsed.data;
    if (item.type === "function_call_output" && !this.#functionCall(item.call_id)) {
      return this.#error(
        "invalid_request_error",
        "invalid_value",
        `No function call with call_id '${item.call_id}' found in the conversation.`,
        "item.call_id",
        event,
      );
    }
    const previousId = event.previous_item_id;
    if (typeof previousId === "string" && !this.#conversation.has(previousId)) {
      return this.#error(
        "invalid_request_error",
        "invalid_value",
        `Item with previous_item_id not found: ${previousId}`,
        "previous_item_id",
        event,
      );
    }
    const full: RealtimeItem = {
      ...item,
      ...(item.type === "function_call"
        ? { call_id: item.call_id ?? newId("item").replace("item_", "call_") }
        : {}),
      id: typeof raw.id === "string" && raw.id.length > 0 ? raw.id : newId("item"),
      object: "realtime.item",
      status: "completed",
    };
    const previous = this.#conversation.add(full, null, previousId);
    this.#send({ type: "conversation.item.added", previous_item_id: previous, item: full });
    this.#send({ type: "conversation.item.done", previous_item_id: previous, item: full });
  }

  #functionCall(callId: string): RealtimeItem | undefined {
    return this.#conversation.find((item) => item.type === "function_call" && item.call_id === callId);
  }

  #retrieve(raw: Record<string, unknown>): void {
    const parsed = ConversationItemRetrieve.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      return this.#error(
        "invalid_request_error",
        "invalid_value",
        `Invalid 'conversation.item.retrieve': ${issue.message}.`,
        issue.path.join(".") || null,
        raw,
      );
    }
    const item = this.#conversation.retrieve(parsed.data.item_id);
    if (!item) {
      return this.#error(
        "invalid_request_error",
        "item_retrieve_invalid_item_id",
        `Item with item_id not found: ${parsed.data.item_id}`,
        "item_id",
        raw,
      );
    }
    this.#send({ type: "conversation.item.retrieved", item });
  }

  #truncate(event: Extract<ClientEvent, { type: "conversation.item.truncate" }>): void {
    const entry = this.#conversation.get(event.item_id);
    if (!entry) {
      return this.#error(
        "invalid_request_error",
        "item_truncate_invalid_item_id",
        `Item with item_id not found: ${event.item_id}`,
        "item_id",
        event,
      );
    }
    const assistant = entry.item.role === "assistant";
    if (!assistant || !entry.audio || event.content_index !== 0) {
      return this.#error(
        "invalid_request_error",
        "invalid_value",
        "Only the audio content (content_index 0) of an assistant message can be truncated.",
        !assistant ? "item_id" : "content_index",
        event,
      );
    }
    const audioMs = Math.floor(samplesToMs(entry.audioSamples));
    if (event.audio_end_ms > audioMs) {
      return this.#error(
        "invalid_request_error",
        "invalid_value",
        `Audio content of ${audioMs}ms is already shorter than ${event.audio_end_ms}ms`,
        "audio_end_ms",
        event,
      );
    }
    entry.audioSamples = Math.round((event.audio_end_ms * PCM_SAMPLE_RATE) / 1000);
    this.#send({
      type: "conversation.item.truncated",
      item_id: entry.item.id,
      content_index: 0,
      audio_end_ms: event.audio_end_ms,
    });
  }

  // ─── Responses ──────────────────────────────────────────────────────────────────────────────

  #startResponse(params: ResponseParams, reason: ReplyReason): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    const session = this.#session as SessionConfig & { tools?: unknown; tool_choice?: unknown };
    const modalities =
      params.output_modalities ??
      // Audio replies carry a transcript; text alone only when audio is not asked for.
      (session.output_modalities?.includes("audio") === false ? ["text"] : ["audio"]);
    const maxTokens =
      params.max_output_tokens ?? (session as { max_output_tokens?: unknown }).max_output_tokens;
    const response = new AgentResponse(this.#responseHost, {
      modalities,
      metadata: params.metadata ?? null,
      maxTokens: typeof maxTokens === "number" ? maxTokens : null,
      maxTokensShown: maxTokens ?? "inf",
      outOfBand: params.conversation === "none",
      voice: (session.audio?.output as { voice?: unknown } | undefined)?.voice ?? AGENT_VOICE,
    });
    this.#response = response;
    response.start();

    const tools = functionTools(params.tools ?? session.tools);
    const choice = params.tool_choice ?? ToolChoice.catch("auto").parse(session.tool_choice ?? "auto");
    // A response with its own `input` answers that, not the conversation.
    const last = this.#inputOf(params) ?? this.#conversation.last?.item;
    const tool = reason === "idle" ? null : toolToCall(tools, choice, last?.type, this.#toolCalls);
    if (tool) {
      this.#toolCalls++;
      return response.callTool(tool);
    }
    const text = replyText({
      reason,
      last,
      callOf: (callId) => this.#functionCall(callId),
      lastUtteranceMs: this.#lastUtterance ? samplesToMs(this.#lastUtterance.length) : 0,
    });
    // Echo mode plays back the user's last utterance, only when that is what the reply answers.
    const echo =
      this.#options.reply === "echo" &&
      reason !== "idle" &&
      last?.role === "user" &&
      Array.isArray(last.content) &&
      (last.content as { type?: unknown }[]).some((part) => part.type === "input_audio") &&
      this.#lastUtterance !== null &&
      this.#lastUtterance.length > 0;
    if (response.audio) void response.speak(text, echo ? this.#lastUtterance : null, this.#speechSpeed());
    else response.write(text);
  }

  #cancel(reason: "client_cancelled" | "turn_detected"): void {
    this.#response?.cancel(reason);
  }

  /** The last item of response.create's `input` (an item_reference resolved), if it has one. */
  #inputOf(params: ResponseParams): RealtimeItem | undefined {
    const last = params.input?.at(-1);
    if (!last) return undefined;
    if (last.type === "item_reference" && typeof last.id === "string")
      return this.#conversation.get(last.id)?.item;
    return { id: "", type: "message", ...last } as RealtimeItem;
  }

  /** OpenAI's `audio.output.speed` (0.25 to 1.5; the schema checks it), 1 when unset. */
  #speechSpeed(): number {
    const speed = (this.#session.audio?.output as { speed?: unknown } | undefined)?.speed;
    return typeof speed === "number" && speed > 0 ? speed : 1;
  }

  #error(
    type: string,
    code: string,
    message: string,
    param: string | null,
    cause: { event_id?: unknown } | undefined,
  ): void {
    const eventId = typeof cause?.event_id === "string" ? cause.event_id : null;
    this.#options.send(errorEvent({ type, code, message, param, event_id: eventId }));
  }

  #send(event: object): void {
    if (!this.#closed) this.#options.send({ event_id: newId("event"), ...event });
  }
}
