// ICE-TCP with RELAY_PROCESSES > 1: the supervisor listens on RELAY_TCP_PORT (one port for the
// host), reads each connection's first frame (TcpFront) and passes the socket itself, with the
// bytes it read, to the relay process the ufrag names, over that process's fork IPC channel
// (`child.send(message, socket)`: the file descriptor moves, so the supervisor is out of the data
// path from then on). The relay process gives it to its TcpMux as if its own front had read it.
import type { Socket } from "node:net";
import type { RelayConfig } from "../config.ts";
import type { Logger } from "../log.ts";
import { TcpFront } from "./tcp-front.ts";
import type { TcpMux } from "./tcp-mux.ts";
import { UfragMint, ufragKey } from "./ufrag.ts";

/** What goes over the IPC channel with the socket. */
interface IceTcpHandOff {
  type: "earshot:ice-tcp";
  ufrag: string;
  /** Bytes the front read (the first frame, and whatever followed it), base64. */
  received: string;
}

/** Passes `socket` with `message` to relay process `index`; false when that process is not running. */
export type SendToRelay = (index: number, message: IceTcpHandOff, socket: Socket) => boolean;

/**
 * The supervisor's ICE-TCP front, with RELAY_TCP_PORT. `connect` is given the supervisor's way to
 * reach its relay processes; until then (and for a process that is down) connections are closed.
 */
export async function openSupervisorTcpFront(
  config: RelayConfig,
  log: Logger,
): Promise<{ front: TcpFront; connect: (send: SendToRelay) => void } | undefined> {
  if (config.tcpPort === undefined) return undefined;
  if (config.credential.kind !== "secret")
    throw new Error("RELAY_PROCESSES > 1 runs on EARSHOT_RELAY_SECRET");
  // Index 0 mints nothing here: the supervisor only checks the tags its processes' ufrags carry.
  const ufrags = new UfragMint(ufragKey(config.credential.secret), 0);
  let sendToRelay: SendToRelay | undefined;
  const front = await TcpFront.listen(config.mediaIp, config.tcpPort, {
    owner: (ufrag) => ufrags.owner(ufrag),
    route: (socket, received, ufrag, owner) =>
      sendToRelay?.(
        owner,
        { type: "earshot:ice-tcp", ufrag, received: received.toString("base64") },
        socket,
      ) ?? false,
  });
  log.info({ tcp_port: front.port }, "ICE-TCP listening");
  return { front, connect: (send) => (sendToRelay = send) };
}

/** In a relay process under a supervisor: sockets the supervisor's front passes on go to `mux`. */
export function acceptHandedOffConnections(mux: TcpMux): () => void {
  const onMessage = (message: unknown, socket: unknown) => {
    if (!isHandOff(message) || !(socket instanceof Object) || !("remoteAddress" in socket)) return;
    mux.accept(socket as Socket, Buffer.from(message.received, "base64"), message.ufrag);
  };
  process.on("message", onMessage);
  return () => process.off("message", onMessage);
}

function isHandOff(message: unknown): message is IceTcpHandOff {
  const m = message as Partial<IceTcpHandOff> | null;
  return (
    typeof m === "object" &&
    m !== null &&
    m.type === "earshot:ice-tcp" &&
    typeof m.ufrag === "string" &&
    typeof m.received === "string"
  );
}
