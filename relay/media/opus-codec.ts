// libopus through @discordjs/opus, patched (patches/@discordjs+opus+0.10.0.patch) with
// allocation-free encodeInto/decodeInto, loss concealment (PLC), in-band FEC decoding and a
// choice of encoder application. Both directions run at 24 kHz, the relay's PCM rate: libopus
// resamples internally, so no resampler is needed.
import { createRequire } from "node:module";
import { PCM_SAMPLE_RATE, RTP_CLOCK_RATE } from "./audio-format.ts";
import type { UplinkDecoder } from "./codec.ts";
import { opusPacketHasFec } from "./opus-packet.ts";

type Native = typeof import("@discordjs/opus");
const native = createRequire(import.meta.url)("@discordjs/opus") as Native;

if (typeof native.OpusEncoder.prototype.decodeInto !== "function") {
  throw new Error(
    "@discordjs/opus is not patched (no decodeInto): run `npm install` so patch-package applies " +
      "patches/@discordjs+opus+0.10.0.patch and rebuilds it from source.",
  );
}

/** opus_defines.h values. */
export const OpusApplication = {
  voip: 2048,
  audio: 2049,
  restrictedLowDelay: 2051,
} as const;
export type OpusApplication = keyof typeof OpusApplication;

const OPUS_SET_BITRATE = 4002;
const OPUS_SET_COMPLEXITY = 4010;
const OPUS_SET_INBAND_FEC = 4012;
const OPUS_SET_PACKET_LOSS_PERC = 4014;
const OPUS_SET_SIGNAL = 4024;
const OPUS_SIGNAL_VOICE = 3001;

export interface OpusEncoderOptions {
  application: OpusApplication;
  /** 0 (cheapest) to 10. */
  complexity: number;
  bitrate: number;
  /** In-band FEC only works in SILK/hybrid modes (voip/audio), not restricted-low-delay. */
  inbandFec?: boolean;
  expectedLossPercent?: number;
}

/**
 * A 20 ms Opus packet that decodes to silence: TOC 0xf8 (CELT-only, fullband, 20 ms, mono, one
 * frame) and a two-byte range-coded frame whose silence flag is set. The downlink's keepalive
 * (downlink.ts) sends it as is; no encoder state is involved, so it never disturbs the next reply.
 */
export const OPUS_SILENCE_FRAME: Uint8Array = Uint8Array.of(0xf8, 0xff, 0xfe);

export class OpusEncoder {
  #native;

  constructor(options: OpusEncoderOptions) {
    this.#native = new native.OpusEncoder(PCM_SAMPLE_RATE, 1, OpusApplication[options.application]);
    this.#native.applyEncoderCTL(OPUS_SET_COMPLEXITY, options.complexity);
    this.#native.applyEncoderCTL(OPUS_SET_BITRATE, options.bitrate);
    this.#native.applyEncoderCTL(OPUS_SET_SIGNAL, OPUS_SIGNAL_VOICE);
    if (options.inbandFec) this.#native.applyEncoderCTL(OPUS_SET_INBAND_FEC, 1);
    if (options.expectedLossPercent) {
      this.#native.applyEncoderCTL(OPUS_SET_PACKET_LOSS_PERC, options.expectedLossPercent);
    }
  }

  /** Encodes one frame of 24 kHz PCM into `out`; returns the packet length. */
  encode(pcm: Int16Array, out: Uint8Array): number {
    return this.#native.encodeInto(pcm, out);
  }

  /** Takes effect from the next frame; the stream stays decodable across the change. */
  setComplexity(complexity: number): void {
    this.#native.applyEncoderCTL(OPUS_SET_COMPLEXITY, complexity);
  }

  /** The loss (%) in-band FEC plans for: more loss, more of the bitrate spent on FEC. */
  setExpectedLoss(percent: number): void {
    this.#native.applyEncoderCTL(OPUS_SET_PACKET_LOSS_PERC, percent);
  }
}

export class OpusDecoder {
  #native = new native.OpusEncoder(PCM_SAMPLE_RATE, 1);

  /** Decodes a packet into `out` (room for 120 ms); returns samples decoded. */
  decode(packet: Uint8Array, out: Int16Array): number {
    return this.#native.decodeInto(packet, out);
  }

  /** Conceals one lost packet: `out`'s length is the duration to synthesise. */
  conceal(out: Int16Array): number {
    return this.#native.decodeInto(null, out);
  }

  /** Recovers a lost packet from the FEC data in the packet after it: `out`'s length is its duration. */
  recover(nextPacket: Uint8Array, out: Int16Array): number {
    return this.#native.decodeInto(nextPacket, out, true);
  }
}

/** The uplink's view of an Opus decoder: 48 kHz RTP clock, PLC and FEC (relay/media/uplink.ts). */
export function opusUplinkDecoder(): UplinkDecoder {
  const decoder = new OpusDecoder();
  return {
    clockRate: RTP_CLOCK_RATE,
    decode: (payload, out) => decoder.decode(payload, out),
    conceal: (out) => decoder.conceal(out),
    // Without LBRR in the next packet there is nothing to recover: 0, and the uplink conceals.
    recover: (next, out) => (opusPacketHasFec(next) ? decoder.recover(next, out) : 0),
  };
}
