// One UDP port for every call of this relay process (RELAY_UDP_PORT), in the way of Pion's
// UDPMux and mediasoup's WebRtcServer. werift (patch 030, `iceUdpMux`) gives each call's host
// candidate a view of the port instead of a socket of its own. A datagram goes to a call:
//   1. by its source address, once that call has sent to the address; else
//   2. for a STUN Binding request, by the local ufrag in its USERNAME; else it is dropped.
// An address is bound when the call first sends to it: a response to a request werift
// authenticated (patch 009), or (owning the port) a check to a candidate the client signalled. So
// forged STUN, even with a live call's ufrag, gets no answer and binds nothing. An address bound
// to one call is not taken over by another. Closing a call's view forgets its ufrags and addresses.
//
// Two ways to hold the port:
// - `UdpMux.open`: this process owns the port's only socket (one relay process on the port);
// - `UdpMux.pinned`: the port is the host's, shared by several relay processes (relay/transport/
//   udp-dispatcher.ts). A dispatcher holds the port's unconnected socket and hands this process
//   the first packets of its flows (`deliver`). Binding an address opens a socket on the same port
//   (SO_REUSEPORT) connected to that address, and Linux (5.2.17+) then delivers the flow's
//   4-tuple to it alone: no forwarding hop on the media path, and a flow survives its dispatcher.
//   Here only an answer to an authenticated check binds: the call's own checks to signalled
//   candidates are dropped until their address has checked in. Another process cannot see this
//   one's bindings, so an offer naming another client's address as its candidate would otherwise
//   pin a second socket to that client's 4-tuple and split its flow between two processes. The
//   client is the controlling agent and always checks first (a browser does; an ICE-lite server
//   such as mediasoup never sends ordinary checks at all), so no call needs them to connect.
import dgram from "node:dgram";
import type { IceUdpMux, StunProtocol, Transport } from "werift";
import { isBindingSuccess, localUfrag } from "./stun-username.ts";

type Address = readonly [host: string, port: number];

/** SO_RCVBUF asked for the shared socket. */
const RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;

/** Addresses one call may bind: werift keeps at most this many remote candidates per call. */
export const MAX_ADDRESSES_PER_CALL = 32;

/** Sends held while a pinned flow's socket binds and connects (well under a millisecond). */
const MAX_SENDS_BEFORE_CONNECTED = 16;

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
  /** Pinned mode: connected sockets open now (one per bound address). */
  connectedSockets: number;
  /** Pinned mode: flows whose socket could not bind or connect (the port is not the group's). */
  pinFailures: number;
  /** Pinned mode: sends dropped because their address has not checked in (see the header). */
  unverifiedSends: number;
}

/** Told when a pinned flow's socket fails to bind or connect; the flow's sends are dropped. */
export type PinErrorListener = (error: Error, remote: Address) => void;

interface Route {
  protocol: StunProtocol;
  ufrags: string[];
  addresses: Binding[];
}

/** An address bound to a call; in pinned mode, with the socket connected to it. */
interface Binding {
  readonly route: Route;
  readonly address: Address;
  socket?: dgram.Socket;
  /** Sends waiting for `socket` to connect; undefined once it has. */
  waiting?: Buffer[];
}

/**
 * Binds a socket that takes a port's unrouted datagrams (the mux's or the dispatcher's), with
 * room for `receiveBufferBytes` queued (the kernel caps it at net.core.rmem_max). Rejects with the
 * bind error; after that, errors are ignored: a send error (an ICMP unreachable surfacing later,
 * EPERM) must not kill the process.
 */
export function bindPortSocket(
  socket: dgram.Socket,
  host: string,
  port: number,
  receiveBufferBytes: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(port, host, () => {
      socket.off("error", reject);
      socket.on("error", () => {});
      socket.setRecvBufferSize(receiveBufferBytes);
      resolve();
    });
  });
}

export class UdpMux implements IceUdpMux {
  readonly localAddress: Address;
  /** The port's socket when this process owns it; undefined in pinned mode. */
  readonly #socket: dgram.Socket | undefined;
  readonly #byUfrag = new Map<string, Route>();
  /** host → port → binding: looked up with the strings and numbers Node already made, per packet. */
  readonly #byAddress = new Map<string, Map<number, Binding>>();
  readonly #routes = new Map<StunProtocol, Route>();
  #routedByUfrag = 0;
  #unroutable = 0;
  #refusedBindings = 0;
  #addresses = 0;
  #connectedSockets = 0;
  #pinFailures = 0;
  #unverifiedSends = 0;
  readonly #onPinError: PinErrorListener | undefined;
  #closed: Promise<void> | undefined;

  private constructor(
    localAddress: Address,
    socket: dgram.Socket | undefined,
    onPinError?: PinErrorListener,
  ) {
    this.localAddress = localAddress;
    this.#socket = socket;
    this.#onPinError = onPinError;
    socket?.on("message", (data, rinfo) => this.deliver(data, rinfo.address, rinfo.port));
  }

  /** Binds the port's only socket (port 0: one the OS chooses). Rejects with the bind error. */
  static async open(host: string, port: number): Promise<UdpMux> {
    const socket = dgram.createSocket({ type: "udp4" });
    // Every call's packets queue here, not in a socket each: room for a busy event loop's backlog.
    await bindPortSocket(socket, host, port, RECEIVE_BUFFER_BYTES);
    const { address, port: bound } = socket.address();
    return new UdpMux([address, bound], socket);
  }

  /** A mux on the host's shared port `host:port`, fed first packets by a dispatcher (`deliver`). */
  static pinned(host: string, port: number, onPinError?: PinErrorListener): UdpMux {
    return new UdpMux([host, port], undefined, onPinError);
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
      connectedSockets: this.#connectedSockets,
      pinFailures: this.#pinFailures,
      unverifiedSends: this.#unverifiedSends,
    };
  }

  attach(protocol: StunProtocol): Transport {
    const route: Route = { protocol, ufrags: [], addresses: [] };
    this.#routes.set(protocol, route);
    const [address, port] = this.localAddress;
    const transport: Transport = {
      type: "udp",
      closed: false,
      address: { address, port, family: "IPv4" },
      addressFamily: 4,
      onData: () => {},
      send: (data, addr) => {
        // A shared port has no "last sender" to fall back to: every send names its peer.
        if (!addr || transport.closed) return Promise.resolve();
        this.#send(route, data, addr[0], addr[1]);
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

  /**
   * A datagram that reached the port from `host:port`: from the port's socket, or in pinned mode
   * handed over by the dispatcher (the first packets of a flow, before its socket is connected).
   */
  deliver(data: Buffer, host: string, port: number): void {
    let route = this.#byAddress.get(host)?.get(port)?.route;
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

  /** Closes the port's socket or every pinned flow's. Calls still attached stop hearing anything. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      for (const route of [...this.#routes.values()]) this.#forget(route);
      const socket = this.#socket;
      if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
    })();
    return this.#closed;
  }

  #send(route: Route, data: Buffer, host: string, port: number): void {
    const socket = this.#socket;
    if (socket) {
      // Past the cap or another call's address: the send still goes out, unbound.
      this.#bind(route, host, port);
      socket.send(data, port, host);
      return;
    }
    // Pinned: only an answer to an authenticated check pins a flow (see the header).
    if (this.#byAddress.get(host)?.get(port)?.route !== route && !isBindingSuccess(data)) {
      this.#unverifiedSends++;
      return;
    }
    const binding = this.#bind(route, host, port);
    // A flow leaves only from its own connected socket (there is no other in this process).
    if (!binding) return;
    if (binding.waiting === undefined) binding.socket!.send(data);
    else if (binding.waiting.length < MAX_SENDS_BEFORE_CONNECTED) binding.waiting.push(data);
  }

  /** The binding of `host:port` to `route`, made now if the address is free and under the cap. */
  #bind(route: Route, host: string, port: number): Binding | undefined {
    let ports = this.#byAddress.get(host);
    const bound = ports?.get(port);
    if (bound?.route === route) return bound;
    if (bound) {
      this.#refusedBindings++;
      return undefined;
    }
    if (route.addresses.length >= MAX_ADDRESSES_PER_CALL) return undefined;
    if (!ports) this.#byAddress.set(host, (ports = new Map()));
    const binding: Binding = { route, address: [host, port] };
    ports.set(port, binding);
    route.addresses.push(binding);
    this.#addresses++;
    if (!this.#socket) this.#pin(binding);
    return binding;
  }

  /** Opens the flow's socket on the shared port, connected to its remote address. */
  #pin(binding: Binding): void {
    const [host, port] = binding.address;
    const protocol = binding.route.protocol;
    const socket = dgram.createSocket({ type: "udp4", reusePort: true });
    binding.socket = socket;
    binding.waiting = [];
    this.#connectedSockets++;
    // Connected, it hears only its remote. Between bind and connect it is one more unconnected
    // socket of the group and may be handed a stranger's first packet: that one is routed here
    // as the dispatcher would have (this process's ufrags), else dropped; the sender retransmits.
    socket.on("message", (data, rinfo) => {
      if (binding.waiting === undefined) protocol.datagramReceived(data, binding.address);
      else this.deliver(data, rinfo.address, rinfo.port);
    });
    socket.on("error", (error) => {
      // Once connected, ICMP errors surface here as send errors: the call's ICE consent decides.
      if (binding.socket !== socket || binding.waiting === undefined) return;
      // Before: the bind or connect failed (another program holds the port without
      // SO_REUSEPORT, or another user does). The flow cannot be pinned; its sends are dropped.
      binding.socket = undefined;
      binding.waiting = [];
      this.#connectedSockets--;
      this.#pinFailures++;
      socket.close();
      this.#onPinError?.(error, binding.address);
    });
    socket.bind(this.localAddress[1], this.localAddress[0], () => {
      if (binding.socket !== socket) return;
      socket.connect(port, host, () => {
        if (binding.socket !== socket) return;
        const waiting = binding.waiting ?? [];
        binding.waiting = undefined;
        for (const data of waiting) socket.send(data);
      });
    });
  }

  #forget(route: Route): void {
    if (!this.#routes.delete(route.protocol)) return;
    for (const ufrag of route.ufrags) this.#byUfrag.delete(ufrag);
    for (const binding of route.addresses) {
      const [host, port] = binding.address;
      const ports = this.#byAddress.get(host);
      if (ports?.get(port) !== binding) continue;
      ports.delete(port);
      this.#addresses--;
      if (ports.size === 0) this.#byAddress.delete(host);
      const socket = binding.socket;
      if (socket) {
        binding.socket = undefined;
        binding.waiting = undefined;
        this.#connectedSockets--;
        socket.close();
      }
    }
    route.ufrags.length = 0;
    route.addresses.length = 0;
  }
}
