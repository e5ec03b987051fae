// Uplink: RTP from the client → jitter buffer → decode (with concealment of lost packets) →
// 20 ms frames of 24 kHz PCM16 → the call's bridge. Runs 50 times a second per call, so it
// reuses its buffers and never awaits.
import { performance } from "node:perf_hooks";
import { FRAME_SAMPLES, PCM_SAMPLE_RATE } from "./audio-format.ts";
import { JitterBuffer } from "./jitter-buffer.ts";
import { ReorderDepth } from "./reorder-depth.ts";
import { MAX_FRAME_SAMPLES, type UplinkDecoder } from "./codec.ts";
import { parseRed, RedBlocks, type RedProblem } from "./red.ts";

/** Why (part of) a RED packet was not used: it did not parse, or a block is not the call's codec. */
export type UplinkRedProblem = RedProblem | "block of another codec";

export interface UplinkStats {
  packets: number;
  lost: number;
  late: number;
  concealed: number;
  recovered: number;
  frames: number;
  /** RFC 3550 interarrival jitter, ms. */
  jitterMs: number;
  /** Packets the jitter buffer lets arrive past a gap now (× 20 ms: the longest it waits). */
  reorderDepth: number;
  /** Mean time a packet waited in the jitter buffer, ms. */
  jitterBufferMs: number;
  /** `audio/red` packets received (RFC 2198). */
  redPackets: number;
  /** Frames taken from a later packet's redundant block because their own packet was missing. */
  redRecovered: number;
  /** RED packets with a part not used: malformed, or a block of another codec. */
  redRefused: number;
}

export interface UplinkOptions {
  decoder: UplinkDecoder;
  /** Packets past a gap before it counts as lost (the start, with `adaptiveDepth`). */
  reorderDepth: number;
  /** Follow the link's jitter (relay/media/reorder-depth.ts) instead of keeping `reorderDepth`. */
  adaptiveDepth?: boolean;
  /** RTP payload type of the codec inside `audio/red` blocks (the call's Opus); other blocks are skipped. */
  payloadType?: number;
  /**
   * One 20 ms frame; `mediaTimeMs` is its start on the client's media clock (RTP timestamp, ms
   * from the stream's first packet), concealed frames included.
   */
  onFrame: (pcm: Int16Array, mediaTimeMs: number) => void;
  /** Per-frame work (decode + hand-off), seconds; for the metrics histogram. */
  observeWork?: (seconds: number) => void;
}

export class Uplink {
  readonly stats: UplinkStats = {
    packets: 0,
    lost: 0,
    late: 0,
    concealed: 0,
    recovered: 0,
    frames: 0,
    jitterMs: 0,
    reorderDepth: 0,
    jitterBufferMs: 0,
    redPackets: 0,
    redRecovered: 0,
    redRefused: 0,
  };
  #payloadType: number;
  #redBlocks = new RedBlocks();
  #decoder: UplinkDecoder;
  #jitter: JitterBuffer;
  #onFrame: (pcm: Int16Array, mediaTimeMs: number) => void;
  #observeWork: ((seconds: number) => void) | undefined;
  #decoded = new Int16Array(MAX_FRAME_SAMPLES);
  #frame = new Int16Array(FRAME_SAMPLES);
  #fill = 0;
  /** Duration of the last good packet, in 24 kHz samples: what a concealed packet stands for. */
  #packetSamples = FRAME_SAMPLES;
  #lastTransit = NaN;
  #jitterRtp = 0; // jitter in RTP timestamp units
  // Media time, in RTP units from the first packet: a packet played as it arrives sets it from its
  // own timestamp (which also skips DTX gaps); reordered and concealed packets continue the count.
  #arriving: Uint8Array | null = null;
  #arrivingTimestamp = 0;
  #anchorTimestamp = NaN;
  #anchorMedia = 0;
  #packetMedia = 0;
  #frameMedia = 0;
  #closed = false;
  #depth: ReorderDepth | undefined;

  constructor(options: UplinkOptions) {
    this.#decoder = options.decoder;
    this.#onFrame = options.onFrame;
    this.#observeWork = options.observeWork;
    this.#payloadType = options.payloadType ?? -1;
    this.#jitter = new JitterBuffer(options.reorderDepth, (payload, next) => this.#play(payload, next));
    this.stats.reorderDepth = options.reorderDepth;
    if (options.adaptiveDepth) this.#depth = new ReorderDepth();
  }

  /** One RTP packet as it arrived. */
  receive(sequenceNumber: number, timestamp: number, payload: Uint8Array): void {
    if (this.#closed) return;
    this.stats.packets++;
    const now = performance.now();
    this.#measureJitter(timestamp, now);
    const tooLate = this.#jitter.stats.tooLate;
    this.#push(sequenceNumber, timestamp, payload, now);
    this.#arrived(tooLate, now);
  }

  /**
   * One `audio/red` RTP packet (relay/media/red.ts). Its redundant blocks fill the gaps the
   * jitter buffer still waits on, oldest first, then the primary goes in as receive() would put
   * a plain packet. Block i of n stands for the packet n−1−i before this one: a sender's
   * redundancy is the packets it sent last (Chrome's and werift's encoders both). A block of
   * another codec (nested RED, an unknown PT) or an empty one is skipped; a payload that does not
   * parse is skipped whole and its frame concealed. Returns what was wrong, for the call's log.
   */
  receiveRed(sequenceNumber: number, timestamp: number, payload: Uint8Array): UplinkRedProblem | undefined {
    if (this.#closed) return undefined;
    this.stats.packets++;
    this.stats.redPackets++;
    const now = performance.now();
    this.#measureJitter(timestamp, now);
    const tooLate = this.#jitter.stats.tooLate;
    const blocks = this.#redBlocks;
    let problem: UplinkRedProblem | undefined = parseRed(payload, blocks);
    const primary = blocks.count - 1;
    for (let i = 0; i < primary; i++) {
      const blockSequence = (sequenceNumber - (primary - i)) & 0xffff;
      const offset = blocks.timestampOffsets[i]!;
      if (blocks.payloadTypes[i] !== this.#payloadType || offset === 0) {
        problem = "block of another codec";
        continue;
      }
      if (blocks.ends[i] === blocks.starts[i] || !this.#jitter.wants(blockSequence)) continue;
      this.stats.redRecovered++;
      this.#push(
        blockSequence,
        (timestamp - offset) >>> 0,
        payload.subarray(blocks.starts[i], blocks.ends[i]),
        now,
      );
    }
    if (primary >= 0) {
      const start = blocks.starts[primary]!;
      const end = blocks.ends[primary]!;
      if (blocks.payloadTypes[primary] !== this.#payloadType) problem = "block of another codec";
      else if (end > start) this.#push(sequenceNumber, timestamp, payload.subarray(start, end), now);
    }
    if (problem) this.stats.redRefused++;
    this.#arrived(tooLate, now);
    return problem;
  }

  #push(sequenceNumber: number, timestamp: number, payload: Uint8Array, now: number): void {
    this.#arriving = payload;
    this.#arrivingTimestamp = timestamp;
    this.#jitter.push(sequenceNumber, payload, now);
    this.#arriving = null;
  }

  /** After each RTP packet: the stats, and the reorder depth from the jitter and late arrivals. */
  #arrived(tooLate: number, now: number): void {
    const js = this.#jitter.stats;
    this.stats.lost = js.lost;
    this.stats.late = js.late;
    this.stats.jitterBufferMs = js.played > 0 ? js.heldMs / js.played : 0;
    if (this.#depth) {
      const depth = this.#depth.update(this.stats.jitterMs, js.tooLate !== tooLate, now);
      if (depth !== this.#jitter.depth) this.#jitter.depth = this.stats.reorderDepth = depth;
    }
  }

  close(): void {
    this.#closed = true;
  }

  #measureJitter(timestamp: number, now: number): void {
    const clock = this.#decoder.clockRate;
    const arrival = (now * clock) / 1000;
    const transit = arrival - timestamp;
    if (!Number.isNaN(this.#lastTransit)) {
      let d = Math.abs(transit - this.#lastTransit);
      if (d > 0x80000000) d = 0; // timestamp wrap
      this.#jitterRtp += (d - this.#jitterRtp) / 16;
      this.stats.jitterMs = (this.#jitterRtp * 1000) / clock;
    }
    this.#lastTransit = transit;
  }

  #play(payload: Uint8Array | null, next: Uint8Array | null): void {
    const start = performance.now();
    let samples: number;
    try {
      if (payload !== null && payload === this.#arriving) this.#anchor(this.#arrivingTimestamp);
      if (payload) {
        samples = this.#decoder.decode(payload, this.#decoded);
        this.#packetSamples = samples;
      } else {
        const out = this.#decoded.subarray(0, this.#packetSamples);
        samples = next ? this.#decoder.recover(next, out) : 0;
        if (samples > 0) this.stats.recovered++;
        else {
          samples = this.#decoder.conceal(out);
          this.stats.concealed++;
        }
      }
    } catch {
      // A corrupt packet: conceal it rather than drop time from the stream.
      samples = this.#decoder.conceal(this.#decoded.subarray(0, this.#packetSamples));
      this.stats.concealed++;
    }
    this.#emit(samples);
    this.#observeWork?.((performance.now() - start) / 1000);
  }

  /** The packet about to play carries RTP timestamp `timestamp`: its media time, unwrapped. */
  #anchor(timestamp: number): void {
    if (!Number.isNaN(this.#anchorTimestamp)) {
      this.#packetMedia = this.#anchorMedia + ((timestamp - this.#anchorTimestamp) | 0);
    }
    this.#anchorTimestamp = timestamp;
    this.#anchorMedia = this.#packetMedia;
  }

  /** Slices decoded audio into 20 ms frames (packets may be 10, 20, 40, 60 ms...). */
  #emit(samples: number): void {
    const rtpPerSample = this.#decoder.clockRate / PCM_SAMPLE_RATE;
    let offset = 0;
    while (offset < samples) {
      if (this.#fill === 0) this.#frameMedia = this.#packetMedia + offset * rtpPerSample;
      const n = Math.min(samples - offset, FRAME_SAMPLES - this.#fill);
      this.#frame.set(this.#decoded.subarray(offset, offset + n), this.#fill);
      this.#fill += n;
      offset += n;
      if (this.#fill === FRAME_SAMPLES) {
        this.#fill = 0;
        this.stats.frames++;
        this.#onFrame(this.#frame, (this.#frameMedia * 1000) / this.#decoder.clockRate);
      }
    }
    this.#packetMedia += samples * rtpPerSample;
  }
}
