// A Realtime-protocol upstream for benchmarks: a real WebSocket server the relay's inference
// bridge connects to (INFERENCE_URL). It plays the model's part in three ways:
//   converse – a conversation, as OpenAI holds one (capacity's default): server VAD on the
//             appended audio (the built-in agent's energy detector) sends speech_started /
//             speech_stopped, each turn's end gets a reply of `replyMs` with the usual events
//             (committed, item created, response.created, output_item/content_part added, 100 ms
//             audio deltas `speed`× real time with transcript deltas alongside, the .done events,
//             response.done); speech over a reply cancels it unless the session set
//             interrupt_response false (the relay owns barge-in then: it sends response.cancel);
//   stream  – the assistant talks all the time: real-time 100 ms deltas, a new reply every 5 s
//             (and at once after a response.cancel), for capacity runs with `--upstream=stream`;
//   reply   – one reply of `replyMs` at session start, sent `speed`× faster than real time, for
//             setup (first audio) and barge-in;
//   silent  – says nothing.
// It records what it received (appends, cancels, truncates) with their arrival times, and can
// send input_audio_buffer.speech_started on request, so barge-in is timed on one clock.
// Runnable on its own: `npx node bench/lib/bench-upstream.ts converse|stream [--stagger] [--speed=4]`
// prints `{"url":…}`.
import { performance } from "node:perf_hooks";
import { WebSocketServer, type WebSocket } from "ws";
import { EnergyTurnDetector } from "../../agent/energy-turn-detector.ts";
import { FRAME_MS, FRAME_SAMPLES } from "../../relay/media/audio-format.ts";

export type UpstreamMode = "converse" | "stream" | "reply" | "silent";

export interface UpstreamOptions {
  mode: UpstreamMode;
  replyMs?: number;
  speed?: number;
  toneHz?: number;
  /**
   * "stream" only: spread the calls' deltas over the 100 ms period (10 ms slots, each call in
   * its own), turn replies over at different times and send one chunk of lead, as a model's
   * deltas for different calls would arrive. It once measured the relay worse (bench/README.md,
   * session 2): the cause was this upstream's own clock (setInterval drift at 10 ms ticks
   * delivered 79 % of real time on a loaded core, starving the downlink), now drift-free.
   */
  stagger?: boolean;
}

export interface UpstreamSession {
  socket: WebSocket;
  openedAt: number;
  appends: number;
  received: { type: string; at: number; event: Record<string, unknown> }[];
  itemId: string | null;
  responseId: string | null;
  speechStartedAt: number | null;
  /** 100 ms chunks sent of the current reply. */
  chunks: number;
  /** With `stagger`, the 10 ms slot of the chunk period this session's deltas go out in. */
  slot: number;
  /** "converse": the session's server VAD and the reply being streamed, if any. */
  turns?: EnergyTurnDetector;
  inputMs: number;
  replyTimer?: NodeJS.Timeout;
  /** "converse": false once the session asked for interrupt_response false (the relay owns it). */
  interrupts: boolean;
}

/** "converse": what a reply says; one transcript delta per word, spread over the audio. */
const REPLY_WORDS =
  "Sure, here is what I found about that: the next train leaves at ten past four from platform two, and it takes about forty minutes.".split(
    " ",
  );
/** "converse": silence that ends a turn (OpenAI's server VAD default). */
const TURN_SILENCE_MS = 500;

const RATE = 24_000;
const CHUNK_MS = 100;
const SLOTS = 10;

let counter = 0;
const id = (prefix: string) => `${prefix}_bench${(++counter).toString(36)}${process.pid.toString(36)}`;

/** `ms` of a sine at `hz` as base64 PCM16 24 kHz, continuing the phase from `start` samples. */
function toneBase64(hz: number, ms: number, start = 0): string {
  const n = (RATE * ms) / 1000;
  const pcm = new Int16Array(n);
  for (let i = 0; i < n; i++) pcm[i] = Math.round(8000 * Math.sin((2 * Math.PI * hz * (start + i)) / RATE));
  return Buffer.from(pcm.buffer).toString("base64");
}

export class BenchUpstream {
  readonly sessions: UpstreamSession[] = [];
  readonly #server: WebSocketServer;
  readonly #options: Required<UpstreamOptions>;
  readonly #chunk: string;
  #timer: NodeJS.Timeout | undefined;
  #streaming = new Set<UpstreamSession>();

  private constructor(server: WebSocketServer, options: UpstreamOptions) {
    this.#server = server;
    this.#options = { replyMs: 2000, speed: 4, toneHz: 600, stagger: false, ...options };
    // 100 ms of tone is a whole number of cycles at 600 Hz, so chunks join without clicks.
    this.#chunk = toneBase64(this.#options.toneHz, CHUNK_MS);
    server.on("connection", (socket) => this.#accept(socket));
  }

  static async start(options: UpstreamOptions, port = 0): Promise<BenchUpstream> {
    const server = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      server.once("listening", resolve);
      server.once("error", reject);
    });
    return new BenchUpstream(server, options);
  }

  get url(): string {
    const address = this.#server.address();
    if (typeof address === "string" || !address) throw new Error("not listening");
    return `ws://127.0.0.1:${address.port}/v1/realtime`;
  }

  /** Sends speech_started on every open session (or one); returns the send time. */
  speechStarted(session: UpstreamSession): number {
    const at = performance.now();
    session.speechStartedAt = at;
    session.socket.send(
      JSON.stringify({
        type: "input_audio_buffer.speech_started",
        event_id: id("event"),
        audio_start_ms: 0,
        item_id: id("item"),
      }),
    );
    return at;
  }

  async close(): Promise<void> {
    clearTimeout(this.#timer);
    for (const s of this.sessions) s.socket.terminate();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(socket: WebSocket): void {
    const session: UpstreamSession = {
      socket,
      openedAt: performance.now(),
      appends: 0,
      received: [],
      itemId: null,
      responseId: null,
      speechStartedAt: null,
      chunks: 0,
      slot: 0,
      inputMs: 0,
      interrupts: true,
    };
    this.sessions.push(session);
    const send = (event: object) => socket.send(JSON.stringify(event));
    send({ type: "session.created", event_id: id("event"), session: { type: "realtime" } });
    let started = false;
    socket.on("message", (data) => {
      const text = String(data);
      if (text.startsWith('{"type":"input_audio_buffer.append"')) {
        session.appends++;
        if (session.turns) this.#hear(session, text);
        return;
      }
      const event = JSON.parse(text) as Record<string, unknown>;
      session.received.push({ type: String(event.type), at: performance.now(), event });
      if (this.#options.mode === "converse") return this.#converseEvent(session, event);
      if (event.type === "session.update") {
        send({ type: "session.updated", event_id: id("event"), session: { type: "realtime" } });
        if (!started) {
          started = true;
          this.#begin(session);
        }
      } else if (event.type === "response.cancel" && this.#options.mode === "stream") {
        this.#newReply(session);
        if (this.#options.stagger) this.#lead(session);
      }
    });
    const closed = () => {
      this.#streaming.delete(session);
      clearTimeout(session.replyTimer);
    };
    socket.on("close", closed);
    socket.on("error", closed);
  }

  /** "converse": the client events that matter to a conversation. */
  #converseEvent(session: UpstreamSession, event: Record<string, unknown>): void {
    const send = (e: object) => session.socket.send(JSON.stringify({ event_id: id("event"), ...e }));
    switch (event.type) {
      case "session.update": {
        const td = (
          event.session as { audio?: { input?: { turn_detection?: { interrupt_response?: boolean } } } }
        )?.audio?.input?.turn_detection;
        if (td?.interrupt_response === false) session.interrupts = false;
        session.turns ??= new EnergyTurnDetector({ threshold: 0.5, silenceDurationMs: TURN_SILENCE_MS });
        send({ type: "session.updated", session: { type: "realtime" } });
        return;
      }
      case "response.cancel":
        if (session.replyTimer) this.#endReply(session, "cancelled");
        return;
      case "conversation.item.truncate":
        send({
          type: "conversation.item.truncated",
          item_id: event.item_id,
          content_index: 0,
          audio_end_ms: event.audio_end_ms,
        });
        return;
    }
  }

  #scratch = Buffer.alloc(24_000);

  /** "converse": server VAD over one input_audio_buffer.append (its 20 ms frames). */
  #hear(session: UpstreamSession, text: string): void {
    const at = text.indexOf('"audio":"') + 9;
    const bytes = this.#scratch.write(text.slice(at, text.indexOf('"', at)), "base64");
    const pcm = new Int16Array(this.#scratch.buffer, this.#scratch.byteOffset, bytes >> 1);
    const send = (e: object) => session.socket.send(JSON.stringify({ event_id: id("event"), ...e }));
    for (let f = 0; f + FRAME_SAMPLES <= pcm.length; f += FRAME_SAMPLES) {
      const turn = session.turns!.push(pcm.subarray(f, f + FRAME_SAMPLES), session.inputMs);
      session.inputMs += FRAME_MS;
      if (turn?.type === "speech_started") {
        session.itemId = id("item");
        send({
          type: "input_audio_buffer.speech_started",
          audio_start_ms: turn.onsetMs,
          item_id: session.itemId,
        });
        if (session.replyTimer && session.interrupts) this.#endReply(session, "cancelled");
      } else if (turn?.type === "speech_stopped") {
        const item = session.itemId ?? id("item");
        send({ type: "input_audio_buffer.speech_stopped", audio_end_ms: turn.stopMs, item_id: item });
        send({ type: "input_audio_buffer.committed", previous_item_id: null, item_id: item });
        send({
          type: "conversation.item.created",
          previous_item_id: null,
          item: { id: item, type: "message", role: "user", status: "completed", content: [] },
        });
        if (session.replyTimer) this.#endReply(session, "cancelled");
        this.#converseReply(session);
      }
    }
  }

  /** "converse": one reply of `replyMs`, 100 ms deltas at `speed`× real time, words alongside. */
  #converseReply(session: UpstreamSession): void {
    const responseId = id("resp");
    const itemId = id("item");
    session.responseId = responseId;
    session.itemId = itemId;
    const ref = { response_id: responseId, item_id: itemId, output_index: 0, content_index: 0 };
    const send = (e: object) => session.socket.send(JSON.stringify({ event_id: id("event"), ...e }));
    send({
      type: "response.created",
      response: { id: responseId, object: "realtime.response", status: "in_progress" },
    });
    const item = { id: itemId, type: "message", role: "assistant", status: "in_progress", content: [] };
    send({ type: "response.output_item.added", response_id: responseId, output_index: 0, item });
    send({ type: "conversation.item.added", previous_item_id: null, item });
    send({ type: "response.content_part.added", ...ref, part: { type: "audio", transcript: "" } });
    const chunks = Math.ceil(this.#options.replyMs / CHUNK_MS);
    let sent = 0;
    let words = 0;
    const step = () => {
      if (session.socket.readyState !== session.socket.OPEN) return;
      session.socket.send(this.#delta(session, this.#chunk));
      sent++;
      // Words spread over the audio, as the model emits the transcript alongside it.
      for (; words < Math.round((REPLY_WORDS.length * sent) / chunks); words++)
        send({
          type: "response.output_audio_transcript.delta",
          ...ref,
          delta: `${words ? " " : ""}${REPLY_WORDS[words]}`,
        });
      if (sent < chunks) session.replyTimer = setTimeout(step, CHUNK_MS / this.#options.speed);
      else this.#endReply(session, "completed");
    };
    step();
  }

  /** "converse": the reply's closing events; `cancelled` stops it where it is. */
  #endReply(session: UpstreamSession, status: "completed" | "cancelled"): void {
    clearTimeout(session.replyTimer);
    session.replyTimer = undefined;
    const ref = {
      response_id: session.responseId,
      item_id: session.itemId,
      output_index: 0,
      content_index: 0,
    };
    const send = (e: object) => session.socket.send(JSON.stringify({ event_id: id("event"), ...e }));
    const transcript = REPLY_WORDS.join(" ");
    send({ type: "response.output_audio.done", ...ref });
    send({ type: "response.output_audio_transcript.done", ...ref, transcript });
    send({ type: "response.content_part.done", ...ref, part: { type: "audio", transcript } });
    const item = {
      id: session.itemId,
      type: "message",
      role: "assistant",
      status: status === "completed" ? "completed" : "incomplete",
      content: [{ type: "output_audio", transcript }],
    };
    send({ type: "response.output_item.done", response_id: session.responseId, output_index: 0, item });
    send({
      type: "response.done",
      response: { id: session.responseId, object: "realtime.response", status, output: [item] },
    });
  }

  #begin(session: UpstreamSession): void {
    switch (this.#options.mode) {
      case "silent":
      case "converse":
        return;
      case "stream":
        this.#newReply(session);
        if (this.#options.stagger) {
          session.slot = this.#streaming.size % SLOTS;
          session.chunks = this.#streaming.size % 50;
          this.#lead(session);
        }
        this.#streaming.add(session);
        if (!this.#timer) this.#streamClock(this.#options.stagger ? CHUNK_MS / SLOTS : CHUNK_MS);
        return;
      case "reply":
        void this.#reply(session);
        return;
    }
  }

  #newReply(session: UpstreamSession): void {
    if (session.responseId) {
      session.socket.send(
        JSON.stringify({
          type: "response.done",
          event_id: id("event"),
          response: { id: session.responseId, status: "completed" },
        }),
      );
    }
    session.responseId = id("resp");
    session.itemId = id("item");
    session.chunks = 0;
    session.socket.send(
      JSON.stringify({
        type: "response.created",
        event_id: id("event"),
        response: { id: session.responseId, status: "in_progress" },
      }),
    );
  }

  #delta(session: UpstreamSession, delta: string): string {
    return `{"type":"response.output_audio.delta","event_id":"${id("event")}","response_id":"${session.responseId}","item_id":"${session.itemId}","output_index":0,"content_index":0,"delta":"${delta}"}`;
  }

  #streamTicks = 0;

  /** One chunk ahead of real time, as a model streams ahead of playback. */
  #lead(session: UpstreamSession): void {
    if (session.socket.readyState === session.socket.OPEN)
      session.socket.send(this.#delta(session, this.#chunk));
  }

  /**
   * Runs #streamTick every `periodMs` on a drift-free clock: a late timer runs every tick that
   * fell due. (setInterval loses each tick's lateness for good: on a loaded core the staggered
   * 10 ms ticks delivered 79 % of real time, starving the relay's downlink.)
   */
  #streamClock(periodMs: number): void {
    const start = performance.now();
    const run = () => {
      const due = Math.floor((performance.now() - start) / periodMs);
      while (this.#streamTicks < due) this.#streamTick();
      this.#timer = setTimeout(
        run,
        Math.max(0, start + (this.#streamTicks + 1) * periodMs - performance.now()),
      );
    };
    this.#timer = setTimeout(run, periodMs);
  }

  #streamTick(): void {
    const slot = this.#streamTicks++ % (this.#options.stagger ? SLOTS : 1);
    for (const session of this.#streaming) {
      if (session.slot !== slot) continue;
      if (++session.chunks > 50) this.#newReply(session); // a new reply every 5 s
      if (session.socket.readyState === session.socket.OPEN)
        session.socket.send(this.#delta(session, this.#chunk));
    }
  }

  async #reply(session: UpstreamSession): Promise<void> {
    this.#newReply(session);
    const { replyMs, speed } = this.#options;
    const chunks = Math.ceil(replyMs / CHUNK_MS);
    const start = performance.now();
    for (let i = 0; i < chunks; i++) {
      if (session.socket.readyState !== session.socket.OPEN) return;
      session.socket.send(this.#delta(session, this.#chunk));
      const due = start + ((i + 1) * CHUNK_MS) / speed;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }
}

if (import.meta.main) {
  const mode = (process.argv[2] ?? "stream") as UpstreamMode;
  const speed = process.argv.find((a) => a.startsWith("--speed="))?.slice(8);
  const upstream = await BenchUpstream.start({
    mode,
    stagger: process.argv.includes("--stagger"),
    // A conversation's replies: 4 s each (a sentence or two).
    ...(mode === "converse" ? { replyMs: 4000 } : {}),
    ...(speed ? { speed: Number(speed) } : {}),
  });
  process.stdout.write(`${JSON.stringify({ url: upstream.url })}\n`);
  process.on("SIGTERM", () => void upstream.close().then(() => process.exit(0)));
}
