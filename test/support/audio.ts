// Audio for tests, one signature each: making tones, Opus in and out, and measuring what a
// listener would notice (level, pitch, dropouts, duration). Samples are 16-bit PCM at `rate`
// (24 kHz unless given); frequencies come before rates.
import { createRequire } from "node:module";
import { OPUS_SILENCE_FRAME } from "../../relay/media/opus-codec.ts";

export const RATE = 24_000;
/** Samples in one 20 ms frame at 24 kHz. */
export const FRAME = 480;

export const opus = createRequire(import.meta.url)("@discordjs/opus") as typeof import("@discordjs/opus");

// ─── making audio ────────────────────────────────────────────────────────────────────────────

export function sine(frequency: number, ms: number, amplitude = 10_000, rate = RATE): Int16Array {
  const n = Math.round((rate * ms) / 1000);
  const out = new Int16Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.round(amplitude * Math.sin((2 * Math.PI * frequency * i) / rate));
  return out;
}

export function concat(parts: Int16Array[]): Int16Array {
  const out = new Int16Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

// ─── Opus ────────────────────────────────────────────────────────────────────────────────────

/** A 24 kHz mono Opus encoder as a browser's: VOIP, in-band FEC on, 32 kb/s. */
export function createOpusEncoder() {
  const encoder = new opus.OpusEncoder(RATE, 1, 2048);
  encoder.applyEncoderCTL(4012, 1); // in-band FEC
  encoder.applyEncoderCTL(4014, 10); // expect 10 % loss, so FEC is worth its bits
  encoder.setBitrate(32_000);
  return encoder;
}

/** Decodes Opus payloads, in the order given, to one run of 24 kHz PCM. */
export function decodeOpus(payloads: Buffer[]): Int16Array {
  const decoder = new opus.OpusEncoder(RATE, 1);
  return concat(
    payloads.map((payload) => {
      const pcm = decoder.decode(payload);
      return new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2);
    }),
  );
}

// ─── measuring ───────────────────────────────────────────────────────────────────────────────

export function rms(samples: ArrayLike<number>, start = 0, end = samples.length): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum += samples[i]! * samples[i]!;
  return end > start ? Math.sqrt(sum / (end - start)) : 0;
}

export function dbfs(samples: ArrayLike<number>, start = 0, end = samples.length): number {
  return 20 * Math.log10(Math.max(rms(samples, start, end), 1e-9) / 32768);
}

/** Goertzel's power at `frequency`, each sample first scaled by `window(i)`. */
function goertzelPower(
  samples: ArrayLike<number>,
  frequency: number,
  rate: number,
  window?: (i: number) => number,
) {
  const coeff = 2 * Math.cos((2 * Math.PI * frequency) / rate);
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < samples.length; i++) {
    const s0 = samples[i]! * (window ? window(i) : 1) + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  return s1 * s1 + s2 * s2 - coeff * s1 * s2;
}

/** Amplitude of one frequency component (Goertzel), scaled so a full sine of amplitude A gives A. */
export function goertzel(samples: ArrayLike<number>, frequency: number, rate = RATE): number {
  return (2 * Math.sqrt(Math.max(0, goertzelPower(samples, frequency, rate)))) / samples.length;
}

/**
 * Amplitude (peak) of the tone at `frequency`, from Goertzel with a Hann window, so a tone
 * between bins does not leak into the bins compared against (for stop-band measurements).
 */
export function toneAmplitude(samples: ArrayLike<number>, frequency: number, rate = RATE): number {
  const n = samples.length;
  const power = goertzelPower(
    samples,
    frequency,
    rate,
    (i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1)),
  );
  return 4 * Math.sqrt(power / (n * n));
}

/** `from`, `from + step`, … up to `to` Hz: the candidates dominantFrequency scans by default. */
export function frequencies(from: number, to: number, step = 10): number[] {
  const out: number[] = [];
  for (let f = from; f <= to; f += step) out.push(f);
  return out;
}

/** The strongest of `candidates` (Hz), by Goertzel amplitude; by default 100–4000 Hz in 10 Hz steps. */
export function dominantFrequency(
  samples: ArrayLike<number>,
  candidates: number[] = frequencies(100, 4000),
  rate = RATE,
): number {
  let best = candidates[0]!;
  let bestAmplitude = -1;
  for (const f of candidates) {
    const a = goertzel(samples, f, rate);
    if (a > bestAmplitude) [best, bestAmplitude] = [f, a];
  }
  return best;
}

/** Start indices of 20 ms windows whose RMS falls below `floor` (dropouts). */
export function silentWindows(samples: Int16Array, floor: number, window = FRAME): number[] {
  const out: number[] = [];
  for (let i = 0; i + window <= samples.length; i += window) {
    if (rms(samples.subarray(i, i + window)) < floor) out.push(i);
  }
  return out;
}

/** Ms of audio above `thresholdDbfs`, counted in 20 ms windows. */
export function voicedMs(samples: Int16Array, rate = RATE, thresholdDbfs = -45): number {
  const window = (rate * 20) / 1000;
  let voiced = 0;
  for (let i = 0; i + window <= samples.length; i += window)
    if (dbfs(samples, i, i + window) > thresholdDbfs) voiced += 20;
  return voiced;
}

/**
 * The relay's idle keepalive: the Opus silence frame it sends every 300 ms while it has nothing
 * to play (relay/media/downlink.ts). Tests that count or time a reply's packets leave it out.
 */
export function isKeepalive(packet: { payload: Uint8Array }): boolean {
  return Buffer.compare(packet.payload, OPUS_SILENCE_FRAME) === 0;
}

/** When the last packet that was not a keepalive arrived (0 if none). */
export function lastSoundAt(packets: readonly { payload: Uint8Array; at: number }[]): number {
  for (let i = packets.length - 1; i >= 0; i--) if (!isKeepalive(packets[i]!)) return packets[i]!.at;
  return 0;
}
