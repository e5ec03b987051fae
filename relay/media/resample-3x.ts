// Band-limited 8 kHz ⇄ 24 kHz conversion for the G.711 fallback (the only place the relay
// resamples: Opus decodes and encodes at 24 kHz itself). A windowed-sinc low-pass FIR with its
// cutoff below 4 kHz, run polyphase: upsampling computes only the non-zero taps, downsampling
// only the kept outputs. State carries across frames, so frame edges don't click.

const TAPS = 72; // multiple of 3: 24 taps per polyphase branch
const CUTOFF_HZ = 3700;
const RATE = 24_000;

function designLowPass(): Float64Array {
  const h = new Float64Array(TAPS);
  const fc = CUTOFF_HZ / RATE;
  const mid = (TAPS - 1) / 2;
  let sum = 0;
  for (let i = 0; i < TAPS; i++) {
    const x = i - mid;
    const sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
    // Blackman window: about 74 dB stopband, plenty for telephone audio.
    const w =
      0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (TAPS - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (TAPS - 1));
    h[i] = sinc * w;
    sum += h[i]!;
  }
  for (let i = 0; i < TAPS; i++) h[i]! /= sum; // unity gain at DC
  return h;
}

const LOW_PASS = designLowPass();

function clamp16(v: number): number {
  return v > 32767 ? 32767 : v < -32768 ? -32768 : Math.round(v);
}

/** 8 kHz → 24 kHz. */
export class Upsampler3x {
  // The last TAPS/3 input samples, newest last.
  #history = new Float64Array(TAPS / 3);

  /** out must hold 3 × input.length samples. */
  process(input: Int16Array, out: Int16Array): void {
    const branch = TAPS / 3;
    const hist = this.#history;
    for (let n = 0; n < input.length; n++) {
      hist.copyWithin(0, 1);
      hist[branch - 1] = input[n]!;
      for (let phase = 0; phase < 3; phase++) {
        let acc = 0;
        // Zero-stuffed input: tap k of phase p meets input sample (branch-1-j) with k = 3j + p.
        for (let j = 0; j < branch; j++) acc += LOW_PASS[3 * j + phase]! * hist[branch - 1 - j]!;
        out[3 * n + phase] = clamp16(3 * acc);
      }
    }
  }
}

/** 24 kHz → 8 kHz. */
export class Downsampler3x {
  #history = new Float64Array(TAPS);

  /** input length must be a multiple of 3; out holds input.length / 3 samples. */
  process(input: Int16Array, out: Int16Array): void {
    const hist = this.#history;
    for (let n = 0; n < out.length; n++) {
      hist.copyWithin(0, 3);
      hist[TAPS - 3] = input[3 * n]!;
      hist[TAPS - 2] = input[3 * n + 1]!;
      hist[TAPS - 1] = input[3 * n + 2]!;
      let acc = 0;
      for (let k = 0; k < TAPS; k++) acc += LOW_PASS[k]! * hist[TAPS - 1 - k]!;
      out[n] = clamp16(acc);
    }
  }
}
