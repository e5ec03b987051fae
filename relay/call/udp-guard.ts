// What a call's UDP surface refused. The refusing happens inside werift, patched
// (patches/werift+0.25.2+009 to +023, described in patches/README.md): unauthenticated STUN gets
// no answer, DTLS/SRTP from outside the selected pair is dropped, plaintext DTLS after the
// handshake is ignored (+023), SRTP and SRTCP have a replay window (+013, +022), remote
// candidates are capped, SCTP stops reassembling a message over a=max-message-size, and forged
// data channel control messages are dropped (+021). This module only reads the patches'
// counters, and hooks the events the call turns into metrics and log lines.
import type { RTCPeerConnection } from "werift";

export interface UdpGuardStats {
  /** Remote candidates the call holds (signalled and peer-reflexive). */
  remoteCandidates: number;
  /** Candidates refused: over the cap, or `.local` names. */
  refusedCandidates: number;
  /** Non-STUN datagrams (DTLS, SRTP, SRTCP) from an address other than the selected pair. */
  foreignPackets: number;
  /** SRTP packets refused by the replay window. */
  replayedSrtp: number;
  /** SRTCP packets refused by the replay window. */
  replayedSrtcp: number;
  /** Unauthenticated (epoch 0) DTLS records ignored after the handshake: alerts, ClientHellos. */
  plaintextDtlsRecords: number;
  /** Data channel messages dropped during SCTP reassembly for their size. */
  oversizeMessages: number;
  /** Bytes SCTP holds for reassembly right now (received, not yet delivered). */
  sctpBufferedBytes: number;
  /** Data channel control messages dropped: DCEP for no channel, unknown PPIDs, malformed. */
  refusedControlMessages: number;
}

// The patches' fields are not in werift's typings; they are read here and nowhere else.
interface GuardedConnection {
  remoteCandidates: unknown[];
  droppedRemoteCandidates?: number;
  droppedDataPackets?: number;
}
interface GuardedSrtp {
  remoteContext?: { replayedPackets?: number };
}
interface GuardedDtls {
  ignoredPlaintextRecords?: number;
}
interface GuardedSctpTransport {
  refusedControlMessages?: number;
  onControlMessageRefused?: { subscribe(fn: (reason: string) => void): unknown };
}
interface GuardedSctp {
  droppedInboundMessages?: number;
  inboundStreams?: Record<string, { reassembly: { userData: Uint8Array }[] }>;
  onInboundMessageDropped?: { subscribe(fn: (streamId: number, bytes: number) => void): unknown };
}

function assertPatched(connection: GuardedConnection): void {
  if (connection.droppedDataPackets === undefined) {
    // Running unpatched would silently reopen every hole this module reports on.
    throw new Error("werift is not patched (run `npx patch-package`): the relay's UDP guards are missing");
  }
}

export function udpGuardStats(pc: RTCPeerConnection): UdpGuardStats {
  const stats: UdpGuardStats = {
    remoteCandidates: 0,
    refusedCandidates: 0,
    foreignPackets: 0,
    replayedSrtp: 0,
    replayedSrtcp: 0,
    plaintextDtlsRecords: 0,
    oversizeMessages: 0,
    sctpBufferedBytes: 0,
    refusedControlMessages: 0,
  };
  for (const transport of pc.iceTransports) {
    const connection = transport.connection as unknown as GuardedConnection;
    stats.remoteCandidates += connection.remoteCandidates.length;
    stats.refusedCandidates += connection.droppedRemoteCandidates ?? 0;
    stats.foreignPackets += connection.droppedDataPackets ?? 0;
  }
  for (const transport of pc.dtlsTransports) {
    const srtp = transport.srtp as unknown as GuardedSrtp | undefined;
    stats.replayedSrtp += srtp?.remoteContext?.replayedPackets ?? 0;
    const srtcp = transport.srtcp as unknown as GuardedSrtp | undefined;
    stats.replayedSrtcp += srtcp?.remoteContext?.replayedPackets ?? 0;
    const dtls = transport.dtls as unknown as GuardedDtls | undefined;
    stats.plaintextDtlsRecords += dtls?.ignoredPlaintextRecords ?? 0;
  }
  const sctp = pc.sctpTransport?.sctp as unknown as GuardedSctp | undefined;
  stats.oversizeMessages += sctp?.droppedInboundMessages ?? 0;
  stats.refusedControlMessages +=
    (pc.sctpTransport as unknown as GuardedSctpTransport | undefined)?.refusedControlMessages ?? 0;
  for (const stream of Object.values(sctp?.inboundStreams ?? {})) {
    for (const chunk of stream.reassembly) stats.sctpBufferedBytes += chunk.userData.length;
  }
  return stats;
}

/**
 * Calls `onDrop` for each data channel message SCTP refused to reassemble for its size.
 * Call after the offer is applied (the SCTP association exists from then on).
 */
export function onOversizeMessage(pc: RTCPeerConnection, onDrop: (bytes: number) => void): void {
  for (const transport of pc.iceTransports)
    assertPatched(transport.connection as unknown as GuardedConnection);
  const sctp = pc.sctpTransport?.sctp as unknown as GuardedSctp | undefined;
  sctp?.onInboundMessageDropped?.subscribe((_streamId, bytes) => onDrop(bytes));
}

/**
 * Calls `onRefuse` for each data channel control message werift dropped (a DCEP ACK for no
 * channel, an unknown payload protocol id, a malformed DCEP message). Call after the offer is
 * applied. A client can send these at line rate: log them through a ProblemLog, not per message.
 */
export function onRefusedControlMessage(pc: RTCPeerConnection, onRefuse: (reason: string) => void): void {
  const transport = pc.sctpTransport as unknown as GuardedSctpTransport | undefined;
  if (transport && transport.onControlMessageRefused === undefined)
    throw new Error(
      "werift is not patched (run `npx patch-package`): forged DCEP would be unhandled rejections",
    );
  transport?.onControlMessageRefused?.subscribe(onRefuse);
}
