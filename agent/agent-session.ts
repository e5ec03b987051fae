// One Realtime session of the built-in agent: one WebSocket. It speaks the GA protocol the way
// OpenAI's server does for what Earshot needs: session.update, the input audio buffer with server
// VAD, conversation items, responses with streamed audio, response.cancel and
// conversation.item.truncate (with OpenAI's error when audio_end_ms is past the audio).
import type { Logger } from "pino";
import type { SessionConfig } from "../protocol/session.ts";
import { assertNever } from "../protocol/assert-never.ts";
import {
  type ClientEvent,
  MAX_UPSTREAM_EVENT_BYTES,
  errorEvent,
  invalidEventError,
  newId,
  parseClientEvent,
} from "../protocol/realtime.ts";
import { FRAME_SAMPLES, PCM_SAMPLE_RATE, samplesToMs } from "../relay/media/audio-format.ts";
import type { ReplyMode } from "./config.ts";
import { EnergyTurnDetector, type TurnEvent } from "./energy-turn-detector.ts";
import type { SpeechSynthesizer } from "./tts.ts";

/** Input audio kept for echo replies and commits; older audio is forgotten. */
const INPUT_CAPACITY_SAMPLES = 30 * PCM_SAMPLE_RATE;
/** Reply audio per `response.output_audio.delta` (OpenAI sends deltas of similar size). */
const DELTA_SAMPLES = (PCM_SAMPLE_RATE * 100) / 1000;
const MAX_ITEMS = 256;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export interface AgentSessionOptions {
  reply: ReplyMode;
  speed: number;
  tts: SpeechSynthesizer;
  send(event: object): void;
  log?: Logger;
}

interface ConversationItem {
  id: string;
  role: "user" | "assistant" | "system";
  /** Assistant audio generated so far, in samples (what truncate is checked against). */
  audioSamples: number;
  hasAudio: boolean;
}

interface ActiveResponse {
  id: string;
  itemId: string;
  timer: NodeJS.Timeout | undefined;
  cancelled: boolean;
}

const DEFAULT_TURN_DETECTION = {
  type: "server_vad" as const,
  threshold: 0.5,
  prefix_padding_ms: 300,
  silence_duration_ms: 500,
  create_response: true,
  interrupt_response: true,
};

export class AgentSession {
  readonly #options: AgentSessionOptions;
  readonly #sessionId = `sess_${newId("event").slice(6)}`;
  #session: SessionConfig;
  #detector: EnergyTurnDetector | null;

  // Input audio: a ring of the last 30 s, addressed by absolute sample index.
  readonly #input = new Int16Array(INPUT_CAPACITY_SAMPLES);
  #inputSamples = 0;
  #committedSamples = 0;
  readonly #partial = new Int16Array(FRAME_SAMPLES);
  #partialLength = 0;
  #pendingUserItemId: string | null = null;
  #speechStartSample = 0;
  #lastUtterance: Int16Array | null = null;
  #lastUtteranceMs = 0;

  #items = new Map<string, ConversationItem>();
  #lastItemId: string | null = null;
  #response: ActiveResponse | null = null;
  #closed = false;

  constructor(options: AgentSessionOptions) {
    this.#options = options;
    this.#session = {
      type: "realtime",
      model: "earshot-agent",
      output_modalities: ["audio"],
      audio: {
        input: {
          format: { type: "audio/pcm", rate: PCM_SAMPLE_RATE },
          turn_detection: DEFAULT_TURN_DETECTION,
        },
        output: { format: { type: "audio/pcm", rate: PCM_SAMPLE_RATE }, voice: "espeak" },
      },
    };
    this.#detector = this.#makeDetector();
    this.#send({ type: "session.created", session: this.#sessionObject() });
  }

  /** A WebSocket text frame from the client. */
  onMessage(text: string): void {
    if (this.#closed) return;
    const parsed = parseClientEvent(text, MAX_UPSTREAM_EVENT_BYTES);
    switch (parsed.kind) {
      case "invalid":
        this.#options.send(invalidEventError(parsed));
        return;
      case "unknown":
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

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#response?.timer) clearTimeout(this.#response.timer);
    this.#response = null;
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
      case "conversation.item.create": {
        const itemId = typeof event.item.id === "string" ? event.item.id : newId("item");
        const role =
          event.item.role === "assistant" || event.item.role === "system" ? event.item.role : "user";
        this.#addItem({ id: itemId, role, audioSamples: 0, hasAudio: false });
        const item = { ...event.item, id: itemId, object: "realtime.item", status: "completed" };
        this.#send({ type: "conversation.item.added", previous_item_id: null, item });
        this.#send({ type: "conversation.item.done", previous_item_id: null, item });
        return;
      }
      case "conversation.item.delete":
        if (!this.#items.delete(event.item_id)) {
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
      case "response.create":
        if (this.#response) {
          return this.#error(
            "invalid_request_error",
            "conversation_already_has_active_response",
            `Conversation already has an active response in progress: ${this.#response.id}. Wait until the response is finished before creating a new one.`,
            null,
            event,
          );
        }
        return void this.#respond();
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

  #updateSession(update: SessionConfig, eventId: string | undefined): void {
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
          { event_id: eventId },
        );
      }
    }
    const current = this.#session;
    this.#session = {
      ...current,
      ...update,
      audio: {
        input: { ...current.audio?.input, ...update.audio?.input },
        output: { ...current.audio?.output, ...update.audio?.output },
      },
    };
    this.#detector = this.#makeDetector();
    this.#send({ type: "session.updated", session: this.#sessionObject() });
  }

  #makeDetector(): EnergyTurnDetector | null {
    const td = this.#session.audio?.input?.turn_detection;
    if (!td) return null;
    return new EnergyTurnDetector({
      threshold: td.threshold ?? DEFAULT_TURN_DETECTION.threshold,
      silenceDurationMs: td.silence_duration_ms ?? DEFAULT_TURN_DETECTION.silence_duration_ms,
    });
  }

  #turnDetection() {
    return { ...DEFAULT_TURN_DETECTION, ...this.#session.audio?.input?.turn_detection };
  }

  #sessionObject() {
    return { ...this.#session, id: this.#sessionId, object: "realtime.session" };
  }

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
    const td = this.#turnDetection();
    if (turn.type === "speech_started") {
      const startMs = Math.max(samplesToMs(this.#committedSamples), turn.onsetMs - td.prefix_padding_ms);
      this.#speechStartSample = Math.round((startMs * PCM_SAMPLE_RATE) / 1000);
      this.#pendingUserItemId = newId("item");
      this.#send({
        type: "input_audio_buffer.speech_started",
        audio_start_ms: Math.round(startMs),
        item_id: this.#pendingUserItemId,
      });
      if (td.interrupt_response && this.#response) this.#cancel("turn_detected");
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
    if (td.create_response && !this.#response) void this.#respond();
  }

  /** Commits input audio [from, to) as a user item; keeps the utterance for an echo reply. */
  #commit(itemId: string, from: number, to: number): void {
    const start = Math.max(from, this.#inputSamples - INPUT_CAPACITY_SAMPLES, 0);
    const utterance = new Int16Array(Math.max(0, to - start));
    for (let i = 0; i < utterance.length; i++)
      utterance[i] = this.#input[(start + i) % INPUT_CAPACITY_SAMPLES]!;
    this.#lastUtterance = utterance;
    this.#lastUtteranceMs = samplesToMs(utterance.length);
    this.#committedSamples = this.#inputSamples;
    this.#pendingUserItemId = null;
    const previous = this.#lastItemId;
    this.#addItem({ id: itemId, role: "user", audioSamples: 0, hasAudio: false });
    this.#send({ type: "input_audio_buffer.committed", previous_item_id: previous, item_id: itemId });
    const item = {
      id: itemId,
      type: "message",
      object: "realtime.item",
      status: "completed",
      role: "user",
      content: [{ type: "input_audio", transcript: null }],
    };
    this.#send({ type: "conversation.item.added", previous_item_id: previous, item });
    this.#send({ type: "conversation.item.done", previous_item_id: previous, item });
  }

  #addItem(item: ConversationItem): void {
    this.#items.set(item.id, item);
    this.#lastItemId = item.id;
    if (this.#items.size > MAX_ITEMS) this.#items.delete(this.#items.keys().next().value!);
  }

  #truncate(event: Extract<ClientEvent, { type: "conversation.item.truncate" }>): void {
    const item = this.#items.get(event.item_id);
    if (!item) {
      return this.#error(
        "invalid_request_error",
        "item_truncate_invalid_item_id",
        `Item with item_id not found: ${event.item_id}`,
        "item_id",
        event,
      );
    }
    if (item.role !== "assistant" || !item.hasAudio || event.content_index !== 0) {
      return this.#error(
        "invalid_request_error",
        "invalid_value",
        "Only the audio content (content_index 0) of an assistant message can be truncated.",
        item.role !== "assistant" ? "item_id" : "content_index",
        event,
      );
    }
    const audioMs = Math.floor(samplesToMs(item.audioSamples));
    if (event.audio_end_ms > audioMs) {
      return this.#error(
        "invalid_request_error",
        "invalid_value",
        `Audio content of ${audioMs}ms is already shorter than ${event.audio_end_ms}ms`,
        "audio_end_ms",
        event,
      );
    }
    item.audioSamples = Math.round((event.audio_end_ms * PCM_SAMPLE_RATE) / 1000);
    this.#send({
      type: "conversation.item.truncated",
      item_id: item.id,
      content_index: 0,
      audio_end_ms: event.audio_end_ms,
    });
  }

  async #respond(): Promise<void> {
    const response: ActiveResponse = {
      id: newId("resp"),
      itemId: newId("item"),
      timer: undefined,
      cancelled: false,
    };
    this.#response = response;
    const responseObject = (status: string, output: object[], details: object | null = null) => ({
      id: response.id,
      object: "realtime.response",
      status,
      status_details: details,
      output,
      conversation_id: "conv_earshot",
      output_modalities: ["audio"],
      audio: { output: { format: { type: "audio/pcm", rate: PCM_SAMPLE_RATE }, voice: "espeak" } },
      usage: null,
    });
    this.#send({ type: "response.created", response: responseObject("in_progress", []) });

    let audio: Int16Array;
    let transcript = "";
    const echo = this.#options.reply === "echo" && this.#lastUtterance && this.#lastUtterance.length > 0;
    try {
      if (echo) {
        audio = this.#lastUtterance!;
      } else {
        transcript = this.#lastUtterance
          ? `I heard you speak for about ${(this.#lastUtteranceMs / 1000).toFixed(1)} seconds. I am Earshot's built-in agent. Set INFERENCE_URL to talk to a real model.`
          : "Hello! I am Earshot's built-in agent. Say something and I will answer.";
        audio = await this.#options.tts.speak(transcript);
      }
    } catch (error) {
      this.#options.log?.warn({ err: error }, "agent TTS failed");
      if (this.#response !== response) return;
      this.#response = null;
      this.#send({
        type: "response.done",
        response: responseObject("failed", [], {
          type: "failed",
          error: { type: "server_error", code: "tts_failed" },
        }),
      });
      return;
    }
    if (this.#closed || response.cancelled) return;

    const itemId = response.itemId;
    const previous = this.#lastItemId;
    const item: ConversationItem = { id: itemId, role: "assistant", audioSamples: 0, hasAudio: true };
    this.#addItem(item);
    const itemObject = (status: string, finalTranscript: string | null) => ({
      id: itemId,
      type: "message",
      object: "realtime.item",
      status,
      role: "assistant",
      content: finalTranscript === null ? [] : [{ type: "output_audio", transcript: finalTranscript }],
    });
    const ref = { response_id: response.id, item_id: itemId, output_index: 0, content_index: 0 };
    this.#send({
      type: "response.output_item.added",
      response_id: response.id,
      output_index: 0,
      item: itemObject("in_progress", null),
    });
    this.#send({
      type: "conversation.item.added",
      previous_item_id: previous,
      item: itemObject("in_progress", null),
    });
    this.#send({
      type: "response.content_part.added",
      ...ref,
      part: { type: "output_audio", transcript: "" },
    });

    const words = transcript ? transcript.split(" ") : [];
    const chunks = Math.ceil(audio.length / DELTA_SAMPLES);
    let chunk = 0;
    let wordsSent = 0;
    const intervalMs = (samplesToMs(DELTA_SAMPLES) / this.#options.speed) | 0;

    const finish = () => {
      this.#response = null;
      this.#send({ type: "response.output_audio.done", ...ref });
      if (transcript) this.#send({ type: "response.output_audio_transcript.done", ...ref, transcript });
      this.#send({ type: "response.content_part.done", ...ref, part: { type: "output_audio", transcript } });
      const done = itemObject("completed", transcript);
      this.#send({
        type: "response.output_item.done",
        response_id: response.id,
        output_index: 0,
        item: done,
      });
      this.#send({ type: "conversation.item.done", previous_item_id: previous, item: done });
      this.#send({ type: "response.done", response: responseObject("completed", [done]) });
    };

    const sendChunk = () => {
      response.timer = undefined;
      if (this.#closed || response.cancelled) return;
      const pcm = audio.subarray(chunk * DELTA_SAMPLES, (chunk + 1) * DELTA_SAMPLES);
      item.audioSamples += pcm.length;
      // Spread the transcript over the audio, as the model emits it alongside.
      const wordsDue = Math.ceil((words.length * (chunk + 1)) / chunks);
      if (wordsDue > wordsSent) {
        const delta = (wordsSent > 0 ? " " : "") + words.slice(wordsSent, wordsDue).join(" ");
        wordsSent = wordsDue;
        this.#send({ type: "response.output_audio_transcript.delta", ...ref, delta });
      }
      this.#send({
        type: "response.output_audio.delta",
        ...ref,
        delta: Buffer.from(pcm.buffer, pcm.byteOffset, pcm.byteLength).toString("base64"),
      });
      chunk++;
      if (chunk >= chunks) return finish();
      response.timer = setTimeout(sendChunk, intervalMs);
    };
    sendChunk();
  }

  #cancel(reason: "client_cancelled" | "turn_detected"): void {
    const response = this.#response;
    if (!response) return;
    response.cancelled = true;
    if (response.timer) clearTimeout(response.timer);
    this.#response = null;
    const item = this.#items.get(response.itemId);
    const output = item
      ? [
          {
            id: item.id,
            type: "message",
            object: "realtime.item",
            status: "incomplete",
            role: "assistant",
            content: [],
          },
        ]
      : [];
    if (item) {
      this.#send({
        type: "response.output_item.done",
        response_id: response.id,
        output_index: 0,
        item: output[0],
      });
    }
    this.#send({
      type: "response.done",
      response: {
        id: response.id,
        object: "realtime.response",
        status: "cancelled",
        status_details: { type: "cancelled", reason },
        output,
        usage: null,
      },
    });
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
