// The relay process's side of ICE-TCP: every call's passive TCP candidate names the one port
// RELAY_TCP_PORT (werift patch 035, `iceTcpMux`), and each connection a TcpFront accepted (here,
// or in the supervisor, which passes it over IPC) is handed to the call whose ufrag its first
// STUN request names. werift then owns the connection: framing, STUN, DTLS, SRTP, and ending the
// call's ICE when the selected connection closes.
//
// The front has checked the ufrag's tag, not the request's MESSAGE-INTEGRITY: that is the call's
// ICE password, which only the call knows. werift answers a request at once if and only if it
// authenticates (patch 009), so a connection the call has written nothing to once its first
// frame was handled is closed: a forged request with a live call's ufrag binds nothing.
import type { Socket } from "node:net";
import type { IceTcpMux, TcpPassiveProtocol } from "werift";

type Address = readonly [host: string, port: number];

/** TCP connections one call may hold at once (werift keeps one per remote address). */
export const MAX_CONNECTIONS_PER_CALL = 8;

export interface TcpMuxStats {
  /** Connections handed to a call that answered them. */
  adopted: number;
  /** Connections closed: no live call has the ufrag. */
  unknownUfrag: number;
  /** Connections closed: the call did not answer the first request (it did not authenticate). */
  unanswered: number;
  /** Connections closed: the call already holds MAX_CONNECTIONS_PER_CALL. */
  overLimit: number;
  /** Ufrags routed and connections held now. */
  ufrags: number;
  connections: number;
}

interface Route {
  protocol: TcpPassiveProtocol;
  ufrags: string[];
  connections: number;
}

export class TcpMux implements IceTcpMux {
  /** Advertised in the passive candidate: the media address and the port clients connect to. */
  readonly localAddress: Address;
  readonly #byUfrag = new Map<string, Route>();
  readonly #routes = new Map<TcpPassiveProtocol, Route>();
  #adopted = 0;
  #unknownUfrag = 0;
  #unanswered = 0;
  #overLimit = 0;
  #connections = 0;

  constructor(host: string, port: number) {
    this.localAddress = [host, port];
  }

  get port(): number {
    return this.localAddress[1];
  }

  get stats(): TcpMuxStats {
    return {
      adopted: this.#adopted,
      unknownUfrag: this.#unknownUfrag,
      unanswered: this.#unanswered,
      overLimit: this.#overLimit,
      ufrags: this.#byUfrag.size,
      connections: this.#connections,
    };
  }

  addUfrag(ufrag: string, protocol: TcpPassiveProtocol): void {
    if (this.#byUfrag.has(ufrag)) return;
    let route = this.#routes.get(protocol);
    if (!route) this.#routes.set(protocol, (route = { protocol, ufrags: [], connections: 0 }));
    this.#byUfrag.set(ufrag, route);
    route.ufrags.push(ufrag);
  }

  remove(protocol: TcpPassiveProtocol): void {
    const route = this.#routes.get(protocol);
    if (!route) return;
    this.#routes.delete(protocol);
    for (const ufrag of route.ufrags) this.#byUfrag.delete(ufrag);
    route.ufrags.length = 0;
  }

  /**
   * A connection whose first frame (in `received`, with anything read after it) is a Binding
   * request naming `ufrag`. The call takes it over, or it is closed.
   */
  accept(socket: Socket, received: Buffer, ufrag: string): void {
    socket.on("error", () => {});
    const route = this.#byUfrag.get(ufrag);
    if (!route) {
      this.#unknownUfrag++;
      socket.destroy();
      return;
    }
    if (route.connections >= MAX_CONNECTIONS_PER_CALL) {
      this.#overLimit++;
      socket.destroy();
      return;
    }
    route.connections++;
    this.#connections++;
    socket.once("close", () => {
      route.connections--;
      this.#connections--;
    });
    socket.setNoDelay(true);
    route.protocol.adoptSocket(socket, received);
    socket.resume();
    // werift handles the request in adoptSocket and writes its response within the same turn
    // of the event loop (a chain of resolved promises), so by the next turn it has or never will.
    setImmediate(() => {
      if (socket.destroyed) return;
      if (socket.bytesWritten > 0) {
        this.#adopted++;
        return;
      }
      this.#unanswered++;
      socket.destroy();
    });
  }
}
