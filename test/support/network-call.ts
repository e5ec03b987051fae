// One call on an impaired network, measured each way, for the network tests and bench/network.ts.
// A werift client places a call on a relay process with its media through the impairment proxy
// (test/support/impairment.ts), and a Realtime upstream in this process (NetworkModel) plays the
// model. The call runs three phases:
//   downlink   the model says `reply` (at once, as a model streams ahead); the client records the
//              RTP it gets; with `blackoutMs`, the link goes dark 1 s into it
//   uplink     the client says `speech` (Opus with in-band FEC, a browser's settings); the model
//              records the PCM the relay appended
//   barge-in   the model says `reply` again; 1 s into it the client says `interruption`; the relay's
//              VAD should stop the reply and truncate it at what the client heard
// Each direction: frames delivered, recovered from FEC or concealed, the delay a receiver adds to
// absorb the jitter, and a quality score of the received speech against the sent speech.
import { performance } from "node:perf_hooks";
import { RtpHeader, RtpPacket } from "werift";
import { WebSocketServer, type WebSocket } from "ws";
import { OpusDecoder } from "../../relay/media/opus-codec.ts";
import { opusPacketHasFec } from "../../relay/media/opus-packet.ts";
import { parseRed, RedBlocks } from "../../relay/media/red.ts";
import { createOpusEncoder, FRAME, isKeepalive, lastSoundAt, RATE, rms } from "./audio.ts";
import {
  hostCandidatePort,
  routeAnswerThroughProxy,
  startImpairmentProxy,
  type ImpairmentProfile,
  type ImpairmentProxy,
} from "./impairment.ts";
import { CLIENT_RED_PT, RED_OFFER_CODECS, TestPeer, type ReceivedPacket } from "./peer.ts";
import { bootIdOf, postCall, ticketFor } from "./relay-api.ts";
import { metricValue } from "./relays.ts";
import { envelopeScore } from "./speech-quality.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const CHUNK = RATE / 10; // 100 ms deltas
let events = 0;
const eventId = () => `event_net${++events}`;

/** A Realtime upstream that keeps what it hears and says what it is told, one session at a time. */
export class NetworkModel {
  /** Appended uplink PCM, in order, and when each append arrived. */
  readonly heard: { at: number; pcm: Int16Array }[] = [];
  readonly events: { type: string; at: number; event: Record<string, unknown> }[] = [];
  #socket: WebSocket | undefined;
  /** Sessions whose session.update has arrived (the relay sends one as it connects). */
  #ready = 0;
  #waiters: (() => void)[] = [];
  #replies = 0;

  readonly server: WebSocketServer;

  private constructor(server: WebSocketServer) {
    this.server = server;
    server.on("connection", (socket) => {
      this.#socket = socket;
      socket.send(
        JSON.stringify({ type: "session.created", event_id: eventId(), session: { type: "realtime" } }),
      );
      socket.on("message", (data) => {
        const event = JSON.parse(String(data)) as Record<string, unknown>;
        const at = performance.now();
        if (event.type === "input_audio_buffer.append") {
          const bytes = Buffer.from(String(event.audio), "base64");
          this.heard.push({ at, pcm: new Int16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2) });
          return;
        }
        this.events.push({ type: String(event.type), at, event });
        if (event.type === "session.update") {
          socket.send(
            JSON.stringify({ type: "session.updated", event_id: eventId(), session: { type: "realtime" } }),
          );
          if (socket === this.#socket) {
            this.#ready++;
            for (const wake of this.#waiters.splice(0)) wake();
          }
        }
      });
    });
  }

  static async start(): Promise<NetworkModel> {
    const server = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false });
    await new Promise<void>((resolve) => server.once("listening", resolve));
    return new NetworkModel(server);
  }

  get url(): string {
    const address = this.server.address();
    if (typeof address === "string" || !address) throw new Error("not listening");
    return `ws://127.0.0.1:${address.port}/v1/realtime`;
  }

  /** The relay's session with this model is still open. */
  get connected(): boolean {
    return this.#socket?.readyState === this.#socket?.OPEN;
  }

  /** Sessions opened so far: pass it to opened() before placing a call. */
  get sessions(): number {
    return this.#ready;
  }

  /** Resolves once a session after the first `after` has opened. */
  async opened(after: number): Promise<void> {
    while (this.#ready <= after) await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  /** Says `pcm` as one reply, all deltas at once (a model runs ahead; the relay paces). */
  reply(pcm: Int16Array): string {
    const socket = this.#socket!;
    const n = ++this.#replies;
    const responseId = `resp_net${n}`;
    const itemId = `item_net${n}`;
    socket.send(
      JSON.stringify({ type: "response.created", response: { id: responseId, status: "in_progress" } }),
    );
    for (let offset = 0; offset < pcm.length; offset += CHUNK) {
      const chunk = pcm.subarray(offset, Math.min(pcm.length, offset + CHUNK));
      socket.send(
        JSON.stringify({
          type: "response.output_audio.delta",
          event_id: eventId(),
          response_id: responseId,
          item_id: itemId,
          output_index: 0,
          content_index: 0,
          delta: Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("base64"),
        }),
      );
    }
    socket.send(
      JSON.stringify({
        type: "response.done",
        event_id: eventId(),
        response: { id: responseId, status: "completed" },
      }),
    );
    return itemId;
  }

  /** All appended PCM from index `from` of `heard` on, as one run. */
  heardPcm(from = 0): Int16Array {
    const parts = this.heard.slice(from);
    const out = new Int16Array(parts.reduce((n, p) => n + p.pcm.length, 0));
    let offset = 0;
    for (const p of parts) {
      out.set(p.pcm, offset);
      offset += p.pcm.length;
    }
    return out;
  }

  async close(): Promise<void> {
    this.#socket?.terminate();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export interface DirectionResult {
  /** 20 ms frames the sender sent. */
  frames: number;
  /** Frames that arrived (in time for the receiver's jitter buffer) or were rebuilt from FEC, %. */
  deliveredOrRecoveredPercent: number;
  recovered: number;
  /** Frames taken from a later packet's RED copy (RFC 2198). */
  redRecovered: number;
  concealed: number;
  /** Mean delay the receiver's jitter buffer added, ms. */
  addedDelayMs: number;
  /** Mean RTP payload per packet of the speech, bytes (RED copies included); downlink only. */
  payloadBytes?: number;
  /** Mean correlation of the 20 ms log-spectral envelopes of received and sent speech (1 = same). */
  quality: number;
}

export interface NetworkCallResult {
  uplink: DirectionResult;
  downlink: DirectionResult;
  /** Client speech onset → last assistant packet the client received; NaN if no barge-in. */
  bargeInMs: number;
  /** Each barge-in of the call (NetworkCallOptions.bargeIns), the first being bargeInMs. */
  bargeInTrialsMs: number[];
  truncateErrorsMs: number[];
  /** The truncate's audio_end_ms − the reply audio the client received; NaN without a truncate. */
  truncateErrorMs: number;
  /** With a blackout: the link back → first downlink packet at the client, and → first append at the model. */
  downlinkResumeMs?: number;
  uplinkResumeMs?: number;
  /** The call was still up at the end (ICE connected, the model's session open). */
  survived: boolean;
}

export interface RelayUnderTest {
  url: string;
  relayId: string;
  secret: string;
  /** The relay's Prometheus /metrics text. */
  metrics(): Promise<string>;
}

export interface NetworkCallOptions {
  relay: RelayUnderTest;
  model: NetworkModel;
  profile: ImpairmentProfile;
  seed?: number;
  blackoutMs?: number;
  /** 24 kHz speech: what the model says, what the client says, and the client's interruption. */
  reply: Int16Array;
  speech: Int16Array;
  interruption: Int16Array;
  /**
   * The client offers `audio/red` (after Opus, as Chrome does) and sends this many earlier frames
   * in each packet; it parses the relay's RED itself, as a browser's NetEq does. Undefined: no RED.
   */
  red?: number;
  /** Interruptions in phase 3, each of its own reply (default 1). */
  bargeIns?: number;
}

/** Encodes PCM as 20 ms Opus packets, the way a browser's microphone track would. */
function encode(pcm: Int16Array, encoder: ReturnType<typeof createOpusEncoder>): Buffer[] {
  const packets: Buffer[] = [];
  for (let offset = 0; offset + FRAME <= pcm.length; offset += FRAME)
    packets.push(encoder.encode(Buffer.from(pcm.buffer, pcm.byteOffset + offset * 2, FRAME * 2)));
  return packets;
}

interface Heard {
  sequenceNumber: number;
  timestamp: number;
  /** The Opus frame: the packet's payload, or its primary block when it came as RED. */
  payload: Uint8Array;
  at: number;
  /** From RED: earlier frames' copies, by their sequence number. */
  redundant?: { sequenceNumber: number; payload: Uint8Array }[];
}

const redBlocks = new RedBlocks();
const heardCache = new WeakMap<ReceivedPacket, Heard>();

/** A received packet as the client's decoder sees it: RED unwrapped (relay/media/red.ts). */
function heard(packet: ReceivedPacket): Heard {
  if (packet.payloadType !== CLIENT_RED_PT) return packet;
  let unwrapped = heardCache.get(packet);
  if (unwrapped) return unwrapped;
  const payload = packet.payload;
  const problem = parseRed(payload, redBlocks);
  const n = redBlocks.count;
  const redundant = [];
  for (let i = 0; i < n - 1; i++) {
    redundant.push({
      sequenceNumber: (packet.sequenceNumber - (n - 1 - i)) & 0xffff,
      payload: payload.subarray(redBlocks.starts[i], redBlocks.ends[i]),
    });
  }
  unwrapped = {
    sequenceNumber: packet.sequenceNumber,
    timestamp: packet.timestamp,
    at: packet.at,
    payload: problem ? new Uint8Array(0) : payload.subarray(redBlocks.starts[n - 1], redBlocks.ends[n - 1]),
    redundant,
  };
  heardCache.set(packet, unwrapped);
  return unwrapped;
}

/**
 * What a browser's receiver makes of the downlink packets of one reply: in sequence order, each
 * missing packet taken from a later packet's RED copy if there is one, else rebuilt from the next
 * one's FEC if it has any, else concealed; and the jitter delay it needs for 99 % of packets to
 * be on time (its jitter buffer's target).
 */
function receive(packets: Heard[]): {
  pcm: Int16Array;
  frames: number;
  recovered: number[];
  redRecovered: number[];
  concealed: number[];
  delayMs: number;
} {
  if (packets.length === 0)
    return { pcm: new Int16Array(0), frames: 0, recovered: [], redRecovered: [], concealed: [], delayMs: 0 };
  // Index packets from the lowest sequence number heard (the first to arrive may be a reordered
  // later one); signed 16-bit distances from the first arrival find it.
  const offset = (p: Heard) => (((p.sequenceNumber - packets[0]!.sequenceNumber) & 0xffff) << 16) >> 16;
  const lowest = Math.min(...packets.map(offset));
  const bySequence = new Map<number, Heard>();
  let last = 0;
  for (const p of packets) {
    const index = offset(p) - lowest;
    bySequence.set(index, p);
    last = Math.max(last, index);
  }
  const fromRed = new Set<number>();
  for (const p of packets) {
    for (const copy of p.redundant ?? []) {
      const index = offset({ ...p, sequenceNumber: copy.sequenceNumber }) - lowest;
      if (index < 0 || bySequence.has(index) || copy.payload.length === 0) continue;
      bySequence.set(index, { ...p, sequenceNumber: copy.sequenceNumber, payload: copy.payload });
      fromRed.add(index);
    }
  }
  const decoder = new OpusDecoder();
  const pcm = new Int16Array((last + 1) * FRAME);
  const recovered: number[] = [];
  const concealed: number[] = [];
  for (let i = 0; i <= last; i++) {
    const out = pcm.subarray(i * FRAME, (i + 1) * FRAME);
    const packet = bySequence.get(i);
    const next = bySequence.get(i + 1);
    if (packet) decoder.decode(packet.payload, out);
    else if (next && opusPacketHasFec(next.payload)) {
      decoder.recover(next.payload, out);
      recovered.push(i);
    } else {
      decoder.conceal(out);
      concealed.push(i);
    }
  }
  // Transit = arrival − send time on the sender's clock (RTP timestamp): its spread is the jitter.
  const transit = packets.map(
    (p) => p.at - (rtpDistance(packets[0]!.timestamp, p.timestamp) * 1000) / 48_000,
  );
  transit.sort((a, b) => a - b);
  const delayMs = transit[Math.floor(0.99 * (transit.length - 1))]! - transit[0]!;
  return { pcm, frames: last + 1, recovered, redRecovered: [...fromRed], concealed, delayMs };
}

/** `to` − `from` in RTP timestamp units, signed (32-bit wrap): a reordered packet may come first. */
const rtpDistance = (from: number, to: number) => (to - from) | 0;

/** Indexes of the 20 ms frames of `pcm` within 30 dB of its loudest frame: its speech. */
function voicedFrames(pcm: Int16Array): Set<number> {
  const level = (k: number) => rms(pcm, k * FRAME, Math.min(pcm.length, (k + 1) * FRAME));
  const frames = Math.ceil(pcm.length / FRAME);
  let loudest = 0;
  for (let k = 0; k < frames; k++) loudest = Math.max(loudest, level(k));
  const voiced = new Set<number>();
  for (let k = 0; k < frames; k++) if (level(k) > loudest * 0.03) voiced.add(k);
  return voiced;
}

/** Places one call through an impairment proxy and runs the three phases. */
export async function runNetworkCall(options: NetworkCallOptions): Promise<NetworkCallResult> {
  const { relay, model, profile } = options;
  const peer = new TestPeer({
    record: true,
    ...(options.red !== undefined && { audioCodecs: RED_OFFER_CODECS }),
  });
  let proxy: ImpairmentProxy | undefined;
  let mic: NodeJS.Timeout | undefined;
  try {
    // No client candidates in the offer: the relay can only reach the client through the proxy
    // (it learns the proxy's address from the client's checks, as from behind a NAT).
    const offer = (await peer.offer())
      .split("\r\n")
      .filter((line) => !line.startsWith("a=candidate:"))
      .join("\r\n");
    const ticket = await ticketFor(
      peer.callId,
      offer,
      {},
      {
        secret: relay.secret,
        relayId: relay.relayId,
        bootId: await bootIdOf(relay.url),
      },
    );
    const sessions = model.sessions;
    const response = await postCall(relay.url, { call_id: peer.callId, offer_sdp: offer }, ticket);
    const body = (await response.json()) as { answer_sdp?: string };
    if (response.status !== 201 || !body.answer_sdp) throw new Error(`POST /calls: ${response.status}`);
    const relayPort = hostCandidatePort(body.answer_sdp);
    proxy = await startImpairmentProxy({ targetPort: relayPort, seed: options.seed ?? 1 });
    await peer.applyAnswer(routeAnswerThroughProxy(body.answer_sdp, proxy.port, relayPort));
    await peer.connected();
    const redNegotiated = peer.transceiver.codecs.some((c) => c.mimeType.toLowerCase() === "audio/red");
    if (options.red !== undefined && !redNegotiated) throw new Error("the relay did not answer audio/red");
    if (redNegotiated) {
      // The client parses RED as a browser would (heard() above), and sends it at its distance.
      peer.transceiver.receiver.unpackRed = false;
      peer.transceiver.sender.redDistance = options.red!;
    }
    const received = () => peer.received.map(heard);
    // The network turns bad once the call is up: this measures the media path, not setup (which
    // at 80 ms of jitter can outlast the test peer's 10 s connect timeout).
    proxy.up.profile = profile;
    proxy.down.profile = profile;
    await model.opened(sessions);
    const atStart = await relay.metrics();

    // The microphone: a packet every 20 ms on a real clock, silence unless speech is queued.
    const encoder = createOpusEncoder();
    const silence = encode(new Int16Array(FRAME), encoder)[0]!;
    let queued: Buffer[] = [];
    let queuedSentAt: number | undefined;
    let sequence = Math.floor(Math.random() * 0xffff);
    let timestamp = Math.floor(Math.random() * 0xffffffff);
    const origin = performance.now();
    let n = 0;
    const tick = () => {
      const payload = queued.shift() ?? silence;
      if (payload !== silence) queuedSentAt ??= origin + n * 20;
      sequence = (sequence + 1) & 0xffff;
      timestamp = (timestamp + 960) >>> 0;
      const packet = new RtpPacket(
        new RtpHeader({ sequenceNumber: sequence, timestamp, payloadType: 111 }),
        payload,
      );
      peer.transceiver.sender.sendRtp(packet).catch(() => {});
      mic = setTimeout(tick, Math.max(0, origin + ++n * 20 - performance.now()));
    };
    tick();
    const say = (pcm: Int16Array) => {
      queuedSentAt = undefined;
      queued = encode(pcm, encoder);
    };
    const quiet = async (ms: number, timeoutMs: number) => {
      const start = performance.now();
      // The relay's idle keepalive (a silent frame every 300 ms) is not the reply.
      while (performance.now() - Math.max(lastSoundAt(received()), start) < ms) {
        if (performance.now() - start > timeoutMs) return;
        await sleep(10);
      }
    };

    // Phase 1: downlink.
    const downFrom = peer.received.length;
    model.reply(options.reply);
    let blackoutEnd: number | undefined;
    const replyMs = (options.reply.length / RATE) * 1000;
    if (options.blackoutMs) {
      await sleep(1000);
      proxy.blackout(options.blackoutMs);
      blackoutEnd = performance.now() + options.blackoutMs;
    }
    await sleep(Math.max(0, replyMs - (options.blackoutMs ? 1000 : 0)));
    await quiet(400, 5000);
    const downPackets = received()
      .slice(downFrom)
      .filter((p) => !isKeepalive(p));
    const downRaw = peer.received.slice(downFrom).filter((p) => !isKeepalive(heard(p)));
    const downPayloadBytes = downRaw.reduce((n, p) => n + p.payload.length, 0) / Math.max(1, downRaw.length);
    const down = receive(downPackets);
    let downlinkResumeMs: number | undefined;
    let uplinkResumeMs: number | undefined;
    if (blackoutEnd !== undefined) {
      downlinkResumeMs = (downPackets.find((p) => p.at >= blackoutEnd)?.at ?? NaN) - blackoutEnd;
      uplinkResumeMs = (model.heard.find((h) => h.at >= blackoutEnd)?.at ?? NaN) - blackoutEnd;
    }

    // Phase 2: uplink.
    const upFrom = model.heard.length;
    const before = await relay.metrics();
    say(options.speech);
    await sleep((options.speech.length / RATE) * 1000 + 300 + 2 * (profile.jitterMs ?? 0));
    const upQuality = envelopeScore(options.speech, model.heardPcm(upFrom));
    const mid = await relay.metrics();

    // Phase 3: barge-in, `bargeIns` times (a reply, interrupted 1 s in, then a pause).
    const bargeIn = async () => {
      const bargeFrom = peer.received.length;
      const itemId = model.reply(options.reply);
      const listenStart = performance.now();
      const heardOfReply = () =>
        received()
          .slice(bargeFrom)
          .filter((p) => !isKeepalive(p)).length;
      while (heardOfReply() < 50 && performance.now() - listenStart < 5000) await sleep(5);
      say(options.interruption);
      while (queuedSentAt === undefined) await sleep(2);
      const onset = queuedSentAt;
      await quiet(300, replyMs + 2000);
      const bargePackets = received()
        .slice(bargeFrom)
        .filter((p) => !isKeepalive(p));
      const lastAt = bargePackets.at(-1)?.at ?? NaN;
      const endedEarly = bargePackets.length < Math.ceil(options.reply.length / FRAME) * 0.9;
      // The relay holds the reply at speech onset and truncates once the speech has lasted
      // RELAY_BARGE_IN_MIN_SPEECH_MS (480 ms by default): wait for that.
      const findTruncate = () =>
        model.events.find((e) => e.type === "conversation.item.truncate" && e.event.item_id === itemId);
      const truncateWait = performance.now();
      while (!findTruncate() && performance.now() - truncateWait < 3000) await sleep(10);
      const truncate = findTruncate();
      if (process.env.NETWORK_DEBUG)
        process.stderr.write(
          `barge-in: onset ${onset.toFixed(0)} last ${lastAt.toFixed(0)} packets ${bargePackets.length} events ${model.events
            .map(
              (e) =>
                `${e.type}@${(e.at - onset).toFixed(0)}${e.event.item_id ? `:${String(e.event.item_id)}/${String(e.event.audio_end_ms)}` : ""}`,
            )
            .join(",")} item ${itemId}\n`,
        );
      // What the client heard of the reply: its packets' sequence span (a lost packet inside it was
      // concealed or recovered and played all the same). Not the RTP timestamp span: the relay's
      // clock runs on through a hold at speech onset, which the client hears as nothing.
      const heardSpan = bargePackets.map(
        (p) => (((p.sequenceNumber - bargePackets[0]!.sequenceNumber) & 0xffff) << 16) >> 16,
      );
      const heardMs =
        bargePackets.length > 0 ? (Math.max(...heardSpan) - Math.min(...heardSpan) + 1) * 20 : 0;
      return {
        ms: endedEarly ? lastAt - onset : NaN,
        truncateErrorMs: truncate ? Number(truncate.event.audio_end_ms) - heardMs : NaN,
      };
    };
    const bargeIns: { ms: number; truncateErrorMs: number }[] = [];
    for (let trial = 0; trial < (options.bargeIns ?? 1); trial++) {
      // Past the interruption (its queued speech sent) and a pause, as between turns.
      if (trial > 0) {
        while (queued.length > 0) await sleep(20);
        await sleep(1000);
      }
      bargeIns.push(await bargeIn());
    }
    const after = await relay.metrics();
    clearTimeout(mic);
    mic = undefined;

    const upFrames =
      metricValue(mid, "earshot_relay_uplink_frames_total") -
      metricValue(before, "earshot_relay_uplink_frames_total");
    const upRecovered =
      metricValue(mid, "earshot_relay_uplink_fec_recovered_frames_total") -
      metricValue(before, "earshot_relay_uplink_fec_recovered_frames_total");
    const upRedRecovered =
      metricValue(mid, "earshot_relay_uplink_red_recovered_frames_total") -
      metricValue(before, "earshot_relay_uplink_red_recovered_frames_total");
    const upConcealed =
      metricValue(mid, "earshot_relay_uplink_concealed_frames_total") -
      metricValue(before, "earshot_relay_uplink_concealed_frames_total");
    const heldSum =
      metricValue(after, "earshot_relay_call_jitter_buffer_delay_seconds_sum") -
      metricValue(atStart, "earshot_relay_call_jitter_buffer_delay_seconds_sum");
    const heldCount =
      metricValue(after, "earshot_relay_call_jitter_buffer_delay_seconds_count") -
      metricValue(atStart, "earshot_relay_call_jitter_buffer_delay_seconds_count");
    // Speech frames only (the reply's pauses need no rescue), and those the client never got at
    // all (past its last packet) count as concealed too.
    const voiced = voicedFrames(options.reply);
    const downConcealed =
      down.concealed.filter((i) => voiced.has(i)).length + [...voiced].filter((i) => i >= down.frames).length;
    return {
      uplink: {
        frames: upFrames,
        deliveredOrRecoveredPercent: upFrames > 0 ? 100 * (1 - upConcealed / upFrames) : NaN,
        recovered: upRecovered,
        redRecovered: upRedRecovered,
        concealed: upConcealed,
        addedDelayMs: heldCount > 0 ? (1000 * heldSum) / heldCount : 0,
        quality: upQuality,
      },
      downlink: {
        frames: voiced.size,
        deliveredOrRecoveredPercent: 100 * (1 - downConcealed / voiced.size),
        recovered: down.recovered.filter((i) => voiced.has(i)).length,
        redRecovered: down.redRecovered.filter((i) => voiced.has(i)).length,
        concealed: downConcealed,
        addedDelayMs: down.delayMs,
        payloadBytes: downPayloadBytes,
        quality: envelopeScore(options.reply, down.pcm),
      },
      bargeInMs: bargeIns[0]!.ms,
      truncateErrorMs: bargeIns[0]!.truncateErrorMs,
      bargeInTrialsMs: bargeIns.map((b) => b.ms),
      truncateErrorsMs: bargeIns.map((b) => b.truncateErrorMs),
      ...(downlinkResumeMs === undefined ? {} : { downlinkResumeMs, uplinkResumeMs }),
      survived: peer.pc.connectionState === "connected" && model.connected,
    };
  } finally {
    if (mic) clearTimeout(mic);
    await peer.close();
    await proxy?.close();
  }
}
