// The host's one UDP port in front of several relay processes (RELAY_UDP_PORT with
// RELAY_PROCESSES > 1). The dispatcher holds the port's unconnected socket in an SO_REUSEPORT
// group; each relay process adds a socket connected to each remote address its calls answer
// (relay/transport/udp-mux.ts, pinned mode), and Linux (5.2.17+) delivers a connected socket's
// 4-tuple to it alone. So the dispatcher sees only what no process has pinned yet: the first
// packets of a flow, and strays. It reads the STUN USERNAME's ufrag, keeps those whose ufrag tag
// checks under the relay secret, and hands each to the process the ufrag names. It holds no
// state: a restart loses nothing but the packets that arrive while it is down (ICE retransmits).
import dgram from "node:dgram";
import { localUfrag } from "./stun-username.ts";
import { bindPortSocket } from "./udp-mux.ts";
import type { UfragMint } from "./ufrag.ts";

/** SO_RCVBUF asked for: a burst of new calls' checks while the event loop is busy. */
const RECEIVE_BUFFER_BYTES = 1024 * 1024;

export interface UdpDispatcherStats {
  /** Datagrams handed to the process their ufrag names. */
  handedOff: number;
  /** Datagrams that were not a Binding request with one of this host's ufrags (valid tag). */
  dropped: number;
}

/** Passes a first packet to relay process `processIndex` (1-based, as in the ufrag). */
export type HandOff = (processIndex: number, data: Buffer, host: string, port: number) => void;

export class UdpDispatcher {
  readonly #socket: dgram.Socket;
  #handedOff = 0;
  #dropped = 0;

  private constructor(socket: dgram.Socket, ufrags: UfragMint, handOff: HandOff) {
    this.#socket = socket;
    socket.on("message", (data, rinfo) => {
      const ufrag = localUfrag(data);
      const owner = ufrag === undefined ? undefined : ufrags.owner(ufrag);
      // Process 0 is a relay on its own, never behind a dispatcher.
      if (!owner) {
        this.#dropped++;
        return;
      }
      this.#handedOff++;
      handOff(owner, data, rinfo.address, rinfo.port);
    });
  }

  /** Binds `host:port` with SO_REUSEPORT. Rejects with the bind error (the port is someone else's). */
  static async open(host: string, port: number, ufrags: UfragMint, handOff: HandOff): Promise<UdpDispatcher> {
    const socket = dgram.createSocket({ type: "udp4", reusePort: true });
    await bindPortSocket(socket, host, port, RECEIVE_BUFFER_BYTES);
    return new UdpDispatcher(socket, ufrags, handOff);
  }

  get port(): number {
    return this.#socket.address().port;
  }

  get stats(): UdpDispatcherStats {
    return { handedOff: this.#handedOff, dropped: this.#dropped };
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#socket.close(() => resolve()));
  }
}

/** The IPC message carrying a first packet, dispatcher → supervisor → owning relay process. */
export interface FirstPacketMessage {
  kind: "udp-first-packet";
  process: number;
  data: Uint8Array;
  host: string;
  port: number;
}

/** The message if `value` is a well-formed first-packet message, else undefined. */
export function asFirstPacket(value: unknown): FirstPacketMessage | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const m = value as Partial<FirstPacketMessage>;
  return m.kind === "udp-first-packet" &&
    Number.isInteger(m.process) &&
    m.data instanceof Uint8Array &&
    typeof m.host === "string" &&
    Number.isInteger(m.port)
    ? (m as FirstPacketMessage)
    : undefined;
}
