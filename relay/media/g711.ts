// G.711 µ-law (PCMU) and A-law (PCMA), the fallback when an offer carries no Opus. The codec
// runs at 8 kHz; the relay's PCM is 24 kHz, so frames go through the band-limited 3× resampler.
import { FRAME_SAMPLES } from "./audio-format.ts";
import { Downsampler3x, Upsampler3x } from "./resampler.ts";
import type { DownlinkEncoder, UplinkDecoder } from "./codec.ts";

export type G711Law = "pcmu" | "pcma";

function ulawDecode(byte: number): number {
  const u = ~byte & 0xff;
  const t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
  return u & 0x80 ? 0x84 - t : t - 0x84;
}

function alawDecode(byte: number): number {
  const a = byte ^ 0x55;
  let t = (a & 0x0f) << 4;
  const seg = (a & 0x70) >> 4;
  if (seg === 0) t += 8;
  else if (seg === 1) t += 0x108;
  else t = (t + 0x108) << (seg - 1);
  return a & 0x80 ? t : -t;
}

const DECODE = {
  pcmu: Int16Array.from({ length: 256 }, (_, i) => ulawDecode(i)),
  pcma: Int16Array.from({ length: 256 }, (_, i) => alawDecode(i)),
};

function ulawEncode(sample: number): number {
  const BIAS = 0x84;
  const sign = sample < 0 ? 0x80 : 0;
  let s = Math.min(Math.abs(sample), 32635) + BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  s = ~(sign | (exponent << 4) | mantissa);
  return s & 0xff;
}

function alawEncode(sample: number): number {
  const sign = sample >= 0 ? 0x80 : 0;
  const s = Math.min(sample >= 0 ? sample : -sample - 1, 32767);
  let out: number;
  if (s < 256) out = s >> 4;
  else {
    let exponent = 7;
    for (let mask = 0x4000; (s & mask) === 0 && exponent > 1; mask >>= 1) exponent--;
    out = (exponent << 4) | ((s >> (exponent + 3)) & 0x0f);
  }
  return (out | sign) ^ 0x55;
}

const ENCODE = { pcmu: ulawEncode, pcma: alawEncode };

const NARROW_FRAME = FRAME_SAMPLES / 3; // 160 samples at 8 kHz

export class G711Decoder implements UplinkDecoder {
  readonly clockRate = 8000;
  #table: Int16Array;
  #narrow = new Int16Array(NARROW_FRAME * 6); // up to 120 ms packets
  #up = new Upsampler3x();
  #last = new Int16Array(FRAME_SAMPLES);
  #concealed = 0;

  constructor(law: G711Law) {
    this.#table = DECODE[law];
  }

  decode(payload: Uint8Array, out: Int16Array): number {
    const n = Math.min(payload.length, this.#narrow.length, Math.floor(out.length / 3));
    for (let i = 0; i < n; i++) this.#narrow[i] = this.#table[payload[i]!]!;
    const wide = out.subarray(0, n * 3);
    this.#up.process(this.#narrow.subarray(0, n), wide);
    if (wide.length >= FRAME_SAMPLES) this.#last.set(wide.subarray(wide.length - FRAME_SAMPLES));
    this.#concealed = 0;
    return n * 3;
  }

  /** G.711 has no PLC of its own: repeat the last frame, fading out over three losses. */
  conceal(out: Int16Array): number {
    const gain = Math.max(0, 1 - ++this.#concealed / 3);
    const n = Math.min(out.length, FRAME_SAMPLES);
    for (let i = 0; i < n; i++) out[i] = Math.round(this.#last[i]! * gain);
    return n;
  }

  recover(): number {
    return 0;
  }
}

export class G711Encoder implements DownlinkEncoder {
  readonly timestampStep = NARROW_FRAME;
  readonly silenceFrame: Uint8Array;
  #encode: (sample: number) => number;
  #down = new Downsampler3x();
  #narrow = new Int16Array(NARROW_FRAME);

  constructor(law: G711Law) {
    this.#encode = ENCODE[law];
    this.silenceFrame = new Uint8Array(NARROW_FRAME).fill(this.#encode(0));
  }

  encode(pcm: Int16Array, out: Uint8Array): number {
    this.#down.process(pcm, this.#narrow);
    for (let i = 0; i < NARROW_FRAME; i++) out[i] = this.#encode(this.#narrow[i]!);
    return NARROW_FRAME;
  }
}
