// The ICE-TCP listener (RELAY_TCP_PORT, 443 in production): clients whose networks block UDP
// connect here to the answer's `tcptype passive` candidate (RFC 6544; the client is active).
// A connection carries RFC 4571 frames (a 2-byte length, then a STUN, DTLS or SRTP/SRTCP
// packet), and its first frame is the client's first STUN Binding request. The front reads just
// that frame, bounded in size and time, takes the relay's ufrag from its USERNAME, checks the
// ufrag's tag (relay/transport/ufrag.ts) and passes the connection, with every byte read so far,
// to the process that owns the call: the same process (TcpMux.accept), or, in front of
// RELAY_PROCESSES > 1, a relay process over the supervisor's IPC channel (tcp-hand-off.ts). After
// that the front is out of the data path.
//
// A connection that is slow, oversized, not STUN, or names a ufrag without a valid tag is closed
// and counted once; the front keeps no state for it. It answers nothing: only the owning call,
// which checks MESSAGE-INTEGRITY, ever writes to a connection.
import net from "node:net";
import { localUfrag } from "./stun-username.ts";

export interface TcpFrontLimits {
  /** Connections that have not yet sent their first frame; a newcomer past this is closed. */
  maxPending: number;
  /** Time a connection has to deliver its first frame. */
  firstFrameMs: number;
  /** Largest first frame (RFC 4571 length field); a Binding request is ~100-200 bytes. */
  maxFirstFrameBytes: number;
}

export const TCP_FRONT_LIMITS: TcpFrontLimits = {
  maxPending: 256,
  firstFrameMs: 5000,
  maxFirstFrameBytes: 1024,
};

/** Why the front closed a connection before handing it on. */
export type TcpDropReason = "busy" | "timed_out" | "oversized" | "not_stun" | "forged" | "unowned";

export interface TcpFrontStats {
  /** Connections passed on to their owner. */
  routed: number;
  /** Connections closed before that, by reason. */
  dropped: Record<TcpDropReason, number>;
  /** Connections waiting for their first frame now. */
  pending: number;
}

/**
 * Passes a connection whose first frame names `ufrag` (owned by process `owner`) on, with the
 * bytes already read from it. Returns false when no one can take it (the front closes it).
 */
export type TcpRoute = (socket: net.Socket, received: Buffer, ufrag: string, owner: number) => boolean;

export interface TcpFrontOptions {
  /** The owning process a ufrag names if its tag is valid (UfragMint.owner). */
  owner: (ufrag: string) => number | undefined;
  route: TcpRoute;
  limits?: Partial<TcpFrontLimits>;
}

const LENGTH_BYTES = 2;

export class TcpFront {
  readonly #server: net.Server;
  readonly #options: TcpFrontOptions;
  readonly #limits: TcpFrontLimits;
  #pending = 0;
  #routed = 0;
  readonly #dropped: Record<TcpDropReason, number> = {
    busy: 0,
    timed_out: 0,
    oversized: 0,
    not_stun: 0,
    forged: 0,
    unowned: 0,
  };
  #closed: Promise<void> | undefined;

  private constructor(server: net.Server, options: TcpFrontOptions) {
    this.#server = server;
    this.#options = options;
    this.#limits = { ...TCP_FRONT_LIMITS, ...options.limits };
    server.on("connection", (socket) => this.#accept(socket));
  }

  /** Listens on `host:port` (0: a port the OS chooses). Rejects with the listen error. */
  static listen(host: string, port: number, options: TcpFrontOptions): Promise<TcpFront> {
    // noDelay: media frames are small and must leave at once (no Nagle); it stays set on the
    // socket whichever process ends up owning it.
    const server = net.createServer({ noDelay: true });
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host, port, exclusive: true }, () => {
        server.off("error", reject);
        server.on("error", () => {});
        resolve(new TcpFront(server, options));
      });
    });
  }

  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  get stats(): TcpFrontStats {
    return { routed: this.#routed, dropped: { ...this.#dropped }, pending: this.#pending };
  }

  /** Stops listening; connections already passed on are not touched. Safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= new Promise((resolve) => this.#server.close(() => resolve()));
    return this.#closed;
  }

  #accept(socket: net.Socket): void {
    socket.on("error", () => {});
    if (this.#pending >= this.#limits.maxPending) {
      this.#dropped.busy++;
      socket.destroy();
      return;
    }
    this.#pending++;
    const { maxFirstFrameBytes } = this.#limits;
    let received: Buffer = Buffer.alloc(0);
    let settled = false;
    const settle = () => {
      settled = true;
      this.#pending--;
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
    };
    const drop = (reason: TcpDropReason) => {
      if (settled) return;
      settle();
      this.#dropped[reason]++;
      socket.destroy();
    };
    const timer = setTimeout(() => drop("timed_out"), this.#limits.firstFrameMs);
    const onClose = () => {
      if (!settled) settle();
    };
    const onData = (data: Buffer) => {
      // Only the first frame is ever buffered here, so this concatenation is bounded.
      received = received.length === 0 ? data : Buffer.concat([received, data]);
      if (received.length < LENGTH_BYTES) return;
      const length = received.readUInt16BE(0);
      if (length > maxFirstFrameBytes) return drop("oversized");
      if (received.length < LENGTH_BYTES + length) return;
      const ufrag = localUfrag(received.subarray(LENGTH_BYTES, LENGTH_BYTES + length));
      if (ufrag === undefined) return drop("not_stun");
      const owner = this.#options.owner(ufrag);
      if (owner === undefined) return drop("forged");
      settle();
      socket.pause();
      socket.removeAllListeners("error");
      if (this.#options.route(socket, received, ufrag, owner)) {
        this.#routed++;
      } else {
        this.#dropped.unowned++;
        socket.destroy();
      }
    };
    socket.on("data", onData);
    socket.on("close", onClose);
  }
}
