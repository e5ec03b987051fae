// A sideband as an app server opens one, on plain `ws`: straight on a relay (with a ticket signed
// here) or through the edge (with an API key). Records the events it gets and how it was closed;
// `pause()` stops reading, as a server that has stopped reading its socket does.
import { WebSocket } from "ws";
import { TICKET_HEADER } from "../../protocol/relay-api.ts";
import { sidebandPath } from "../../protocol/sideband.ts";
import { EventLog, withTimeout } from "./loopback.ts";
import { bootIdOf, sidebandTicketFor } from "./relay-api.ts";

export type SidebandEvent = { type: string; [key: string]: unknown };

export class SidebandClient {
  readonly socket: WebSocket;
  readonly log = new EventLog<SidebandEvent>();
  readonly events = this.log.events;
  /** Raw text frames, in order. */
  readonly frames: string[] = [];
  readonly opened: Promise<void>;
  /** The close code and reason, once closed. */
  readonly closed: Promise<{ code: number; reason: string }>;
  /** Set when the upgrade was refused: the HTTP status and body. */
  refusal: { status: number; body: string } | undefined;

  constructor(url: string, headers: Record<string, string>, protocols: string[] = []) {
    this.socket = new WebSocket(url, protocols, { headers, perMessageDeflate: false });
    this.socket.on("message", (data) => {
      const text = String(data);
      this.frames.push(text);
      this.log.push(JSON.parse(text) as SidebandEvent);
    });
    this.opened = new Promise((resolve, reject) => {
      this.socket.once("open", () => resolve());
      this.socket.once("unexpected-response", (_req, res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (body += chunk));
        res.on("end", () => {
          this.refusal = { status: res.statusCode ?? 0, body };
          reject(new Error(`sideband refused: ${res.statusCode} ${body}`));
        });
      });
      this.socket.once("error", reject);
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) =>
      this.socket.once("close", (code, reason) => resolve({ code, reason: String(reason) })),
    );
  }

  /** Straight on a relay: GET /calls/{id}/sideband with a fresh sideband ticket. */
  static async onRelay(
    relayUrl: string,
    callId: string,
    options: { ticket?: string; relayId?: string } = {},
  ): Promise<SidebandClient> {
    const ticket =
      options.ticket ?? (await sidebandTicketFor(callId, { bootId: await bootIdOf(relayUrl), ...options }));
    return new SidebandClient(`${relayUrl.replace(/^http/, "ws")}${sidebandPath(callId)}`, {
      [TICKET_HEADER]: ticket,
    });
  }

  /** Through the edge, as OpenAI's clients attach: GET /v1/realtime?call_id=… with an API key. */
  static viaEdge(edgeUrl: string, callId: string, apiKey: string): SidebandClient {
    return new SidebandClient(
      `${edgeUrl.replace(/^http/, "ws")}/v1/realtime?call_id=${encodeURIComponent(callId)}`,
      { authorization: `Bearer ${apiKey}` },
    );
  }

  send(event: object | string): void {
    this.socket.send(typeof event === "string" ? event : JSON.stringify(event));
  }

  waitFor(type: string, predicate: (e: SidebandEvent) => boolean = () => true, timeoutMs = 10_000) {
    return this.log.waitFor(type, predicate, { timeoutMs });
  }

  /** Stops reading from the socket: what the relay sends piles up. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  async close(): Promise<void> {
    if (this.socket.readyState === WebSocket.CLOSED) return;
    this.socket.close();
    await withTimeout(this.closed, 5000, "sideband close").catch(() => this.socket.terminate());
  }
}
