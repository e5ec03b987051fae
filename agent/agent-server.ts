// The built-in agent as a WebSocket server speaking the OpenAI Realtime protocol: what
// `npm start` talks to when no INFERENCE_URL is configured, and the upstream in every relay test.
// Any path is accepted (`/v1/realtime?model=…` like OpenAI's); `?reply=echo|speak` picks the
// reply mode for that session, overriding the server's default; `?intent=transcription` starts a
// transcription session, as on OpenAI.
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { WebSocketServer, type WebSocket } from "ws";
import { MAX_UPSTREAM_EVENT_BYTES } from "../protocol/realtime.ts";
import { AgentSession } from "./agent-session.ts";
import { type AgentConfig, ReplyMode } from "./config.ts";
import { SpeechSynthesizer } from "./tts.ts";

export interface AgentServerOptions extends Partial<AgentConfig> {
  /** Each session logs through a child of it; silent when absent (tests). */
  log?: Logger;
}

export class AgentServer {
  readonly #wss: WebSocketServer;
  readonly #sessions = new Set<AgentSession>();
  readonly tts = new SpeechSynthesizer();
  #closed: Promise<void> | null = null;

  private constructor(wss: WebSocketServer, options: AgentServerOptions) {
    this.#wss = wss;
    const defaultReply = options.reply ?? "speak";
    const speed = options.speed ?? 4;
    let sessions = 0;
    wss.on("connection", (socket: WebSocket, request) => {
      const params = new URL(request.url ?? "/", "ws://agent").searchParams;
      const query = params.get("reply");
      const chosen = ReplyMode.safeParse(query);
      const session = new AgentSession({
        reply: chosen.success ? chosen.data : defaultReply,
        speed,
        intent: params.get("intent") === "transcription" ? "transcription" : "realtime",
        tts: this.tts,
        log: options.log?.child({ session: ++sessions }),
        send: (event) => {
          if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(event));
        },
      });
      this.#sessions.add(session);
      socket.on("message", (data, isBinary) => {
        if (isBinary) {
          socket.send(
            JSON.stringify({
              type: "error",
              event_id: "event_binary",
              error: {
                type: "invalid_request_error",
                code: "invalid_event",
                message: "Events are JSON text frames.",
                param: null,
                event_id: null,
              },
            }),
          );
          return;
        }
        session.onMessage(data.toString());
      });
      socket.on("close", () => {
        session.close();
        this.#sessions.delete(session);
      });
      socket.on("error", () => socket.terminate());
    });
  }

  static async start(options: AgentServerOptions = {}): Promise<AgentServer> {
    const wss = new WebSocketServer({
      host: options.host ?? "127.0.0.1",
      port: options.port ?? 0,
      maxPayload: MAX_UPSTREAM_EVENT_BYTES,
    });
    await new Promise<void>((resolve, reject) => {
      wss.once("listening", resolve);
      wss.once("error", reject);
    });
    return new AgentServer(wss, options);
  }

  get port(): number {
    return (this.#wss.address() as AddressInfo).port;
  }

  /** ws://127.0.0.1:<port>/v1/realtime */
  get url(): string {
    return `ws://127.0.0.1:${this.port}/v1/realtime`;
  }

  /** Drops every client connection (tests: an upstream that vanishes mid-call). */
  dropConnections(): void {
    for (const client of this.#wss.clients) client.terminate();
  }

  get connections(): number {
    return this.#wss.clients.size;
  }

  /** Safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      for (const session of this.#sessions) session.close();
      this.#sessions.clear();
      for (const client of this.#wss.clients) client.terminate();
      this.#wss.close(() => resolve());
    });
    return this.#closed;
  }
}
