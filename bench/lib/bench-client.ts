// A werift client for benchmarks, on the test harness's peer (test/support/peer.ts): offers, gets an answer (from the relay directly with a ticket
// signed here, or through the edge), and timestamps every setup step on performance.now().
// Sending reuses pre-encoded Opus packets so the load generator spends its CPU on WebRTC, not
// on encoding; receiving counts packets and sequence gaps (loss) without decoding.
import { performance } from "node:perf_hooks";
import { isKeepalive, opus } from "../../test/support/audio.ts";
import { TestPeer } from "../../test/support/peer.ts";
import { bootIdOf, postCall, postEdgeCall, ticketFor } from "../../test/support/relay-api.ts";

export interface SetupTimes {
  /** Start: client secret minted (edge) or the offer about to be POSTed (relay-direct). */
  start: number;
  answered?: number;
  iceConnected?: number;
  dtlsConnected?: number;
  firstAudio?: number;
}

export interface RelayTarget {
  kind: "relay";
  url: string;
  relayId: string;
  secret: string;
}

export interface EdgeTarget {
  kind: "edge";
  url: string;
  apiKey: string;
}

let encoded: Buffer[] | undefined;
/** One second of a 440 Hz tone as 50 Opus packets (24 kHz mono, VOIP, 32 kb/s). */
export function tonePackets(): Buffer[] {
  if (encoded) return encoded;
  const encoder = new opus.OpusEncoder(24_000, 1, 2048);
  encoder.setBitrate(32_000);
  encoded = [];
  for (let f = 0; f < 50; f++) {
    const pcm = new Int16Array(480);
    for (let i = 0; i < 480; i++)
      pcm[i] = Math.round(6000 * Math.sin((2 * Math.PI * 440 * (f * 480 + i)) / 24_000));
    encoded.push(encoder.encode(Buffer.from(pcm.buffer)));
  }
  return encoded;
}

export class BenchClient {
  /** Records nothing itself: the bench counts packets here instead of keeping them. */
  readonly peer: TestPeer;
  readonly pc: TestPeer["pc"];
  readonly callId: string;
  times: SetupTimes = { start: 0 };
  packetsIn = 0;
  packetsOut = 0;
  /** Downlink packets missing from the sequence (loss on loopback means overload). */
  gaps = 0;
  lastPacketAt = 0;
  readonly messages: { at: number; type: string; event: Record<string, unknown> }[] = [];
  keepMessages = false;
  #lastSeq = -1;
  #frame = 0;

  /** `tcpOnly`: a client on a network that blocks UDP (ICE-TCP only, see TestPeer). */
  constructor(options: { tcpOnly?: boolean } = {}) {
    this.peer = new TestPeer({ record: false, tcpOnly: options.tcpOnly ?? false });
    this.pc = this.peer.pc;
    this.callId = this.peer.callId;
    this.peer.channel.onMessage.subscribe((m) => {
      if (!this.keepMessages) return;
      const event = JSON.parse(String(m)) as Record<string, unknown>;
      this.messages.push({ at: performance.now(), type: String(event.type), event });
    });
    this.pc.iceConnectionStateChange.subscribe((s) => {
      if (s === "connected") this.times.iceConnected ??= performance.now();
    });
    this.peer.transceiver.onTrack.subscribe((track) => {
      track.onReceiveRtp.subscribe((rtp) => {
        const seq = rtp.header.sequenceNumber;
        // The relay's idle keepalive is not audio: it counts for the sequence only.
        if (!isKeepalive(rtp)) {
          const now = performance.now();
          this.times.firstAudio ??= now;
          this.lastPacketAt = now;
          this.packetsIn++;
        }
        if (this.#lastSeq >= 0) {
          const step = (seq - this.#lastSeq) & 0xffff;
          if (step > 1 && step < 0x8000) this.gaps += step - 1;
        }
        this.#lastSeq = seq;
      });
    });
  }

  /** Offers, obtains the answer from the target, applies it; resolves once DTLS is connected. */
  async connect(target: RelayTarget | EdgeTarget, timeoutMs = 10_000): Promise<SetupTimes> {
    const offer = await this.peer.offer();
    const answer =
      target.kind === "relay" ? await this.#viaRelay(target, offer) : await this.#viaEdge(target, offer);
    this.times.answered = performance.now();
    const dtls = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not connected after ${timeoutMs} ms`)), timeoutMs);
      const watch = () => {
        for (const t of this.pc.dtlsTransports) {
          t.onStateChange.subscribe((s) => {
            if (s === "connected") {
              this.times.dtlsConnected ??= performance.now();
              clearTimeout(timer);
              resolve();
            } else if (s === "failed") reject(new Error("DTLS failed"));
          });
        }
      };
      watch();
    });
    await this.pc.setRemoteDescription({ type: "answer", sdp: answer });
    await dtls;
    return this.times;
  }

  async #viaRelay(target: RelayTarget, offer: string): Promise<string> {
    const session = {};
    const ticket = await ticketFor(this.callId, offer, session, {
      secret: target.secret,
      relayId: target.relayId,
      bootId: await bootIdOf(target.url),
    });
    this.times.start = performance.now();
    const res = await postCall(target.url, { call_id: this.callId, offer_sdp: offer, session }, ticket);
    const body = (await res.json()) as { answer_sdp?: string };
    if (res.status !== 201 || !body.answer_sdp)
      throw new Error(`relay POST /calls: ${res.status} ${JSON.stringify(body)}`);
    return body.answer_sdp;
  }

  async #viaEdge(target: EdgeTarget, offer: string): Promise<string> {
    const secretRes = await fetch(`${target.url}/v1/realtime/client_secrets`, {
      method: "POST",
      headers: { authorization: `Bearer ${target.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ session: { type: "realtime", model: "gpt-realtime" } }),
    });
    const secret = (await secretRes.json()) as { value?: string };
    if (!secretRes.ok || !secret.value)
      throw new Error(`client_secrets: ${secretRes.status} ${JSON.stringify(secret)}`);
    this.times.start = performance.now();
    const res = await postEdgeCall(target.url, secret.value, offer);
    const text = await res.text();
    if (res.status !== 201) throw new Error(`POST /v1/realtime/calls: ${res.status} ${text}`);
    return text;
  }

  #encoder: InstanceType<typeof opus.OpusEncoder> | undefined;
  #queued: Buffer[] = [];
  /** performance.now() when the first packet of the last queued PCM went out. */
  queuedSentAt: number | undefined;

  /** Queues PCM (24 kHz) to send, 20 ms per sendFrame(), instead of the tone or silence. */
  queuePcm(pcm: Int16Array): void {
    this.#encoder ??= new opus.OpusEncoder(24_000, 1, 2048);
    this.queuedSentAt = undefined;
    for (let offset = 0; offset + 480 <= pcm.length; offset += 480)
      this.#queued.push(this.#encoder.encode(Buffer.from(pcm.buffer, pcm.byteOffset + offset * 2, 960)));
  }

  /**
   * Sends the next 20 ms: queued PCM if any, else the tone (or silence when `silent`).
   * `capturedAt` is when this frame's audio was (ideally) captured: a sender whose timer ran
   * late sends several frames at once, and speech onset is when the speech was spoken, not
   * when a burst caught up with it.
   */
  sendFrame(silent = false, capturedAt = performance.now()): void {
    let payload = this.#queued.shift();
    if (payload) this.queuedSentAt ??= capturedAt;
    else if (silent) {
      this.#encoder ??= new opus.OpusEncoder(24_000, 1, 2048);
      payload = this.#encoder.encode(Buffer.alloc(960));
    } else {
      const packets = tonePackets();
      payload = packets[this.#frame++ % packets.length]!;
    }
    this.send(payload);
  }

  /** Sends one 20 ms Opus packet as the next RTP packet. */
  send(payload: Buffer): void {
    this.packetsOut++;
    this.peer.transceiver.sender.sendRtp(this.peer.rtpPacket(payload)).catch(() => {});
  }

  close(): Promise<void> {
    return this.peer.close();
  }
}
