// A Realtime-protocol upstream for benchmarks: a real WebSocket server the relay's inference
// bridge connects to (INFERENCE_URL). It plays the model's part in three ways:
//   stream  – the assistant talks all the time: real-time 100 ms deltas, a new reply every 5 s
//             (and at once after a response.cancel), for capacity runs;
//   reply   – one reply of `replyMs` at session start, sent `speed`× faster than real time, for
//             setup (first audio) and barge-in;
//   silent  – says nothing.
// It records what it received (appends, cancels, truncates) with their arrival times, and can
// send input_audio_buffer.speech_started on request, so barge-in is timed on one clock.
// Runnable on its own: `npx node bench/lib/bench-upstream.ts stream [--stagger]` prints `{"url":…}`.
import { performance } from "node:perf_hooks";
import { WebSocketServer, type WebSocket } from "ws";

export type UpstreamMode = "stream" | "reply" | "silent";

export interface UpstreamOptions {
  mode: UpstreamMode;
  replyMs?: number;
  speed?: number;
  toneHz?: number;
  /**
   * "stream" only: spread the calls' deltas over the 100 ms period (10 ms slots, each call in
   * its own), turn replies over at different times and send one chunk of lead, as a model's
   * deltas for different calls would arrive. Off by default: the relay measured worse this way
   * (bench/README.md, session 2) and why is not understood yet.
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
}

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
    if (this.#timer) clearInterval(this.#timer);
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
    };
    this.sessions.push(session);
    const send = (event: object) => socket.send(JSON.stringify(event));
    send({ type: "session.created", event_id: id("event"), session: { type: "realtime" } });
    let started = false;
    socket.on("message", (data) => {
      const text = String(data);
      if (text.startsWith('{"type":"input_audio_buffer.append"')) {
        session.appends++;
        return;
      }
      const event = JSON.parse(text) as Record<string, unknown>;
      session.received.push({ type: String(event.type), at: performance.now(), event });
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
    socket.on("close", () => this.#streaming.delete(session));
    socket.on("error", () => this.#streaming.delete(session));
  }

  #begin(session: UpstreamSession): void {
    switch (this.#options.mode) {
      case "silent":
        return;
      case "stream":
        this.#newReply(session);
        if (this.#options.stagger) {
          session.slot = this.#streaming.size % SLOTS;
          session.chunks = this.#streaming.size % 50;
          this.#lead(session);
        }
        this.#streaming.add(session);
        this.#timer ??= setInterval(
          () => this.#streamTick(),
          this.#options.stagger ? CHUNK_MS / SLOTS : CHUNK_MS,
        );
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

  #streamTick(): void {
    const slot = this.#options.stagger ? this.#streamTicks++ % SLOTS : 0;
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
  const upstream = await BenchUpstream.start({ mode, stagger: process.argv.includes("--stagger") });
  process.stdout.write(`${JSON.stringify({ url: upstream.url })}\n`);
  process.on("SIGTERM", () => void upstream.close().then(() => process.exit(0)));
}
