// A Realtime upstream standing in for OpenAI where a test needs the model to call a tool: a real
// WebSocket server the relay's bridge connects to. Its script, per session:
//   - session.update merges into the session and is answered with session.updated;
//   - response.create, while the session declares a function tool and the conversation has no
//     function_call_output yet: the model calls the first tool (function_call_arguments.delta,
//     .done, output_item.done, response.done);
//   - any other response.create: the model speaks a tone: the `hz` of a function_call_output's
//     JSON added since its last reply, or else the `tone:<hz>` in the session's instructions
//     (440 Hz without), so a test can hear which answer or which instructions the model used;
//   - conversation.item.create is kept and answered with conversation.item.created;
//   - a spoken reply ends with its item (transcript `tone <hz>`) in response.output_item.done;
//   - every response.done carries USAGE.
// It records every event it receives with its arrival time, and `inject` sends any event.
import { performance } from "node:perf_hooks";
import { WebSocketServer, type WebSocket } from "ws";
import { sine } from "./audio.ts";

export interface ModelSession {
  socket: WebSocket;
  session: Record<string, unknown>;
  items: Record<string, unknown>[];
  /** A tool's answer not yet used in a reply. */
  pendingOutput: Record<string, unknown> | undefined;
  received: { type: string; at: number; event: Record<string, unknown> }[];
}

const TONE_MS = 1200;
/** Every response's usage, in OpenAI's shape, so a test can check what a call's usage sums to. */
export const USAGE = {
  total_tokens: 30,
  input_tokens: 20,
  output_tokens: 10,
  input_token_details: { cached_tokens: 4, text_tokens: 12, audio_tokens: 8 },
  output_token_details: { text_tokens: 3, audio_tokens: 7 },
};
const CHUNK_MS = 100;
let counter = 0;
const id = (prefix: string) => `${prefix}_scripted${(++counter).toString(36)}`;

export class ScriptedModel {
  readonly sessions: ModelSession[] = [];
  readonly #server: WebSocketServer;
  #waiters = new Set<() => void>();

  private constructor(server: WebSocketServer) {
    this.#server = server;
    server.on("connection", (socket) => this.#accept(socket));
  }

  static async start(): Promise<ScriptedModel> {
    const server = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      server.once("listening", resolve);
      server.once("error", reject);
    });
    return new ScriptedModel(server);
  }

  get url(): string {
    const address = this.#server.address();
    if (typeof address === "string" || !address) throw new Error("not listening");
    return `ws://127.0.0.1:${address.port}/v1/realtime`;
  }

  /** Sends `event` as the model on the newest session. */
  inject(event: Record<string, unknown>, session = this.sessions.at(-1)): void {
    session?.socket.send(JSON.stringify({ event_id: id("event"), ...event }));
  }

  /** The first received event of `type` (newest session) matching, once it arrives. */
  async received(
    type: string,
    predicate: (event: Record<string, unknown>) => boolean = () => true,
    timeoutMs = 10_000,
  ): Promise<{ type: string; at: number; event: Record<string, unknown> }> {
    const find = () => this.sessions.at(-1)?.received.find((r) => r.type === type && predicate(r.event));
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = find();
        if (!found) return;
        this.#waiters.delete(check);
        clearTimeout(timer);
        resolve(found);
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`the model did not receive ${type}`));
      }, timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  async close(): Promise<void> {
    for (const s of this.sessions) s.socket.terminate();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(socket: WebSocket): void {
    const model: ModelSession = {
      socket,
      session: { type: "realtime" },
      items: [],
      pendingOutput: undefined,
      received: [],
    };
    this.sessions.push(model);
    const send = (event: Record<string, unknown>) => {
      if (socket.readyState === socket.OPEN) socket.send(JSON.stringify({ event_id: id("event"), ...event }));
    };
    send({ type: "session.created", session: model.session });
    socket.on("message", (data) => {
      const text = String(data);
      if (text.startsWith('{"type":"input_audio_buffer.append"')) return;
      const event = JSON.parse(text) as Record<string, unknown>;
      model.received.push({ type: String(event.type), at: performance.now(), event });
      for (const wake of this.#waiters) wake();
      switch (event.type) {
        case "session.update":
          model.session = { ...model.session, ...(event.session as object) };
          send({ type: "session.updated", session: model.session });
          return;
        case "conversation.item.create": {
          const item: Record<string, unknown> = { id: id("item"), ...(event.item as object) };
          model.items.push(item);
          if (item.type === "function_call_output") model.pendingOutput = item;
          send({ type: "conversation.item.created", previous_item_id: null, item });
          return;
        }
        case "response.create":
          void this.#respond(model, send);
          return;
      }
    });
  }

  async #respond(model: ModelSession, send: (event: Record<string, unknown>) => void): Promise<void> {
    const responseId = id("resp");
    const tools = (model.session.tools ?? []) as { type: string; name: string }[];
    const tool = tools.find((t) => t.type === "function");
    const answered = model.items.some((i) => i.type === "function_call_output");
    send({ type: "response.created", response: { id: responseId, status: "in_progress" } });
    if (tool && !answered) {
      const item = { id: id("item"), type: "function_call", call_id: id("call"), name: tool.name };
      const args = JSON.stringify({ city: "Paris" });
      send({ type: "response.output_item.added", response_id: responseId, output_index: 0, item });
      const ref = { response_id: responseId, item_id: item.id, output_index: 0, call_id: item.call_id };
      send({ type: "response.function_call_arguments.delta", ...ref, delta: args });
      send({ type: "response.function_call_arguments.done", ...ref, name: tool.name, arguments: args });
      send({
        type: "response.output_item.done",
        response_id: responseId,
        output_index: 0,
        item: { ...item, arguments: args, status: "completed" },
      });
      send({ type: "response.done", response: { id: responseId, status: "completed", usage: USAGE } });
      return;
    }
    const hz = toneOf(model);
    const itemId = id("item");
    const ref = { response_id: responseId, item_id: itemId, output_index: 0, content_index: 0 };
    const pcm = sine(hz, TONE_MS, 8000);
    const perChunk = (24_000 * CHUNK_MS) / 1000;
    const start = performance.now();
    for (let i = 0, n = 0; i < pcm.length; i += perChunk, n++) {
      const chunk = pcm.subarray(i, i + perChunk);
      send({
        type: "response.output_audio.delta",
        ...ref,
        delta: Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("base64"),
      });
      // Twice real time, as a model streams ahead of playback.
      const wait = start + ((n + 1) * CHUNK_MS) / 2 - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    send({ type: "response.output_audio.done", ...ref });
    // The reply's transcript names its tone, so a test can see which replies a session knows of.
    const item = {
      id: itemId,
      type: "message",
      role: "assistant",
      status: "completed",
      content: [{ type: "output_audio", transcript: `tone ${hz}` }],
    };
    model.items.push(item);
    send({ type: "response.output_item.done", response_id: responseId, output_index: 0, item });
    send({ type: "response.done", response: { id: responseId, status: "completed", usage: USAGE } });
  }
}

/** The reply's pitch: a new tool answer's `hz`, else the instructions' `tone:<hz>`, else 440. */
function toneOf(model: ModelSession): number {
  const output = model.pendingOutput;
  model.pendingOutput = undefined;
  if (output) {
    try {
      const hz = (JSON.parse(String(output.output)) as { hz?: unknown }).hz;
      if (typeof hz === "number") return hz;
    } catch {
      // not JSON: fall through to the instructions
    }
  }
  const match = /tone:(\d+)/.exec(String(model.session.instructions ?? ""));
  return match ? Number(match[1]) : 440;
}
