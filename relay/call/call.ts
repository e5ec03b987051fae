// One call: a werift PeerConnection with one audio transceiver and the client's `oai-events`
// data channel, the uplink and downlink audio pipelines, and the bridge they feed. The call
// owns its children and closes them first (bridge, media, channel, then the PeerConnection).
import { EventEmitter } from "node:events";
import { performance } from "node:perf_hooks";
import {
  RTCPeerConnection,
  RtcpRrPacket,
  RtcpSrPacket,
  RtpHeader,
  RtpPacket,
  type MediaStreamTrack,
  type RtcpPacket,
  type RTCRemoteInboundRtpStreamStats,
  type RTCRtpSender,
  type RTCDataChannel,
  type RTCRtpTransceiver,
} from "werift";
import type { CallStats, CallUsage, EndReason, LogItem, ResumeOf } from "../../protocol/relay-api.ts";
import type { SessionConfig } from "../../protocol/session.ts";
import { MAX_SIDEBANDS_PER_CALL, SIDEBAND_CLOSE } from "../../protocol/sideband.ts";
import type {
  CallBridge,
  CallStateChange,
  CallBridgeFactory,
  CallContext,
  EventChannelPort,
  EventSendResult,
} from "../bridge.ts";
import { ProblemLog, type Logger } from "../log.ts";
import type { SidebandSocket } from "../sideband/sideband-socket.ts";
import { FRAME_MS, RTP_TIMESTAMP_STEP } from "../media/audio-format.ts";
import type { DownlinkEncoder } from "../media/codec.ts";
import { Downlink } from "../media/downlink.ts";
import { LossAdaptiveOpusEncoder } from "../media/loss-adaptive-encoder.ts";
import type { EncoderGovernor } from "../media/encoder-governor.ts";
import { G711Decoder, G711Encoder } from "../media/g711.ts";
import { OPUS_SILENCE_FRAME, OpusEncoder, opusUplinkDecoder } from "../media/opus-codec.ts";
import type { Pacer } from "../media/pacer.ts";
import { Uplink } from "../media/uplink.ts";
import type { RelayMetrics } from "../metrics.ts";
import { MAX_CLIENT_MESSAGE_BYTES, peerConfig, type MediaNetwork } from "./peer-config.ts";
import {
  answerDirection,
  answerSetup,
  iceFragment,
  restartOffer,
  rewriteCandidateAddress,
  sharedPortProblem,
  withoutEndOfCandidates,
} from "./sdp.ts";
import { startRestartedIce } from "./werift-fixes.ts";
import {
  onOversizeMessage,
  onRefusedControlMessage,
  udpGuardStats,
  type UdpGuardStats,
} from "./udp-guard.ts";

export const EVENTS_CHANNEL_LABEL = "oai-events";
/** A call whose ICE stays disconnected this long has lost its client. */
const DISCONNECTED_GRACE_MS = 10_000;
/**
 * No RTP from a client that was sending for this long: its link is down (a browser sends a packet
 * every 20 ms, silence included). werift reports a lost peer only when ICE consent expires (30 s,
 * then "failed"), far too late to tell a sideband.
 */
const LINK_SILENCE_MS = 2000;
const LINK_CHECK_MS = 250;
/** setTimeout's longest delay (about 24.8 days); a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Packets past a gap before it counts as lost: 3 × 20 ms of reorder tolerance. */
const REORDER_DEPTH = 3;

export interface CallOptions {
  callId: string;
  session: SessionConfig;
  network: MediaNetwork;
  bridgeFactory: CallBridgeFactory;
  pacer: Pacer;
  /** Sets the downlink Opus encoders' complexity from the relay's load. */
  encoderGovernor: EncoderGovernor;
  /** Adaptive uplink jitter buffer and loss-driven downlink FEC (RELAY_NETWORK_RESILIENCE; default on). */
  networkResilience?: boolean;
  /** Earlier frames per downlink `audio/red` packet while the client reports loss; 0: no RED (RELAY_RED_DISTANCE). */
  redDistance?: number;
  metrics: RelayMetrics;
  log: Logger;
  connectTimeoutMs: number;
  /** When the call ends (max_duration) whatever happens, epoch ms; from the edge's ticket. */
  deadlineMs?: number;
  /** The call comes from a lost relay: its conversation so far (CallContext.resume). */
  resume?: ResumeOf;
}

export type CallState = "new" | "connecting" | "connected" | "ended";

export interface CallEvents {
  connected: [];
  first_audio: [];
  ended: [reason: EndReason, message: string | undefined, usage: CallUsage];
  /** Conversation items for the edge's log, before `ended`. */
  log: [items: LogItem[]];
  /** The call's session changed (a confirmed session.update), for a relay it may resume on. */
  session: [session: SessionConfig];
}

const round2 = (value: number) => Math.round(value * 100) / 100;
const isRed = (mimeType: string) => mimeType.toLowerCase() === "audio/red";
const isKeepalive = (payload: Buffer) =>
  payload.length === OPUS_SILENCE_FRAME.length && payload.equals(OPUS_SILENCE_FRAME);

class CallSetupError extends Error {}
export { CallSetupError };

/**
 * The downlink encoder: restricted-low-delay Opus (CELT only), at the complexity the governor
 * sets (5 while the relay has room). Returns it and a function that stops following the governor.
 */
function opusDownlinkEncoder(governor: EncoderGovernor): [DownlinkEncoder, () => void] {
  // CELT-only costs about a third of VOIP mode at the same complexity and has 5 ms less
  // look-ahead; complexity 5 halves it again with no audible loss for speech at 32 kb/s.
  const encoder = new OpusEncoder({
    application: "restrictedLowDelay",
    complexity: governor.complexity,
    bitrate: 32_000,
  });
  const release = governor.register((complexity) => encoder.setComplexity(complexity));
  const downlinkEncoder: DownlinkEncoder = {
    timestampStep: RTP_TIMESTAMP_STEP,
    encode: (pcm, out) => encoder.encode(pcm, out),
    silenceFrame: OPUS_SILENCE_FRAME,
  };
  return [downlinkEncoder, release];
}

/** The same, switching to VOIP mode with in-band FEC while the client reports loss. */
function lossAdaptiveDownlinkEncoder(governor: EncoderGovernor): [LossAdaptiveOpusEncoder, () => void] {
  const encoder = new LossAdaptiveOpusEncoder(governor.complexity);
  return [encoder, governor.register((complexity) => encoder.setComplexity(complexity))];
}

export class Call extends EventEmitter<CallEvents> {
  readonly id: string;
  readonly createdAt = performance.now();
  connectedAt: number | undefined;
  #state: CallState = "new";
  #options: CallOptions;
  #log: Logger;
  /** What a client or werift got wrong, logged once per problem per call (counted at the end). */
  #problems: ProblemLog;
  #pc: RTCPeerConnection;
  #channel: RTCDataChannel | undefined;
  #uplink: Uplink | undefined;
  #downlink: Downlink | undefined;
  #releaseEncoder = () => {};
  #bridge: CallBridge | undefined;
  #payloadType = 111;
  /** The client's `audio/red` PT when negotiated: uplink packets of it are parsed (relay/media/red.ts). */
  #redPayloadType: number | undefined;
  /** Earlier frames each downlink speech packet carries now (#downlinkRedDistance at the last report). */
  #redDistance = 0;
  #lossAdaptive: LossAdaptiveOpusEncoder | undefined;
  #downlinkJitterMs = 0;
  #downlinkFractionLost = 0;
  #downlinkPacketsLost = 0;
  #rttMs: number | undefined;
  /** RTP clock of the negotiated codec, for the RTCP jitter (in its units). */
  #clockRate = 48_000;
  #offerSdp = "";
  #timers = new Set<NodeJS.Timeout>();
  #disconnectTimer: NodeJS.Timeout | undefined;
  /** The caller's link as last told to the bridge, and why it may be down. */
  #link: "connected" | "disconnected" | undefined;
  #iceDown = false;
  #mediaSilent = false;
  #lastRtpAt = 0;
  #linkWatch: NodeJS.Timeout | undefined;
  #droppedMessages = 0;
  #failedSends = 0;
  #packetsOut = 0;
  #firstAudio = false;
  #closed: Promise<void> | undefined;
  #endReason: EndReason | undefined;
  readonly #sidebands = new Set<SidebandSocket>();

  constructor(options: CallOptions) {
    super();
    this.id = options.callId;
    this.#options = options;
    this.#log = options.log.child({ call_id: options.callId });
    this.#problems = new ProblemLog(this.#log);
    this.#pc = new RTCPeerConnection(peerConfig(options.network, (options.redDistance ?? 0) > 0));
  }

  get state(): CallState {
    return this.#state;
  }

  get endReason(): EndReason | undefined {
    return this.#endReason;
  }

  /** Resolves when the PeerConnection and everything under it is closed. */
  get closed(): Promise<void> {
    return this.#closed ?? Promise.resolve();
  }

  /** Applies the offer and returns the answer SDP. Throws CallSetupError for an unusable offer. */
  async answer(offerSdp: string): Promise<string> {
    offerSdp = withoutEndOfCandidates(offerSdp);
    this.#offerSdp = offerSdp;
    // A shared UDP or TCP port routes by ufrag, which takes one ICE agent (one ufrag) per call.
    if (this.#options.network.sharedPort || this.#options.network.iceTcp) {
      const problem = sharedPortProblem(offerSdp);
      if (problem) throw new CallSetupError(problem);
    }
    const pc = this.#pc;
    pc.onDataChannel.subscribe((channel) => this.#onDataChannel(channel));
    pc.connectionStateChange.subscribe((state) => this.#onConnectionState(state));
    // A client that hangs up closes DTLS (close_notify) or at least the data channel; werift
    // does not always turn either into connectionState "closed".
    const onDtlsState = (state: string) => {
      if (state === "closed" && this.#state !== "ended") void this.end("client_hangup");
    };
    try {
      await pc.setRemoteDescription({ type: "offer", sdp: offerSdp });
    } catch (error) {
      throw new CallSetupError(`The offer could not be applied: ${(error as Error).message}`);
    }
    // SCTP drops an over-cap message before reassembling it; count it like one dropped here.
    onOversizeMessage(pc, () => {
      this.#droppedMessages++;
      this.#options.metrics.droppedMessages.inc();
    });
    onRefusedControlMessage(pc, (reason) => {
      this.#options.metrics.refusedControlMessages.inc();
      this.#problems.warn("data channel control message refused", { reason });
    });
    const audio = pc.getTransceivers().filter((t) => t.kind === "audio");
    if (audio.length !== 1) {
      throw new CallSetupError(`The offer must have exactly one audio m-line, found ${audio.length}.`);
    }
    const transceiver = audio[0]!;
    // werift answers recvonly unless told; a browser then drops our audio and never fires ontrack.
    transceiver.setDirection("sendrecv");
    // Passive: the client sends the DTLS ClientHello as soon as ICE connects, which saves the
    // round trip (and werift's fixed pre-hello sleep) of the relay being the DTLS client.
    for (const transport of pc.dtlsTransports) {
      transport.role = "server";
      transport.onStateChange.subscribe(onDtlsState);
    }
    try {
      await pc.setLocalDescription(await pc.createAnswer());
    } catch (error) {
      // e.g. an offer without a=mid: werift applies it, then can't answer it.
      throw new CallSetupError(`The offer could not be answered: ${(error as Error).message}`);
    }
    let sdp = pc.localDescription!.sdp;
    if (answerSetup(sdp) !== "passive") throw new Error("werift did not answer a=setup:passive");
    const direction = answerDirection(sdp);
    if (direction === "inactive" || direction === undefined) {
      throw new CallSetupError("The offer's audio m-line cannot be answered (no common codec?).");
    }
    const codec = transceiver.codecs.find((c) => !isRed(c.mimeType));
    if (!codec) throw new CallSetupError("No common audio codec: offer Opus, PCMU or PCMA.");
    this.#payloadType = codec.payloadType;
    this.#redPayloadType = transceiver.codecs.find((c) => isRed(c.mimeType))?.payloadType;
    this.#setUpMedia(codec.mimeType.toLowerCase(), transceiver);
    const network = this.#options.network;
    if (network.publicIp) sdp = rewriteCandidateAddress(sdp, network.mediaIp, network.publicIp);
    this.#state = "connecting";
    this.#timer(() => {
      if (this.#state === "connecting") this.end("never_connected", "ICE/DTLS did not complete in time.");
    }, this.#options.connectTimeoutMs);
    const deadline = this.#options.deadlineMs;
    if (deadline !== undefined) {
      // The relay's own clock: the edge may be unreachable when the call must end.
      this.#timer(
        () => void this.end("max_duration", "The call reached its maximum duration."),
        Math.min(MAX_TIMER_MS, Math.max(0, deadline - Date.now())),
      );
    }
    this.#log.info({ codec: codec.mimeType }, "call answered");
    return sdp;
  }

  /** ICE restart (RFC 8840 sdpfrag in, sdpfrag out): new remote credentials, new local ones. */
  async restartIce(fragment: string): Promise<string> {
    if (this.#state === "ended") throw new CallSetupError("The call has ended.");
    const offer = restartOffer(this.#offerSdp, fragment);
    if (!offer) throw new CallSetupError("The sdpfrag must carry a=ice-ufrag and a=ice-pwd.");
    try {
      await this.#pc.setRemoteDescription({ type: "offer", sdp: offer });
      await this.#pc.setLocalDescription(await this.#pc.createAnswer());
      startRestartedIce(this.#pc, this.#log);
    } catch (error) {
      throw new CallSetupError(`The sdpfrag could not be applied: ${(error as Error).message}`);
    }
    this.#offerSdp = offer;
    const frag = iceFragment(this.#pc.localDescription!.sdp);
    const network = this.#options.network;
    return network.publicIp ? rewriteCandidateAddress(frag, network.mediaIp, network.publicIp) : frag;
  }

  stats(): CallStats {
    const up = this.#uplink?.stats;
    const stats: CallStats = {
      packets_in: up?.packets ?? 0,
      packets_out: this.#packetsOut,
      packets_lost: up?.lost ?? 0,
      jitter_ms: round2(up?.jitterMs ?? 0),
      late_frames: up?.late ?? 0,
    };
    if (this.#rttMs !== undefined) stats.rtt_ms = round2(this.#rttMs);
    const transport = this.transport;
    if (transport) stats.transport = transport;
    if (up) {
      const expected = up.packets - up.late + up.lost;
      const fec = this.#lossAdaptive;
      stats.quality = {
        uplink: {
          loss_percent: expected > 0 ? round2((100 * up.lost) / expected) : 0,
          fec_recovered_frames: up.recovered,
          concealed_frames: up.concealed,
          ...(this.#redPayloadType !== undefined && { red_recovered_frames: up.redRecovered }),
          jitter_buffer_ms: round2(up.jitterBufferMs),
          jitter_buffer_max_ms: up.reorderDepth * FRAME_MS,
        },
        downlink: {
          loss_percent: round2(this.#downlinkFractionLost * 100),
          packets_lost: this.#downlinkPacketsLost,
          jitter_ms: round2(this.#downlinkJitterMs),
          fec_expected_loss_percent: fec?.expectedLossPercent ?? 0,
          fec_frames: fec?.fecFrames ?? 0,
          ...(this.#redPayloadType !== undefined && { red_distance: this.#downlinkRedDistance() }),
        },
      };
    }
    return stats;
  }

  get droppedMessages(): number {
    return this.#droppedMessages;
  }

  /** What the call's UDP surface refused (forged STUN, foreign DTLS/SRTP, replays, …). */
  /** The relay's side of the selected ICE pair: `tcp` for ICE-TCP; undefined before one is selected. */
  get transport(): "udp" | "tcp" | undefined {
    const local = this.#pc.iceTransports[0]?.connection.nominated?.localCandidate;
    if (!local) return undefined;
    return local.transport === "tcp" ? "tcp" : "udp";
  }

  get udpGuard(): UdpGuardStats {
    return udpGuardStats(this.#pc);
  }

  get uplinkStats() {
    return this.#uplink?.stats;
  }

  /** Sidebands attached now (MAX_SIDEBANDS_PER_CALL at most). */
  get sidebands(): number {
    return this.#sidebands.size;
  }

  /**
   * Attaches an app server's WebSocket to the call's bridge. "full" at MAX_SIDEBANDS_PER_CALL;
   * "ended" once the call is ending; "unsupported" for a bridge that carries no events.
   */
  attachSideband(socket: SidebandSocket): "attached" | "full" | "ended" | "unsupported" {
    if (this.#state === "ended") return "ended";
    if (this.#sidebands.size >= MAX_SIDEBANDS_PER_CALL) return "full";
    const bridge = this.#bridge;
    if (!bridge?.attachSideband) return "unsupported";
    this.#sidebands.add(socket);
    socket.onClose(() => this.#sidebands.delete(socket));
    socket.attach(bridge.attachSideband(socket));
    return "attached";
  }

  /** Ends the call once; later calls are no-ops. Resolves when everything is closed. */
  end(reason: EndReason, message?: string): Promise<void> {
    if (this.#closed) return this.#closed;
    this.#endReason = reason;
    this.#state = "ended";
    this.#closed = this.#close(reason, message);
    return this.#closed;
  }

  close(): Promise<void> {
    return this.end("hangup");
  }

  async #close(reason: EndReason, message: string | undefined): Promise<void> {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    if (this.#disconnectTimer) clearTimeout(this.#disconnectTimer);
    if (this.#linkWatch) clearInterval(this.#linkWatch);
    // Children first: nothing may feed the PeerConnection while it closes. The sidebands hear
    // why the call ended, then close.
    const usage = this.#usage();
    this.#tellBridge({ state: "ended", reason, message, usage });
    try {
      this.#bridge?.close();
    } catch (error) {
      this.#log.warn({ err: error }, "bridge close failed");
    }
    for (const sideband of [...this.#sidebands])
      sideband.close(SIDEBAND_CLOSE.callEnded, `call ended: ${reason}`);
    if (this.#downlink) {
      this.#options.pacer.delete(this.#downlink);
      this.#downlink.close();
    }
    this.#releaseEncoder();
    this.#uplink?.close();
    try {
      await this.#pc.close();
    } catch (error) {
      this.#log.warn({ err: error }, "peer connection close failed");
    }
    this.#problems.flush();
    this.#options.metrics.callsEnded.inc({ reason });
    this.#log.info({ reason, stats: this.stats() }, "call ended");
    this.emit("ended", reason, message, usage);
  }

  /** What the call used: audio each way (one packet is 20 ms), and the model's part from the bridge. */
  #usage(): CallUsage {
    let model: ReturnType<NonNullable<CallBridge["modelUsage"]>> = { turns: 0, model: {} };
    try {
      model = this.#bridge?.modelUsage?.() ?? model;
    } catch (error) {
      this.#log.warn({ err: error }, "bridge modelUsage failed");
    }
    return {
      audio_in_seconds: ((this.#uplink?.stats.packets ?? 0) * FRAME_MS) / 1000,
      audio_out_seconds: (this.#packetsOut * FRAME_MS) / 1000,
      turns: model.turns,
      ...(model.bargeIns === undefined ? {} : { barge_ins: model.bargeIns }),
      model: model.model,
    };
  }

  /** Tells the bridge when the caller's link goes down (ICE, or its RTP stops) or comes back. */
  #reportLink(): void {
    if (this.#state !== "connected") return;
    const link = this.#iceDown || this.#mediaSilent ? "disconnected" : "connected";
    if (link === this.#link) return;
    this.#link = link;
    this.#tellBridge({ state: link });
  }

  /** From the first packet on: a client whose RTP stops has lost its link, whatever ICE says. */
  #watchMedia(): void {
    this.#linkWatch = setInterval(() => {
      const silent = performance.now() - this.#lastRtpAt > LINK_SILENCE_MS;
      if (silent === this.#mediaSilent) return;
      this.#mediaSilent = silent;
      this.#reportLink();
    }, LINK_CHECK_MS);
    this.#linkWatch.unref();
  }

  /** Hands the call's periodic figures (Relay's stats tick) to the bridge, for its sidebands. */
  shareStats(stats: CallStats): void {
    try {
      this.#bridge?.onCallStats?.(stats);
    } catch (error) {
      this.#log.warn({ err: error }, "bridge onCallStats failed");
    }
  }

  #tellBridge(change: CallStateChange): void {
    try {
      this.#bridge?.onCallState?.(change);
    } catch (error) {
      this.#log.warn({ err: error }, "bridge onCallState failed");
    }
  }

  /**
   * The client's RTCP receiver report on the downlink (every 0.5–1.5 s from werift, about 1 s
   * from browsers): loss and jitter as the client saw them, the round trip werift derived from
   * it, and the loss the downlink's FEC should plan for. A malformed report changes nothing.
   */
  #onReceiverReport(packet: RtcpPacket, sender: RTCRtpSender): void {
    if (packet.type !== RtcpRrPacket.type && packet.type !== RtcpSrPacket.type) return;
    const report = (packet as RtcpRrPacket | RtcpSrPacket).reports.find((r) => r.ssrc === sender.ssrc);
    if (!report || this.#state === "ended") return;
    this.#downlinkFractionLost = report.fractionLost / 256;
    this.#downlinkPacketsLost = report.packetsLost;
    this.#downlinkJitterMs = (report.jitter * 1000) / this.#clockRate;
    this.#lossAdaptive?.onReceiverReport({
      fractionLost: this.#downlinkFractionLost,
      now: performance.now(),
    });
    this.#redDistance = this.#downlinkRedDistance();
    for (const stats of sender.collectStats(0)) {
      if (stats.type !== "remote-inbound-rtp") continue;
      const { roundTripTime } = stats as RTCRemoteInboundRtpStreamStats;
      if (typeof roundTripTime === "number") this.#rttMs = roundTripTime * 1000;
    }
    if (this.#rttMs !== undefined) this.#bridge?.onRoundTrip?.(this.#rttMs);
    this.#options.metrics.observeDownlinkReport(this.#downlinkFractionLost, this.#rttMs);
  }

  /**
   * Earlier frames werift's sender copies into each downlink RED packet: RELAY_RED_DISTANCE while
   * the loss-adaptive encoder is in its lossy mode (reported loss, or the call's first seconds),
   * else none: a clean link pays one header byte a packet, not twice or three times the audio.
   */
  #downlinkRedDistance(): number {
    return (this.#lossAdaptive?.expectedLossPercent ?? 0) > 0 ? (this.#options.redDistance ?? 0) : 0;
  }

  #timer(fn: () => void, ms: number): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      fn();
    }, ms);
    this.#timers.add(timer);
  }

  #setUpMedia(mimeType: string, transceiver: RTCRtpTransceiver): void {
    const { metrics, pacer } = this.#options;
    const law = mimeType === "audio/pcmu" ? "pcmu" : mimeType === "audio/pcma" ? "pcma" : undefined;
    const decoder = law ? new G711Decoder(law) : opusUplinkDecoder();
    this.#clockRate = decoder.clockRate;
    let encoder: DownlinkEncoder;
    if (law) encoder = new G711Encoder(law);
    else if (this.#options.networkResilience ?? true) {
      [this.#lossAdaptive, this.#releaseEncoder] = lossAdaptiveDownlinkEncoder(this.#options.encoderGovernor);
      encoder = this.#lossAdaptive;
    } else [encoder, this.#releaseEncoder] = opusDownlinkEncoder(this.#options.encoderGovernor);
    const events: EventChannelPort = {
      get open() {
        return channel()?.readyState === "open";
      },
      get maxMessageBytes() {
        return channel()?.sctp.remoteMaxMessageSize ?? 0;
      },
      send: (text: string) => this.#sendEvent(text),
    };
    const channel = () => this.#channel;
    const sender = transceiver.sender;
    if (this.#redPayloadType !== undefined) {
      // The relay parses RED itself (bounds-checked, and it knows a copy from a lost packet's
      // stand-in); werift would unpack it unchecked (patches/README.md, 050).
      transceiver.receiver.unpackRed = false;
      this.#redDistance = this.#downlinkRedDistance();
    }
    const red = this.#redPayloadType !== undefined;
    sender.onRtcp.subscribe((packet) => {
      try {
        this.#onReceiverReport(packet, sender);
      } catch (error) {
        this.#problems.warn("client RTCP report unreadable", { error: (error as Error).message });
      }
    });
    this.#downlink = new Downlink({
      encoder,
      observer: {
        onPlayoutStarted: (itemId) => this.#bridge?.onPlayoutStarted(itemId),
        onPlayoutStopped: (itemId) => this.#bridge?.onPlayoutStopped(itemId),
        onFrameSent: (frame) => this.#bridge?.onDownlinkSent?.(frame),
      },
      send: (payload, sequenceNumber, timestamp, marker) => {
        // werift's sender packs RED as it sends (synchronously, before its first await). An idle
        // keepalive goes without copies: 300 ms after the speech they would repeat, no receiver
        // wants them, and a receiver that concealed past that speech should not be handed it.
        if (red) sender.redDistance = isKeepalive(payload) ? 0 : this.#redDistance;
        const header = new RtpHeader({ sequenceNumber, timestamp, marker, payloadType: this.#payloadType });
        this.#packetsOut++;
        metrics.framesDownlink.inc();
        sender.sendRtp(new RtpPacket(header, payload)).catch(() => {
          // A send that fails after close is expected; nothing to do per packet.
        });
      },
      observeWork: (s) => metrics.downlinkWork.observe(s),
    });
    this.#uplink = new Uplink({
      decoder,
      payloadType: this.#payloadType,
      reorderDepth: REORDER_DEPTH,
      adaptiveDepth: this.#options.networkResilience ?? true,
      onFrame: (pcm, mediaTimeMs) => {
        metrics.framesUplink.inc();
        this.#bridge?.onUplinkFrame(pcm, mediaTimeMs);
      },
      observeWork: (s) => metrics.uplinkWork.observe(s),
    });
    const uplink = this.#uplink;
    const redPayloadType = this.#redPayloadType;
    const attach = (track: MediaStreamTrack) => {
      if (attached.has(track)) return;
      attached.add(track);
      track.onReceiveRtp.subscribe((rtp) => {
        const { lost, late, recovered, concealed, redRecovered, redPackets } = uplink.stats;
        const { sequenceNumber, timestamp, payloadType } = rtp.header;
        if (payloadType !== redPayloadType) uplink.receive(sequenceNumber, timestamp, rtp.payload);
        else {
          const problem = uplink.receiveRed(sequenceNumber, timestamp, rtp.payload);
          if (problem) this.#problems.warn(`client RED packet not used: ${problem}`);
        }
        if (uplink.stats.lost !== lost) metrics.packetsLost.inc(uplink.stats.lost - lost);
        if (uplink.stats.late !== late) metrics.packetsLate.inc(uplink.stats.late - late);
        if (uplink.stats.recovered !== recovered)
          metrics.uplinkFecRecovered.inc(uplink.stats.recovered - recovered);
        if (uplink.stats.redPackets !== redPackets) metrics.uplinkRedPackets.inc();
        if (uplink.stats.redRecovered !== redRecovered)
          metrics.uplinkRedRecovered.inc(uplink.stats.redRecovered - redRecovered);
        if (uplink.stats.concealed !== concealed)
          metrics.uplinkConcealed.inc(uplink.stats.concealed - concealed);
        this.#lastRtpAt = performance.now();
        if (!this.#firstAudio) {
          this.#firstAudio = true;
          this.#watchMedia();
          this.emit("first_audio");
        }
      });
    };
    // werift may have created the remote track while applying the offer, before we got here.
    const attached = new Set<MediaStreamTrack>();
    for (const track of transceiver.receiver.tracks) attach(track);
    transceiver.onTrack.subscribe((track) => attach(track));
    const ctx: CallContext = {
      callId: this.id,
      session: this.#options.session,
      log: this.#log,
      metrics,
      downlink: this.#downlink,
      events,
      end: (reason, message) => void this.end(reason, message),
      reportLog: (items) => this.emit("log", items),
      reportSession: (session) => this.emit("session", session),
      ...(this.#options.resume ? { resume: this.#options.resume } : {}),
    };
    this.#bridge = this.#options.bridgeFactory(ctx);
    // The downlink joins the pacer when the transport connects: a frame "sent" before DTLS is
    // up never reaches the client, and the PlayoutLedger must only count what could.
    if (this.#state === "connected") pacer.add(this.#downlink);
  }

  /**
   * werift throws from send() for a message over the peer's max-message-size (and on a closing
   * association). A throw here would escape the upstream's or the pacer's event handler and take
   * the whole relay down, so nothing a bridge sends may throw: an oversize message is refused
   * before werift sees it, and anything else werift throws is caught. Counted, logged once.
   */
  #sendEvent(text: string): EventSendResult {
    const channel = this.#channel;
    if (channel?.readyState !== "open") return "closed";
    const max = channel.sctp.remoteMaxMessageSize;
    // UTF-8 is at most 3 bytes per UTF-16 unit: most messages skip the byte count.
    if (max > 0 && text.length * 3 > max && Buffer.byteLength(text) > max) {
      this.#options.metrics.unsentEvents.inc({ reason: "too_large" });
      return "too_large";
    }
    try {
      channel.send(text);
      return "sent";
    } catch (error) {
      this.#options.metrics.unsentEvents.inc({ reason: "failed" });
      if (this.#failedSends++ === 0) this.#log.warn({ err: error }, "data channel send failed");
      return "failed";
    }
  }

  #onDataChannel(channel: RTCDataChannel): void {
    if (channel.label !== EVENTS_CHANNEL_LABEL || this.#channel) {
      channel.close();
      return;
    }
    this.#channel = channel;
    const opened = () => {
      try {
        this.#bridge?.onChannelOpen();
      } catch (error) {
        this.#log.warn({ err: error }, "bridge onChannelOpen failed");
      }
    };
    if (channel.readyState === "open") opened();
    channel.stateChanged.subscribe((state) => {
      if (state === "open") opened();
      else if (state === "closed" && this.#state !== "ended")
        void this.end("client_hangup", "oai-events closed.");
    });
    channel.onMessage.subscribe((message) => {
      // Text only, and capped: the size check is cheap for the common small message.
      if (
        typeof message !== "string" ||
        (message.length * 3 > MAX_CLIENT_MESSAGE_BYTES &&
          Buffer.byteLength(message) > MAX_CLIENT_MESSAGE_BYTES)
      ) {
        this.#droppedMessages++;
        this.#options.metrics.droppedMessages.inc();
        return;
      }
      try {
        this.#bridge?.onClientMessage(message);
      } catch (error) {
        this.#log.warn({ err: error }, "bridge onClientMessage failed");
      }
    });
  }

  #onConnectionState(state: string): void {
    if (this.#state === "ended") return;
    switch (state) {
      case "connected":
        if (this.#disconnectTimer) clearTimeout(this.#disconnectTimer);
        this.#disconnectTimer = undefined;
        this.#iceDown = false;
        if (this.#state !== "connected") {
          this.#state = "connected";
          this.connectedAt = performance.now();
          if (this.#downlink) this.#options.pacer.add(this.#downlink);
          this.#log.info({ ms: Math.round(this.connectedAt - this.createdAt) }, "call connected");
          this.emit("connected");
        }
        this.#reportLink();
        return;
      case "disconnected":
        // ICE may come back on its own or through a restart (PATCH); give it a while.
        this.#iceDown = true;
        this.#reportLink();
        this.#disconnectTimer ??= setTimeout(
          () => void this.end("ice_failed", "ICE disconnected."),
          DISCONNECTED_GRACE_MS,
        );
        return;
      case "failed": {
        const dtlsFailed = this.#pc.dtlsTransports.some((t) => t.state === "failed");
        void this.end(dtlsFailed ? "dtls_failed" : "ice_failed");
        return;
      }
      case "closed":
        void this.end("client_hangup");
        return;
    }
  }
}
