// The one werift test peer: a browser's part on loopback. It offers audio (sendrecv) and the
// `oai-events` channel, places its call on a relay (ticket signed here) or through the edge,
// sends Opus RTP on a real clock and records what it hears. The relay tests' callers, the fault
// tests' EventClient, the deployment tests' Caller and bench/'s BenchClient build on it.
import { performance } from "node:perf_hooks";
import {
  RTCPeerConnection,
  RtpHeader,
  RtpPacket,
  type RTCDataChannel,
  RTCRtpCodecParameters,
  type RTCRtpTransceiver,
} from "werift";
import type { CreateCallResponse } from "../../protocol/relay-api.ts";
import { createOpusEncoder, decodeOpus, FRAME } from "./audio.ts";
import { withTimeout } from "./loopback.ts";
import { bootIdOf, newCallId, postCall, postEdgeCall, ticketFor } from "./relay-api.ts";

/** RTP timestamp units in one 20 ms frame (Opus's clock is 48 kHz). */
const FRAME_TICKS = 960;

/** Audio codecs as Chrome offers them for Opus with RFC 2198 redundancy: Opus, then red. */
export const RED_OFFER_CODECS = [
  new RTCRtpCodecParameters({
    mimeType: "audio/opus",
    clockRate: 48_000,
    channels: 2,
    payloadType: 111,
    parameters: "minptime=10;useinbandfec=1",
  }),
  new RTCRtpCodecParameters({
    mimeType: "audio/red",
    clockRate: 48_000,
    channels: 2,
    payloadType: 63,
    parameters: "111/111",
  }),
];
/** The red payload type in RED_OFFER_CODECS. */
export const CLIENT_RED_PT = 63;

export interface ReceivedPacket {
  sequenceNumber: number;
  timestamp: number;
  marker: boolean;
  payloadType: number;
  payload: Buffer;
  at: number;
}

export interface IceServer {
  urls: string | string[];
  username?: string;
  credential?: string;
}

export interface PeerOptions {
  /** STUN/TURN servers; none by default (host candidates on 127.0.0.1 only). */
  iceServers?: IceServer[];
  /** Only relayed (TURN) candidates. */
  relayOnly?: boolean;
  /** Keep every packet heard in `received` and every message in `messages` (default true). */
  record?: boolean;
  /** The local IPv4 address to gather on (default 127.0.0.1), e.g. in a test's network namespace. */
  address?: string;
  /**
   * A client whose network blocks UDP: it reaches the relay only by ICE-TCP, as the active side
   * (RFC 6544). UDP candidates are left out of its offer and ignored in the answer, and it
   * checks TCP pairs only.
   */
  tcpOnly?: boolean;
  /** The audio codecs offered, in order (werift's default: Opus, PCMU). */
  audioCodecs?: RTCRtpCodecParameters[];
}

/** SDP without its UDP candidates (a network that drops UDP never lets them work). */
export function withoutUdpCandidates(sdp: string): string {
  return sdp.replace(/^a=candidate:\S+ \d+ udp .*\r?\n/gim, "");
}

export class TestPeer {
  readonly pc: RTCPeerConnection;
  readonly transceiver: RTCRtpTransceiver;
  readonly channel: RTCDataChannel;
  readonly received: ReceivedPacket[] = [];
  readonly messages: string[] = [];
  readonly callId = newCallId();
  answerSdp = "";
  /** The edge's call path (`/v1/realtime/calls/{id}`) and id, once placed through the edge. */
  callPath = "";
  edgeCallId = "";
  #sequence = Math.floor(Math.random() * 0xffff);
  #timestamp = Math.floor(Math.random() * 0xffffffff);
  /** When the last packet went, and how far pauses have moved the RTP clock since. */
  #lastSentAt: number | undefined;
  #pauseShift = 0;
  #encoder: ReturnType<typeof createOpusEncoder> | undefined;
  readonly #tcpOnly: boolean;

  constructor(options: PeerOptions = {}) {
    this.pc = new RTCPeerConnection({
      iceServers: options.iceServers ?? [],
      ...(options.relayOnly ? { iceTransportPolicy: "relay" as const } : {}),
      iceUseIpv6: false,
      iceInterfaceAddresses: { udp4: options.address ?? "127.0.0.1" },
      iceAdditionalHostAddresses: [options.address ?? "127.0.0.1"],
      ...(options.tcpOnly && {
        iceUseTcp: true,
        iceTcpPassive: false,
        iceFilterCandidatePair: (pair) => pair.localCandidate.transport === "tcp",
      }),
      ...(options.audioCodecs && { codecs: { audio: options.audioCodecs, video: [] } }),
    });
    this.#tcpOnly = options.tcpOnly ?? false;
    this.transceiver = this.pc.addTransceiver("audio", { direction: "sendrecv" });
    this.channel = this.pc.createDataChannel("oai-events");
    if (options.record === false) return;
    this.channel.onMessage.subscribe((m) => this.messages.push(String(m)));
    this.transceiver.onTrack.subscribe((track) => {
      track.onReceiveRtp.subscribe((rtp) => {
        this.received.push({
          sequenceNumber: rtp.header.sequenceNumber,
          timestamp: rtp.header.timestamp,
          marker: rtp.header.marker,
          payloadType: rtp.header.payloadType,
          payload: rtp.payload,
          at: performance.now(),
        });
      });
    });
  }

  /** Creates the offer and waits for ICE gathering (werift gathers in setLocalDescription). */
  async offer(): Promise<string> {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    const sdp = this.pc.localDescription!.sdp;
    return this.#tcpOnly ? withoutUdpCandidates(sdp) : sdp;
  }

  async applyAnswer(sdp: string): Promise<void> {
    this.answerSdp = sdp;
    await this.pc.setRemoteDescription({
      type: "answer",
      sdp: this.#tcpOnly ? withoutUdpCandidates(sdp) : sdp,
    });
  }

  /**
   * Offers, POSTs to the relay with a valid ticket (for `relayId`, signed with `secret`: the
   * test relay's unless given), applies a 201's answer. Returns the HTTP response.
   */
  async call(
    url: string,
    session: unknown = {},
    ticket: { secret?: string; relayId?: string } = {},
  ): Promise<Response> {
    const offerSdp = await this.offer();
    const response = await postCall(
      url,
      { call_id: this.callId, offer_sdp: offerSdp, session },
      await ticketFor(this.callId, offerSdp, session, { bootId: await bootIdOf(url), ...ticket }),
    );
    if (response.status === 201)
      await this.applyAnswer(((await response.clone().json()) as CreateCallResponse).answer_sdp);
    return response;
  }

  /** Offers (once) and POSTs to the edge with `bearer`; on 201 applies the answer. */
  async callViaEdge(
    edgeUrl: string,
    bearer: string,
    headers: Record<string, string> = {},
  ): Promise<Response> {
    const offer = this.pc.localDescription?.sdp ?? (await this.offer());
    const response = await postEdgeCall(edgeUrl, bearer, offer, headers);
    if (response.status === 201) {
      this.callPath = response.headers.get("location") ?? "";
      this.edgeCallId = this.callPath.split("/").at(-1)!;
      await this.applyAnswer(await response.clone().text());
    }
    return response;
  }

  connected(timeoutMs = 10_000): Promise<void> {
    if (this.pc.connectionState === "connected") return Promise.resolve();
    return withTimeout(
      new Promise<void>((resolve) => {
        this.pc.connectionStateChange.subscribe((s) => s === "connected" && resolve());
      }),
      timeoutMs,
      "client connected",
    );
  }

  channelOpen(timeoutMs = 10_000): Promise<void> {
    if (this.channel.readyState === "open") return Promise.resolve();
    return withTimeout(
      new Promise<void>((resolve) => this.channel.stateChanged.subscribe((s) => s === "open" && resolve())),
      timeoutMs,
      "channel open",
    );
  }

  /** The candidate types ICE selected: local (this side) and remote (the relay). */
  selectedPair(): { local: string; remote: string; remoteAddress: string } | undefined {
    const pair = this.pc.iceTransports[0]?.connection.nominated;
    if (!pair) return undefined;
    return {
      local: pair.localCandidate.type,
      remote: pair.remoteCandidate.type,
      remoteAddress: `${pair.remoteCandidate.host}:${pair.remoteCandidate.port}`,
    };
  }

  /** The next packet on this peer's stream: sequence + 1, timestamp + one frame. */
  rtpPacket(payload: Buffer): RtpPacket {
    this.#sequence = (this.#sequence + 1) & 0xffff;
    this.#timestamp = (this.#timestamp + FRAME_TICKS) >>> 0;
    return new RtpPacket(
      new RtpHeader({ sequenceNumber: this.#sequence, timestamp: this.#timestamp, payloadType: 111 }),
      payload,
    );
  }

  /** Encodes 20 ms frames of 24 kHz PCM as Opus (VOIP, in-band FEC on) into RTP packets. */
  encodeFrames(pcm: Int16Array): RtpPacket[] {
    this.#encoder ??= createOpusEncoder();
    const packets: RtpPacket[] = [];
    for (let offset = 0; offset + FRAME <= pcm.length; offset += FRAME)
      packets.push(
        this.rtpPacket(this.#encoder.encode(Buffer.from(pcm.buffer, pcm.byteOffset + offset * 2, FRAME * 2))),
      );
    return packets;
  }

  /**
   * Sends packets `intervalMs` apart. A batch sent after a pause is moved later in RTP time
   * by the pause, as a real sender's clock runs on through silence (RFC 3550 §5.1): a tone sent
   * a second after the last one is a second later in media time, which is what the relay's
   * echo guard lines the uplink up by. Within a batch the timestamps are as encoded (tests
   * reorder packets).
   */
  async sendPackets(packets: RtpPacket[], intervalMs = 20): Promise<void> {
    const start = performance.now();
    if (this.#lastSentAt !== undefined)
      this.#pauseShift += Math.max(0, Math.round((start - this.#lastSentAt) / 20) - 1) * FRAME_TICKS;
    for (let i = 0; i < packets.length; i++) {
      const due = start + i * intervalMs;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const header = packets[i]!.header;
      header.timestamp = (header.timestamp + this.#pauseShift) >>> 0;
      await this.transceiver.sender.sendRtp(packets[i]!);
      this.#lastSentAt = performance.now();
    }
  }

  /** Says 24 kHz PCM: Opus frames sent in real time. */
  say(pcm: Int16Array): Promise<void> {
    return this.sendPackets(this.encodeFrames(pcm));
  }

  /** Decodes what was received (from packet index `from` on), in arrival order, to 24 kHz PCM. */
  decodeReceived(from = 0): Int16Array {
    return decodeOpus(
      this.received
        .slice(from)
        .sort((a, b) => a.at - b.at)
        .map((p) => p.payload),
    );
  }

  async close(): Promise<void> {
    await this.pc.close();
  }
}
