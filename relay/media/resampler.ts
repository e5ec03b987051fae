// The relay's resamplers, in one place. Opus decodes and encodes at 24 kHz itself, so the media
// path resamples only for the G.711 fallback (8 kHz ⇄ 24 kHz, frame-locked: exactly 3× per
// frame, no latency), before Silero VAD (24 → 16 kHz) and, in the built-in agent, for eSpeak's
// 22.05 kHz speech.
//
// Resampler: any rational ratio, band-limited, streaming: a windowed-sinc (Kaiser) polyphase filter.
// Linear interpolation would alias (downsampling) and leave spectral images (upsampling) that
// a VAD or a listener hears; a polyphase sinc with a Kaiser window keeps both below about -70 dB.

const KAISER_BETA = 7.857; // Kaiser's formula for 80 dB stopband attenuation
const STOPBAND_DB = 80;

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Zeroth-order modified Bessel function of the first kind (series), for the Kaiser window. */
function besselI0(x: number): number {
  let sum = 1;
  let term = 1;
  const q = (x * x) / 4;
  for (let k = 1; k < 50; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-12) break;
  }
  return sum;
}

export interface ResamplerOptions {
  /** Input samples on each side of the output point. More taps, sharper transition band. */
  halfTaps?: number;
}

export class Resampler {
  readonly inRate: number;
  readonly outRate: number;
  readonly #up: number; // L
  readonly #down: number; // M
  readonly #taps: number;
  /** coefficients[phase * taps + j] multiplies input[base - halfTaps + 1 + j]. */
  readonly #coefficients: Float32Array;
  /** Input history: #buffer[0] is input index #bufferStart (negative indices are the zero prefix). */
  #buffer: Float32Array;
  #bufferLength: number;
  #bufferStart: number;
  /** Next output's position: input index #base plus #phase / L. */
  #base = 0;
  #phase = 0;

  constructor(inRate: number, outRate: number, options: ResamplerOptions = {}) {
    if (!Number.isInteger(inRate) || !Number.isInteger(outRate) || inRate <= 0 || outRate <= 0) {
      throw new RangeError(`Resampler rates must be positive integers, got ${inRate} → ${outRate}`);
    }
    const halfTaps = options.halfTaps ?? 24;
    const g = gcd(inRate, outRate);
    this.inRate = inRate;
    this.outRate = outRate;
    this.#up = outRate / g;
    this.#down = inRate / g;
    this.#taps = 2 * halfTaps;

    // Cut-off in cycles per input sample: the lower Nyquist, less half the Kaiser transition
    // band, so the stopband starts at the lower Nyquist and nothing above it folds back.
    const nyquist = 0.5 * Math.min(1, this.#up / this.#down);
    const transition = (STOPBAND_DB - 7.95) / (14.36 * this.#taps);
    const cutoff = Math.max(nyquist * 0.5, nyquist - transition / 2);
    const i0Beta = besselI0(KAISER_BETA);

    this.#coefficients = new Float32Array(this.#up * this.#taps);
    for (let phase = 0; phase < this.#up; phase++) {
      let sum = 0;
      for (let j = 0; j < this.#taps; j++) {
        const t = j - halfTaps + 1 - phase / this.#up; // input offset from the output point
        const x = 2 * cutoff * t;
        const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
        const r = t / halfTaps;
        const window = Math.abs(r) >= 1 ? 0 : besselI0(KAISER_BETA * Math.sqrt(1 - r * r)) / i0Beta;
        const c = 2 * cutoff * sinc * window;
        this.#coefficients[phase * this.#taps + j] = c;
        sum += c;
      }
      // Unity gain at DC for every phase, so no phase is louder than another (no ripple tone).
      for (let j = 0; j < this.#taps; j++) this.#coefficients[phase * this.#taps + j]! /= sum;
    }

    // Zeros before the first sample, so the first output lines up with input index 0.
    this.#buffer = new Float32Array(this.#taps + 4096);
    this.#bufferStart = -(halfTaps - 1);
    this.#bufferLength = halfTaps - 1;
  }

  /** Output samples `process` can produce for `inputLength` more input, at most. */
  maxOutput(inputLength: number): number {
    return Math.ceil(((inputLength + this.#taps) * this.#up) / this.#down) + 1;
  }

  /**
   * Feeds input (PCM16 or float, any scale) and writes the outputs now computable into `out`
   * (same scale, float). Returns how many were written. Output lags input by halfTaps samples;
   * `flush` returns the tail.
   */
  process(input: ArrayLike<number>, out: Float32Array): number {
    this.#append(input);
    return this.#drain(out);
  }

  /** Pads with zeros so every input sample's output is produced; the stream ends. */
  flush(out: Float32Array): number {
    const inputEnd = this.#bufferStart + this.#bufferLength;
    this.#append(new Float32Array(this.#taps));
    return this.#drain(out, inputEnd);
  }

  #append(input: ArrayLike<number>): void {
    const needed = this.#bufferLength + input.length;
    if (needed > this.#buffer.length) {
      const grown = new Float32Array(needed * 2);
      grown.set(this.#buffer.subarray(0, this.#bufferLength));
      this.#buffer = grown;
    }
    const buffer = this.#buffer;
    for (let i = 0; i < input.length; i++) buffer[this.#bufferLength + i] = input[i]!;
    this.#bufferLength = needed;
  }

  /** Computes outputs whose position is covered by input, and before `limit` if given. */
  #drain(out: Float32Array, limit = Infinity): number {
    const taps = this.#taps;
    const halfTaps = taps / 2;
    const up = this.#up;
    const down = this.#down;
    const coefficients = this.#coefficients;
    const buffer = this.#buffer;
    const end = this.#bufferStart + this.#bufferLength; // one past the last input index
    let written = 0;
    while (this.#base + halfTaps < end && this.#base < limit && written < out.length) {
      const first = this.#base - halfTaps + 1 - this.#bufferStart;
      const row = this.#phase * taps;
      let acc = 0;
      for (let j = 0; j < taps; j++) acc += coefficients[row + j]! * buffer[first + j]!;
      out[written++] = acc;
      this.#phase += down;
      while (this.#phase >= up) {
        this.#phase -= up;
        this.#base++;
      }
    }
    // Keep only the history the next output needs.
    const keepFrom = this.#base - halfTaps + 1 - this.#bufferStart;
    if (keepFrom > 0) {
      buffer.copyWithin(0, keepFrom, this.#bufferLength);
      this.#bufferLength -= keepFrom;
      this.#bufferStart += keepFrom;
    }
    return written;
  }
}

/** One-shot convenience: resamples a whole PCM16 signal to PCM16, tail included. */
export function resamplePcm16(input: Int16Array, inRate: number, outRate: number): Int16Array {
  const resampler = new Resampler(inRate, outRate);
  const out = new Float32Array(resampler.maxOutput(input.length) + resampler.maxOutput(0));
  let n = resampler.process(input, out);
  n += resampler.flush(out.subarray(n));
  const expected = Math.round((input.length * outRate) / inRate);
  const pcm = new Int16Array(Math.min(n, expected));
  for (let i = 0; i < pcm.length; i++) {
    const v = Math.round(out[i]!);
    pcm[i] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
  }
  return pcm;
}

// Upsampler3x / Downsampler3x: 8 kHz ⇄ 24 kHz for G.711, exactly 3× per call. A windowed-sinc
// low-pass FIR with its cutoff below 4 kHz, run polyphase: upsampling computes only the non-zero
// taps, downsampling only the kept outputs. State carries across frames, so frame edges don't click.

const G711_TAPS = 72; // multiple of 3: 24 taps per polyphase branch
const G711_CUTOFF_HZ = 3700;
const G711_WIDE_RATE = 24_000;

function designLowPass(): Float64Array {
  const h = new Float64Array(G711_TAPS);
  const fc = G711_CUTOFF_HZ / G711_WIDE_RATE;
  const mid = (G711_TAPS - 1) / 2;
  let sum = 0;
  for (let i = 0; i < G711_TAPS; i++) {
    const x = i - mid;
    const sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
    // Blackman window: about 74 dB stopband, plenty for telephone audio.
    const w =
      0.42 -
      0.5 * Math.cos((2 * Math.PI * i) / (G711_TAPS - 1)) +
      0.08 * Math.cos((4 * Math.PI * i) / (G711_TAPS - 1));
    h[i] = sinc * w;
    sum += h[i]!;
  }
  for (let i = 0; i < G711_TAPS; i++) h[i]! /= sum; // unity gain at DC
  return h;
}

const LOW_PASS = designLowPass();

function clamp16(v: number): number {
  return v > 32767 ? 32767 : v < -32768 ? -32768 : Math.round(v);
}

/** 8 kHz → 24 kHz. */
export class Upsampler3x {
  // The last G711_TAPS/3 input samples, newest last.
  #history = new Float64Array(G711_TAPS / 3);

  /** out must hold 3 × input.length samples. */
  process(input: Int16Array, out: Int16Array): void {
    const branch = G711_TAPS / 3;
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
  #history = new Float64Array(G711_TAPS);

  /** input length must be a multiple of 3; out holds input.length / 3 samples. */
  process(input: Int16Array, out: Int16Array): void {
    const hist = this.#history;
    for (let n = 0; n < out.length; n++) {
      hist.copyWithin(0, 3);
      hist[G711_TAPS - 3] = input[3 * n]!;
      hist[G711_TAPS - 2] = input[3 * n + 1]!;
      hist[G711_TAPS - 1] = input[3 * n + 2]!;
      let acc = 0;
      for (let k = 0; k < G711_TAPS; k++) acc += LOW_PASS[k]! * hist[G711_TAPS - 1 - k]!;
      out[n] = clamp16(acc);
    }
  }
}
