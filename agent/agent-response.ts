// One response of the built-in agent, from response.created to response.done: a function call
// (arguments from the tool's schema), a text reply or a spoken one (eSpeak, or the user's own
// audio in echo mode), streamed with OpenAI's GA events. It can be cancelled, and it is cut short
// at max_output_tokens as OpenAI's are.
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import { newId } from "../protocol/realtime.ts";
import { PCM_SAMPLE_RATE, samplesToMs } from "../relay/media/audio-format.ts";
import type { Conversation, RealtimeItem } from "./conversation.ts";
import type { FunctionTool } from "./session-settings.ts";
import { argumentsFor } from "./tool-arguments.ts";
import type { SpeechSynthesizer } from "./tts.ts";
import { CHARS_PER_TOKEN, audioOutputTokens, textTokens, usage } from "./usage.ts";

/** Reply audio per `response.output_audio.delta` (OpenAI sends deltas of similar size). */
const DELTA_SAMPLES = (PCM_SAMPLE_RATE * 100) / 1000;
/** Function-call arguments per `response.function_call_arguments.delta`, in characters. */
const ARGUMENT_DELTA_CHARS = 32;
/** Text replies stream a word per tick, this often at real-time pace (divided by the speed). */
const TEXT_WORD_MS = 50;

/** What a response needs of its session. */
export interface ResponseHost {
  send(event: object): void;
  readonly conversation: Conversation;
  readonly tts: SpeechSynthesizer;
  /** How much faster than real time reply audio is streamed. */
  readonly streamSpeed: number;
  readonly log?: Logger;
  /** The session's instructions and the user audio so far, for `usage`. */
  usageInputs(): { instructions: string; userAudioSamples: number };
  /** Reply audio went out: from now on the voice is fixed. */
  audioProduced(): void;
  /** The response is over; `playbackEndsAt` (performance.now() ms) when it completed. */
  ended(response: AgentResponse, playbackEndsAt: number | null): void;
}

export interface ResponseSettings {
  modalities: ("audio" | "text")[];
  metadata: Record<string, string> | null;
  /** max_output_tokens, as a number; null for "inf". */
  maxTokens: number | null;
  /** What response objects show as max_output_tokens. */
  maxTokensShown: unknown;
  /** `conversation: "none"`: the output stays out of the conversation. */
  outOfBand: boolean;
  voice: unknown;
}

export class AgentResponse {
  readonly id = newId("resp");
  readonly #host: ResponseHost;
  readonly #settings: ResponseSettings;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  /** The output item being produced (null until it exists). */
  #item: RealtimeItem | null = null;
  /** performance.now() of the first audio delta: when the client starts playing the reply. */
  #firstAudioAt: number | null = null;
  #outputText = "";
  #outputAudioSamples = 0;
  /** Cut short at max_output_tokens: the response ends `incomplete`. */
  #truncated = false;

  constructor(host: ResponseHost, settings: ResponseSettings) {
    this.#host = host;
    this.#settings = settings;
  }

  get audio(): boolean {
    return this.#settings.modalities.includes("audio");
  }

  start(): void {
    this.#host.send({ type: "response.created", response: this.#object("in_progress") });
  }

  callTool(tool: FunctionTool): void {
    let args = JSON.stringify(argumentsFor(tool.parameters));
    const max = this.#settings.maxTokens;
    if (max !== null && textTokens(args) > max) {
      args = args.slice(0, max * CHARS_PER_TOKEN);
      this.#truncated = true;
    }
    const callId = `call_${newId("item").slice(5)}`;
    const item: RealtimeItem = {
      id: newId("item"),
      type: "function_call",
      object: "realtime.item",
      status: "in_progress",
      name: tool.name,
      call_id: callId,
      arguments: "",
    };
    this.#item = item;
    this.#outputText = args;
    const ref = { response_id: this.id, item_id: item.id, output_index: 0, call_id: callId };
    this.#host.send({ type: "response.output_item.added", response_id: this.id, output_index: 0, item });
    const previous = this.#addOutput(item);
    for (let at = 0; at < args.length; at += ARGUMENT_DELTA_CHARS)
      this.#host.send({
        type: "response.function_call_arguments.delta",
        ...ref,
        delta: args.slice(at, at + ARGUMENT_DELTA_CHARS),
      });
    this.#host.send({
      type: "response.function_call_arguments.done",
      ...ref,
      name: tool.name,
      arguments: args,
    });
    this.#finish(
      { ...item, status: this.#truncated ? "incomplete" : "completed", arguments: args },
      previous,
    );
  }

  /** A text-only reply (`output_modalities: ["text"]`): output_text deltas, no audio. */
  write(fullText: string): void {
    let text = fullText;
    const max = this.#settings.maxTokens;
    if (max !== null && textTokens(text) > max) {
      text = text.slice(0, max * CHARS_PER_TOKEN);
      this.#truncated = true;
    }
    const { item, ref, previous } = this.#openMessage("text");
    const words = text.split(" ");
    let sent = 0;
    const intervalMs = Math.max(1, (TEXT_WORD_MS / this.#host.streamSpeed) | 0);
    const next = () => {
      this.#timer = undefined;
      if (this.#stopped) return;
      const delta = (sent > 0 ? " " : "") + words[sent++];
      this.#outputText += delta;
      this.#host.send({ type: "response.output_text.delta", ...ref, delta });
      if (sent < words.length) {
        this.#timer = setTimeout(next, intervalMs);
        return;
      }
      this.#host.send({ type: "response.output_text.done", ...ref, text });
      this.#host.send({ type: "response.content_part.done", ...ref, part: { type: "text", text } });
      this.#finish(item(this.#truncated ? "incomplete" : "completed", text), previous);
    };
    next();
  }

  /**
   * Opens the reply's assistant message as OpenAI streams one: output_item.added, then
   * content_part.added for its one part (`output_text`, or `output_audio` with a transcript).
   */
  #openMessage(part: "text" | "audio") {
    const itemId = newId("item");
    const item = (status: string, final: string | null): RealtimeItem => ({
      id: itemId,
      type: "message",
      object: "realtime.item",
      status,
      role: "assistant",
      content:
        final === null
          ? []
          : [
              part === "text"
                ? { type: "output_text", text: final }
                : { type: "output_audio", transcript: final },
            ],
    });
    this.#item = item("in_progress", null);
    const ref = { response_id: this.id, item_id: itemId, output_index: 0, content_index: 0 };
    this.#host.send({
      type: "response.output_item.added",
      response_id: this.id,
      output_index: 0,
      item: this.#item,
    });
    const previous = this.#addOutput(this.#item);
    const empty = part === "text" ? { type: "text", text: "" } : { type: "audio", transcript: "" };
    this.#host.send({ type: "response.content_part.added", ...ref, part: empty });
    return { item, ref, previous };
  }

  /** A spoken reply: `text` by eSpeak at `speed`, or `echo` (the user's own audio) with no transcript. */
  async speak(text: string, echo: Int16Array | null, speed: number): Promise<void> {
    let audio: Int16Array;
    const transcript = echo ? "" : text;
    try {
      audio = echo ?? (await this.#host.tts.speak(transcript, speed));
    } catch (error) {
      this.#host.log?.warn({ err: error }, "agent TTS failed");
      if (this.#stopped) return;
      this.#stopped = true;
      this.#host.send({
        type: "response.done",
        response: this.#object("failed", {
          type: "failed",
          error: { type: "server_error", code: "tts_failed", message: "Speech synthesis failed." },
        }),
      });
      this.#host.ended(this, null);
      return;
    }
    if (this.#stopped) return;

    const { item: itemObject, ref, previous } = this.#openMessage("audio");
    const itemId = ref.item_id;
    const conversation = this.#host.conversation;
    conversation.setAudio(itemId, audio, 0);

    const words = transcript ? transcript.split(" ") : [];
    // The transcript is spread over the whole reply; max_output_tokens may cut both short.
    const wordChunks = Math.ceil(audio.length / DELTA_SAMPLES);
    const fullTokens = textTokens(transcript) + audioOutputTokens(audio.length);
    const max = this.#settings.maxTokens;
    if (max !== null && fullTokens > max) {
      audio = audio.subarray(0, Math.floor((audio.length * max) / fullTokens));
      this.#truncated = true;
    }
    const chunks = Math.ceil(audio.length / DELTA_SAMPLES);
    let chunk = 0;
    let wordsSent = 0;
    const intervalMs = (samplesToMs(DELTA_SAMPLES) / this.#host.streamSpeed) | 0;

    const sendChunk = () => {
      this.#timer = undefined;
      if (this.#stopped) return;
      const pcm = audio.subarray(chunk * DELTA_SAMPLES, (chunk + 1) * DELTA_SAMPLES);
      this.#firstAudioAt ??= performance.now();
      this.#host.audioProduced();
      this.#outputAudioSamples += pcm.length;
      const entry = conversation.get(itemId);
      if (entry) entry.audioSamples = this.#outputAudioSamples;
      // Spread the transcript over the audio, as the model emits it alongside.
      const wordsDue = Math.ceil((words.length * (chunk + 1)) / wordChunks);
      if (wordsDue > wordsSent) {
        const delta = (wordsSent > 0 ? " " : "") + words.slice(wordsSent, wordsDue).join(" ");
        wordsSent = wordsDue;
        this.#outputText += delta;
        this.#host.send({ type: "response.output_audio_transcript.delta", ...ref, delta });
      }
      this.#host.send({
        type: "response.output_audio.delta",
        ...ref,
        delta: Buffer.from(pcm.buffer, pcm.byteOffset, pcm.byteLength).toString("base64"),
      });
      chunk++;
      if (chunk < chunks) {
        this.#timer = setTimeout(sendChunk, intervalMs);
        return;
      }
      const said = this.#truncated ? this.#outputText : transcript;
      this.#host.send({ type: "response.output_audio.done", ...ref });
      if (transcript)
        this.#host.send({ type: "response.output_audio_transcript.done", ...ref, transcript: said });
      this.#host.send({
        type: "response.content_part.done",
        ...ref,
        part: { type: "audio", transcript: said },
      });
      this.#finish(itemObject(this.#truncated ? "incomplete" : "completed", said), previous);
    };
    sendChunk();
  }

  /**
   * Stops the response: as OpenAI does, the open content part and item are closed with what was
   * produced so far (the .done events are "also emitted when a Response is interrupted").
   */
  cancel(reason: "client_cancelled" | "turn_detected"): void {
    if (this.#stopped) return;
    this.stop();
    const item = this.#item;
    if (item) {
      const ref = { response_id: this.id, item_id: item.id, output_index: 0, content_index: 0 };
      const partial = this.#outputText;
      let content = item.content;
      if (item.type === "message" && this.audio) {
        this.#host.send({ type: "response.output_audio.done", ...ref });
        this.#host.send({ type: "response.output_audio_transcript.done", ...ref, transcript: partial });
        this.#host.send({
          type: "response.content_part.done",
          ...ref,
          part: { type: "audio", transcript: partial },
        });
        content = [{ type: "output_audio", transcript: partial }];
      } else if (item.type === "message") {
        this.#host.send({ type: "response.output_text.done", ...ref, text: partial });
        this.#host.send({
          type: "response.content_part.done",
          ...ref,
          part: { type: "text", text: partial },
        });
        content = [{ type: "output_text", text: partial }];
      }
      this.#item = { ...item, status: "incomplete", ...(item.type === "message" ? { content } : {}) };
      this.#host.conversation.update(this.#item);
      this.#host.send({
        type: "response.output_item.done",
        response_id: this.id,
        output_index: 0,
        item: this.#item,
      });
    }
    this.#host.send({
      type: "response.done",
      response: this.#object("cancelled", { type: "cancelled", reason }),
    });
    this.#host.ended(this, null);
  }

  /** Stops sending, without a word (the session is closing). Safe to call twice. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** A response's output item joins the conversation (conversation.item.added), unless out of band. */
  #addOutput(item: RealtimeItem): string | null {
    if (this.#settings.outOfBand) return null;
    const previous = this.#host.conversation.add(item);
    this.#host.send({ type: "conversation.item.added", previous_item_id: previous, item });
    return previous;
  }

  /** The output item's done events and response.done; the reply plays until its audio has played. */
  #finish(item: RealtimeItem, previous: string | null): void {
    this.#stopped = true;
    this.#item = item;
    this.#host.conversation.update(item);
    this.#host.send({ type: "response.output_item.done", response_id: this.id, output_index: 0, item });
    if (!this.#settings.outOfBand)
      this.#host.send({ type: "conversation.item.done", previous_item_id: previous, item });
    this.#host.send({
      type: "response.done",
      response: this.#truncated
        ? this.#object("incomplete", { type: "incomplete", reason: "max_output_tokens" })
        : this.#object("completed"),
    });
    const now = performance.now();
    const playedUntil =
      this.#firstAudioAt === null ? now : this.#firstAudioAt + samplesToMs(this.#outputAudioSamples);
    this.#host.ended(this, Math.max(now, playedUntil));
  }

  #object(status: string, details: object | null = null) {
    const inputs = status === "in_progress" ? null : this.#host.usageInputs();
    return {
      id: this.id,
      object: "realtime.response",
      status,
      status_details: details,
      output: status === "in_progress" || !this.#item ? [] : [this.#item],
      conversation_id: this.#settings.outOfBand ? null : "conv_earshot",
      output_modalities: this.#settings.modalities,
      max_output_tokens: this.#settings.maxTokensShown,
      audio: {
        output: { format: { type: "audio/pcm", rate: PCM_SAMPLE_RATE }, voice: this.#settings.voice },
      },
      metadata: this.#settings.metadata,
      usage: inputs
        ? usage({
            ...inputs,
            outputText: this.#outputText,
            outputAudioSamples: this.audio ? this.#outputAudioSamples : 0,
          })
        : null,
    };
  }
}
