// Uplink: RTP from the client → jitter buffer → decode (with concealment of lost packets) →
// 20 ms frames of 24 kHz PCM16 → the call's bridge. Runs 50 times a second per call, so it
// reuses its buffers and never awaits.
import { performance } from "node:perf_hooks";
import { FRAME_SAMPLES, PCM_SAMPLE_RATE } from "./audio-format.ts";
import { JitterBuffer } from "./jitter-buffer.ts";
import { ReorderDepth } from "./reorder-depth.ts";
import { MAX_FRAME_SAMPLES, type UplinkDecoder } from "./codec.ts";

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
}

export interface UplinkOptions {
  decoder: UplinkDecoder;
  /** Packets past a gap before it counts as lost (the start, with `adaptiveDepth`). */
  reorderDepth: number;
  /** Follow the link's jitter (relay/media/reorder-depth.ts) instead of keeping `reorderDepth`. */
  adaptiveDepth?: boolean;
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
  };
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
    this.#arriving = payload;
    this.#arrivingTimestamp = timestamp;
    const js = this.#jitter.stats;
    const tooLate = js.tooLate;
    this.#jitter.push(sequenceNumber, payload, now);
    this.#arriving = null;
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
