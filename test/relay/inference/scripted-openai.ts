// A Realtime upstream that answers session events the way OpenAI's server does, for the relay's
// session handling: on connect a `session.created` with OpenAI's default session (as its
// reference shows it), every `session.update` answered in order with a `session.updated`
// echoing the merged, full session or with an `error` naming the event and the parameter.
// What it was sent is recorded, so a test can check what the model was told and in what order.
// It does not speak: `response.create` gets an empty `response.created` and `response.done`.
import type { AddressInfo } from "node:net";
import WebSocket, { WebSocketServer } from "ws";
import { paramProblem } from "../../../protocol/param-problem.ts";
import { SessionConfig } from "../../../protocol/session.ts";
import { mergeSession } from "../../../relay/inference/model-session.ts";

/** OpenAI's session.created for a new WebSocket session (the server events reference). */
export function openAIDefaults(id: string): Record<string, unknown> {
  return {
    type: "realtime",
    object: "realtime.session",
    id,
    model: "gpt-realtime-2025-08-28",
    output_modalities: ["audio"],
    instructions: "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI.",
    tools: [],
    tool_choice: "auto",
    max_output_tokens: "inf",
    tracing: null,
    truncation: "auto",
    prompt: null,
    expires_at: Math.floor(Date.now() / 1000) + 3600,
    audio: {
      input: {
        format: { type: "audio/pcm", rate: 24000 },
        transcription: null,
        noise_reduction: null,
        turn_detection: {
          type: "server_vad",
          threshold: 0.5,
          prefix_padding_ms: 300,
          silence_duration_ms: 200,
          idle_timeout_ms: null,
          create_response: true,
          interrupt_response: true,
        },
      },
      output: { format: { type: "audio/pcm", rate: 24000 }, voice: "marin", speed: 1 },
    },
    include: null,
  };
}

export interface ReceivedEvent {
  type: string;
  event_id?: string;
  session?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface ScriptedConnection {
  socket: WebSocket;
  received: ReceivedEvent[];
  session: Record<string, unknown>;
}

export interface ScriptedOptions {
  /** How long a `session.update` waits for its answer; `"never"` answers none. */
  answerAfterMs?: number | "never";
  /** Refuses an update with this problem (OpenAI would: a voice it does not have, say). */
  refuse?: (session: Record<string, unknown>) => { code: string; message: string; param: string } | null;
  /** Leaves client updates (event ids not the relay's) unanswered. */
  ignoreClientUpdates?: boolean;
}

export class ScriptedOpenAI {
  readonly connections: ScriptedConnection[] = [];
  readonly options: ScriptedOptions;
  readonly #server: WebSocketServer;
  #sessions = 0;

  private constructor(server: WebSocketServer, options: ScriptedOptions) {
    this.#server = server;
    this.options = options;
    server.on("connection", (socket) => this.#accept(socket));
  }

  static async start(options: ScriptedOptions = {}): Promise<ScriptedOpenAI> {
    const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise((resolve) => server.once("listening", resolve));
    return new ScriptedOpenAI(server, options);
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.#server.address() as AddressInfo).port}/v1/realtime?model=gpt-realtime`;
  }

  /** The latest connection's received events of `type`. */
  received(type: string, connection = this.connections.at(-1)): ReceivedEvent[] {
    return connection?.received.filter((e) => e.type === type) ?? [];
  }

  /** Cuts every live connection (TCP reset), as a lost upstream. */
  dropAll(): void {
    for (const c of this.connections) c.socket.terminate();
  }

  async close(): Promise<void> {
    this.dropAll();
    await new Promise((resolve) => this.#server.close(resolve));
  }

  #accept(socket: WebSocket): void {
    const id = `sess_scripted${++this.#sessions}`;
    const connection: ScriptedConnection = { socket, received: [], session: openAIDefaults(id) };
    this.connections.push(connection);
    const send = (event: object) =>
      socket.readyState === WebSocket.OPEN && socket.send(JSON.stringify(event));
    let answering = Promise.resolve();
    send({ type: "session.created", event_id: `event_${id}_0`, session: connection.session });
    socket.on("message", (data) => {
      const event = JSON.parse(String(data)) as ReceivedEvent;
      connection.received.push(event);
      switch (event.type) {
        case "session.update": {
          const fromClient = !String(event.event_id ?? "").startsWith("event_relay_");
          const { answerAfterMs = 0 } = this.options;
          if (answerAfterMs === "never" || (fromClient && this.options.ignoreClientUpdates)) return;
          // Answers keep their order, as OpenAI's do, however long each takes.
          answering = answering.then(async () => {
            if (answerAfterMs > 0) await new Promise((r) => setTimeout(r, answerAfterMs));
            send(this.#answer(connection, event));
          });
          return;
        }
        case "response.create": {
          const response = {
            id: `resp_${connection.received.length}`,
            object: "realtime.response",
            output: [],
          };
          answering = answering.then(() => {
            send({
              type: "response.created",
              event_id: "event_rc",
              response: { ...response, status: "in_progress" },
            });
            send({
              type: "response.done",
              event_id: "event_rd",
              response: { ...response, status: "completed" },
            });
          });
          return;
        }
        default:
          return;
      }
    });
    socket.on("error", () => {});
  }

  #answer(connection: ScriptedConnection, event: ReceivedEvent): object {
    const update = event.session ?? {};
    const parsed = SessionConfig.safeParse(update);
    const refusal = parsed.success
      ? this.options.refuse?.(update)
      : paramProblem(parsed.error, update, "session");
    if (refusal) {
      return {
        type: "error",
        event_id: "event_err",
        error: { type: "invalid_request_error", ...refusal, event_id: event.event_id ?? null },
      };
    }
    connection.session = mergeSession(connection.session as SessionConfig, update as SessionConfig);
    return { type: "session.updated", event_id: "event_su", session: connection.session };
  }
}
