// A stand-in for OpenAI's Realtime WebSocket that calls a tool: a real WebSocket server speaking
// the GA protocol to the relay. Once the session has a function tool and the user's audio is
// flowing, it answers with a function call for that tool; when the client sends the call's
// function_call_output and asks for a response, it speaks a reply that reads the output out
// (eSpeak, the built-in agent's synthesiser), with a transcript to match.
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import WebSocket, { WebSocketServer } from "ws";
import { SpeechSynthesizer } from "../../agent/tts.ts";

type Json = Record<string, unknown>;
interface FunctionTool {
  type: "function";
  name: string;
}

/** Audio appends (40 ms each from the relay) before the scripted model "hears" a question. */
const APPENDS_BEFORE_CALL = 10;
/** 100 ms of 24 kHz PCM16 per audio delta, as OpenAI sends them. */
const DELTA_SAMPLES = 2400;

const id = (prefix: string) => `${prefix}_${randomBytes(8).toString("hex")}`;

export interface ScriptedCall {
  /** The tool the session offered, as the client's session.update named it. */
  tool: string;
  callId: string;
  arguments: string;
  /** The function_call_output the client sent back, once it has. */
  output?: string;
  /** The transcript of the spoken reply, once sent. */
  reply?: string;
}

export class ScriptedUpstream {
  readonly calls: ScriptedCall[] = [];
  /** Every session.update the upstream received, in order (the relay's, then the client's). */
  readonly sessionUpdates: Json[] = [];
  readonly #http: Server;
  readonly #wss = new WebSocketServer({ noServer: true });
  readonly #tts = new SpeechSynthesizer();
  readonly #arguments: (tool: string) => Json;
  url = "";

  /** `args` gives the function call's arguments for the session's tool. */
  constructor(args: (tool: string) => Json) {
    this.#arguments = args;
    this.#http = createServer((_req, res) => res.writeHead(426).end());
    this.#http.on("upgrade", (req, socket, head) =>
      this.#wss.handleUpgrade(req, socket, head, (ws) => this.#serve(ws)),
    );
  }

  static async start(args: (tool: string) => Json): Promise<ScriptedUpstream> {
    const upstream = new ScriptedUpstream(args);
    await new Promise<void>((resolve) => upstream.#http.listen(0, "127.0.0.1", resolve));
    upstream.url = `ws://127.0.0.1:${(upstream.#http.address() as AddressInfo).port}/v1/realtime`;
    return upstream;
  }

  #serve(ws: WebSocket): void {
    const session: Json = { id: id("sess"), object: "realtime.session", type: "realtime", model: "scripted" };
    let tools: FunctionTool[] = [];
    let appends = 0;
    let call: ScriptedCall | undefined;
    const send = (event: Json) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ event_id: id("event"), ...event }));
    };
    send({ type: "session.created", session });
    ws.on("error", () => {});
    ws.on("message", (data) => {
      let event: Json;
      try {
        event = JSON.parse(String(data)) as Json;
      } catch {
        return;
      }
      switch (event.type) {
        case "session.update": {
          this.sessionUpdates.push(event);
          Object.assign(session, event.session as Json);
          const offered = (session.tools as FunctionTool[] | undefined) ?? [];
          tools = offered.filter((tool) => tool.type === "function");
          send({ type: "session.updated", session });
          return;
        }
        case "input_audio_buffer.append":
          if (!call && ++appends >= APPENDS_BEFORE_CALL && tools[0])
            call = this.#callTool(send, tools[0].name);
          return;
        case "conversation.item.create": {
          const item = event.item as Json;
          if (item.type !== "function_call_output" || !call || item.call_id !== call.callId) return;
          call.output = String(item.output);
          const added = { ...item, id: (item.id as string | undefined) ?? id("item"), status: "completed" };
          send({ type: "conversation.item.added", previous_item_id: null, item: added });
          send({ type: "conversation.item.done", previous_item_id: null, item: added });
          return;
        }
        case "response.create":
          if (call?.output !== undefined && call.reply === undefined) {
            call.reply = `Here is what I found. ${call.output}`;
            void this.#speak(send, call.reply);
          }
          return;
        default:
          return;
      }
    });
  }

  /** A response whose one output item is a completed function call, as OpenAI streams it. */
  #callTool(send: (event: Json) => void, tool: string): ScriptedCall {
    const call: ScriptedCall = {
      tool,
      callId: id("call"),
      arguments: JSON.stringify(this.#arguments(tool)),
    };
    this.calls.push(call);
    const responseId = id("resp");
    const itemId = id("item");
    const item = {
      id: itemId,
      object: "realtime.item",
      type: "function_call",
      status: "in_progress",
      name: tool,
      call_id: call.callId,
      arguments: "",
    };
    const done = { ...item, status: "completed", arguments: call.arguments };
    const ref = { response_id: responseId, item_id: itemId, output_index: 0, call_id: call.callId };
    send({
      type: "response.created",
      response: { id: responseId, object: "realtime.response", status: "in_progress", output: [] },
    });
    send({ type: "response.output_item.added", response_id: responseId, output_index: 0, item });
    send({ type: "response.function_call_arguments.delta", ...ref, delta: call.arguments });
    send({ type: "response.function_call_arguments.done", ...ref, name: tool, arguments: call.arguments });
    send({ type: "response.output_item.done", response_id: responseId, output_index: 0, item: done });
    send({
      type: "response.done",
      response: { id: responseId, object: "realtime.response", status: "completed", output: [done] },
    });
    return call;
  }

  /** A spoken assistant message: audio deltas and the transcript, in OpenAI's order. */
  async #speak(send: (event: Json) => void, text: string): Promise<void> {
    const pcm = await this.#tts.speak(text);
    const responseId = id("resp");
    const itemId = id("item");
    const ref = { response_id: responseId, item_id: itemId, output_index: 0, content_index: 0 };
    const message = (status: string, transcript: string | null) => ({
      id: itemId,
      object: "realtime.item",
      type: "message",
      role: "assistant",
      status,
      content: [{ type: "output_audio", transcript }],
    });
    send({
      type: "response.created",
      response: { id: responseId, object: "realtime.response", status: "in_progress", output: [] },
    });
    send({
      type: "response.output_item.added",
      response_id: responseId,
      output_index: 0,
      item: message("in_progress", null),
    });
    send({ type: "conversation.item.added", previous_item_id: null, item: message("in_progress", null) });
    send({ type: "response.content_part.added", ...ref, part: { type: "audio", transcript: "" } });
    send({ type: "response.output_audio_transcript.delta", ...ref, delta: text });
    const bytes = Buffer.from(pcm.buffer, pcm.byteOffset, pcm.byteLength);
    for (let at = 0; at < bytes.length; at += DELTA_SAMPLES * 2) {
      send({
        type: "response.output_audio.delta",
        ...ref,
        delta: bytes.subarray(at, at + DELTA_SAMPLES * 2).toString("base64"),
      });
    }
    send({ type: "response.output_audio.done", ...ref });
    send({ type: "response.output_audio_transcript.done", ...ref, transcript: text });
    send({ type: "response.content_part.done", ...ref, part: { type: "audio", transcript: text } });
    const done = message("completed", text);
    send({ type: "response.output_item.done", response_id: responseId, output_index: 0, item: done });
    send({ type: "conversation.item.done", previous_item_id: null, item: done });
    send({
      type: "response.done",
      response: { id: responseId, object: "realtime.response", status: "completed", output: [done] },
    });
  }

  async close(): Promise<void> {
    for (const ws of this.#wss.clients) ws.terminate();
    this.#wss.close();
    this.#http.closeAllConnections();
    await new Promise((resolve) => this.#http.close(resolve));
  }
}
