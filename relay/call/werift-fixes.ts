// Workarounds for werift behaviour that a patch does not fix (patches/ holds the fixes inside
// werift). Each says why it is needed, so it can go once werift changes.
import type { RTCPeerConnection } from "werift";
import type { Logger } from "../log.ts";

/**
 * Memory per call: Node 24 carves small Buffers (Buffer.from, allocUnsafe < 32 KiB) out of
 * 64 KiB pool slabs, and one live Buffer keeps its whole slab alive. werift keeps many small
 * per-call Buffers for the call's lifetime (DTLS keys and certificate, SRTP session keys, ...),
 * so each call pinned several slabs allocated among other calls' per-packet garbage. With
 * 8 KiB slabs (Node ≤ 22's default) the same Buffers pin an eighth of that; the per-packet
 * allocations are short-lived either way. Measured with bench/capacity.ts --heap. Process-wide:
 * the relay's entry (main.ts) calls it once.
 */
export function limitBufferPool(): void {
  if (Buffer.poolSize > 8 * 1024) Buffer.poolSize = 8 * 1024;
}

/**
 * werift 0.25 restarts the ICE agent on new remote credentials but then never runs its checks
 * while DTLS is up: connect() returns early on a connected DTLS transport, and re-gathering
 * sets the agent "completed" with no pair. A restarted call would never reconnect. This starts
 * the checks of every ICE transport that a restart left without a nominated pair.
 */
export function startRestartedIce(pc: RTCPeerConnection, log?: Logger): void {
  for (const { iceTransport } of pc.dtlsTransports) {
    if (iceTransport.connection.nominated || iceTransport.state === "checking") continue;
    iceTransport.start().catch((error: unknown) => log?.warn({ err: error }, "ICE restart checks failed"));
  }
}
