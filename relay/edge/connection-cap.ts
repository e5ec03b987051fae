// The HTTP API's connection cap (RELAY_HTTP_MAX_CONNECTIONS). Node's own `maxConnections` refuses
// the newcomer, so a few hundred slow or silent connections would lock the edge out until their
// header timeout; here the newcomer takes the place of the oldest connection that has no request
// in progress (still sending headers, or idle between keep-alive requests). A request the relay is
// handling is never cut; with every connection busy, the newcomer is closed.
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Socket } from "node:net";

export class ConnectionCap {
  readonly #max: number;
  readonly #onShed: () => void;
  /** Open connections, oldest first (a Map iterates in insertion order), with their requests in progress. */
  readonly #open = new Map<Socket, { requests: number }>();

  constructor(server: Server, max: number, onShed: () => void = () => {}) {
    this.#max = max;
    this.#onShed = onShed;
    // The TCP socket, before TLS: a connection stuck in its handshake counts too.
    server.on("connection", (socket: Socket) => this.#admit(socket));
  }

  get size(): number {
    return this.#open.size;
  }

  /** Marks the request's connection busy until the response is done. */
  track(req: IncomingMessage, res: ServerResponse): void {
    const entry = this.#open.get(tcpSocketOf(req.socket));
    if (!entry) return;
    entry.requests++;
    res.once("close", () => entry.requests--);
  }

  /** An upgraded connection (a sideband WebSocket) is busy for as long as it lives: never shed. */
  hold(socket: Socket): void {
    const entry = this.#open.get(tcpSocketOf(socket));
    if (entry) entry.requests++;
  }

  #admit(socket: Socket): void {
    if (this.#open.size >= this.#max) {
      const idle = this.#oldestIdle();
      this.#onShed();
      if (!idle) {
        socket.destroy();
        return;
      }
      this.#open.delete(idle);
      idle.destroy();
    }
    this.#open.set(socket, { requests: 0 });
    socket.once("close", () => this.#open.delete(socket));
  }

  #oldestIdle(): Socket | undefined {
    for (const [socket, entry] of this.#open) if (entry.requests === 0) return socket;
    return undefined;
  }
}

/** An HTTPS request's socket is the TLSSocket wrapping the TCP one that `connection` saw. */
function tcpSocketOf(socket: Socket): Socket {
  return (socket as Socket & { _parent?: Socket })._parent ?? socket;
}
