// One UDP socket for every call of this relay process (RELAY_UDP_PORT), in the way of Pion's
// UDPMux and mediasoup's WebRtcServer. werift (patch 030, `iceUdpMux`) gives each call's host
// candidate a view of this socket instead of a socket of its own. A datagram goes to a call:
//   1. by its source address, once that call has sent to the address; else
//   2. for a STUN Binding request, by the local ufrag in its USERNAME; else it is dropped.
// An address is bound when the call first sends to it: a response to a request werift
// authenticated (patch 009), or a check to a candidate the client signalled. So forged STUN, even
// with a live call's ufrag, gets no answer and binds nothing. An address bound to one call is not
// taken over by another. Closing a call's view forgets its ufrags and addresses.
import dgram from "node:dgram";
import type { IceUdpMux, StunProtocol, Transport } from "werift";
import { localUfrag } from "./stun-username.ts";

type Address = readonly [host: string, port: number];

/** SO_RCVBUF asked for the shared socket. */
const RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;

/** Addresses one call may bind: werift keeps at most this many remote candidates per call. */
export const MAX_ADDRESSES_PER_CALL = 32;

export interface UdpMuxStats {
  /** Datagrams routed by the STUN USERNAME's ufrag (first packets of a flow). */
  routedByUfrag: number;
  /** Datagrams from an unbound address that were not a Binding request naming a live ufrag. */
  unroutable: number;
  /** Sends to an address already bound to another call (the address stays with that call). */
  refusedBindings: number;
  /** Ufrags and bound addresses held now. */
  ufrags: number;
  addresses: number;
}

interface Route {
  protocol: StunProtocol;
  ufrags: string[];
  addresses: Address[];
}

export class UdpMux implements IceUdpMux {
  readonly localAddress: Address;
  readonly #socket: dgram.Socket;
  readonly #byUfrag = new Map<string, Route>();
  /** host → port → route: looked up with the strings and numbers Node already made, per packet. */
  readonly #byAddress = new Map<string, Map<number, Route>>();
  readonly #routes = new Map<StunProtocol, Route>();
  #routedByUfrag = 0;
  #unroutable = 0;
  #refusedBindings = 0;
  #addresses = 0;
  #closed: Promise<void> | undefined;

  private constructor(socket: dgram.Socket) {
    this.#socket = socket;
    const { address, port } = socket.address();
    this.localAddress = [address, port];
    socket.on("message", (data, rinfo) => this.#receive(data, rinfo.address, rinfo.port));
  }

  /** Binds the shared socket (port 0: one the OS chooses). Rejects with the bind error. */
  static open(host: string, port: number): Promise<UdpMux> {
    const socket = dgram.createSocket({ type: "udp4" });
    return new Promise((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(port, host, () => {
        socket.off("error", reject);
        // A send error (ICMP unreachable surfacing later, EPERM) must not kill the process.
        socket.on("error", () => {});
        // Every call's packets queue here, not in a socket each: room for a busy event loop's
        // backlog (the kernel caps it at net.core.rmem_max).
        socket.setRecvBufferSize(RECEIVE_BUFFER_BYTES);
        resolve(new UdpMux(socket));
      });
    });
  }

  get port(): number {
    return this.localAddress[1];
  }

  get stats(): UdpMuxStats {
    return {
      routedByUfrag: this.#routedByUfrag,
      unroutable: this.#unroutable,
      refusedBindings: this.#refusedBindings,
      ufrags: this.#byUfrag.size,
      addresses: this.#addresses,
    };
  }

  attach(protocol: StunProtocol): Transport {
    const route: Route = { protocol, ufrags: [], addresses: [] };
    this.#routes.set(protocol, route);
    const socket = this.#socket;
    const [address, port] = this.localAddress;
    const transport: Transport = {
      type: "udp",
      closed: false,
      address: { address, port, family: "IPv4" },
      addressFamily: 4,
      onData: () => {},
      send: (data, addr) => {
        // A shared socket has no "last sender" to fall back to: every send names its peer.
        if (!addr || transport.closed) return Promise.resolve();
        this.#bind(route, addr[0], addr[1]);
        socket.send(data, addr[1], addr[0]);
        return Promise.resolve();
      },
      close: () => {
        transport.closed = true;
        this.#forget(route);
        return Promise.resolve();
      },
    };
    return transport;
  }

  addUfrag(ufrag: string, protocol: StunProtocol): void {
    const route = this.#routes.get(protocol);
    if (!route || this.#byUfrag.has(ufrag)) return;
    this.#byUfrag.set(ufrag, route);
    route.ufrags.push(ufrag);
  }

  /** Closes the socket. Calls still attached stop hearing anything. Safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= new Promise((resolve) => this.#socket.close(() => resolve()));
    return this.#closed;
  }

  #receive(data: Buffer, host: string, port: number): void {
    let route = this.#byAddress.get(host)?.get(port);
    if (!route) {
      const ufrag = localUfrag(data);
      route = ufrag === undefined ? undefined : this.#byUfrag.get(ufrag);
      if (!route) {
        this.#unroutable++;
        return;
      }
      this.#routedByUfrag++;
    }
    route.protocol.datagramReceived(data, [host, port]);
  }

  #bind(route: Route, host: string, port: number): void {
    let ports = this.#byAddress.get(host);
    const bound = ports?.get(port);
    if (bound === route) return;
    if (bound) {
      this.#refusedBindings++;
      return;
    }
    if (route.addresses.length >= MAX_ADDRESSES_PER_CALL) return;
    if (!ports) this.#byAddress.set(host, (ports = new Map()));
    ports.set(port, route);
    route.addresses.push([host, port]);
    this.#addresses++;
  }

  #forget(route: Route): void {
    if (!this.#routes.delete(route.protocol)) return;
    for (const ufrag of route.ufrags) this.#byUfrag.delete(ufrag);
    for (const [host, port] of route.addresses) {
      const ports = this.#byAddress.get(host);
      if (ports?.get(port) !== route) continue;
      ports.delete(port);
      this.#addresses--;
      if (ports.size === 0) this.#byAddress.delete(host);
    }
    route.ufrags.length = 0;
    route.addresses.length = 0;
  }
}
