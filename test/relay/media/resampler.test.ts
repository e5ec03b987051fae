import { describe, expect, it } from "vitest";
import { Resampler, resamplePcm16 } from "../../../relay/media/resampler.ts";
import { toneAmplitude } from "../../support/audio.ts";

function floatSine(frequency: number, rate: number, seconds: number, amplitude = 10_000): Float32Array {
  const out = new Float32Array(Math.round(rate * seconds));
  for (let i = 0; i < out.length; i++) out[i] = amplitude * Math.sin((2 * Math.PI * frequency * i) / rate);
  return out;
}

/** Streams `input` through in chunks of `chunk` samples, as the media path does. */
function stream(resampler: Resampler, input: Float32Array, chunk: number): Float32Array {
  const out = new Float32Array(resampler.maxOutput(input.length) + resampler.maxOutput(0));
  let n = 0;
  for (let i = 0; i < input.length; i += chunk)
    n += resampler.process(input.subarray(i, i + chunk), out.subarray(n));
  n += resampler.flush(out.subarray(n));
  return out.subarray(0, n);
}

const db = (ratio: number) => 20 * Math.log10(Math.max(ratio, 1e-12));

describe("Resampler 24 kHz → 16 kHz (before Silero VAD)", () => {
  it("passes speech frequencies at unity gain and produces 2/3 of the samples", () => {
    for (const f of [200, 1000, 3000, 5000]) {
      const out = stream(new Resampler(24_000, 16_000), floatSine(f, 24_000, 0.5), 480);
      expect(Math.abs(out.length - 8000)).toBeLessThanOrEqual(1);
      const steady = out.subarray(800, 7200);
      expect(Math.abs(db(toneAmplitude(steady, f, 16_000) / 10_000))).toBeLessThan(0.1);
    }
  });

  it("rejects tones above the 8 kHz output Nyquist instead of folding them into the band", () => {
    // A 10 kHz tone would alias to 6 kHz, an 11 kHz tone to 5 kHz, with linear interpolation.
    for (const [f, alias] of [
      [10_000, 6_000],
      [11_000, 5_000],
      [9_000, 7_000],
    ] as const) {
      const out = stream(new Resampler(24_000, 16_000), floatSine(f, 24_000, 0.5), 480).subarray(800, 7200);
      expect(db(toneAmplitude(out, alias, 16_000) / 10_000)).toBeLessThan(-60);
    }
  });

  it("gives the same output whatever the chunking", () => {
    const input = floatSine(440, 24_000, 0.2);
    const a = stream(new Resampler(24_000, 16_000), input, 480);
    const b = stream(new Resampler(24_000, 16_000), input, 37);
    expect(b.length).toBe(a.length);
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - b[i]!)).toBeLessThan(1e-2);
  });
});

describe("Resampler 22.05 kHz → 24 kHz (agent TTS)", () => {
  it("keeps pitch and level", () => {
    const out = resamplePcm16(Int16Array.from(floatSine(1000, 22_050, 1), Math.round), 22_050, 24_000);
    expect(out.length).toBe(24_000);
    expect(Math.abs(db(toneAmplitude(out.subarray(2400, 21_600), 1000, 24_000) / 10_000))).toBeLessThan(0.1);
  });

  it("leaves no spectral image of the upsampling (linear interpolation leaves one near -30 dB)", () => {
    // A 5 kHz tone at 22.05 kHz has an image at 17.05 kHz, which folds to 6.95 kHz at 24 kHz.
    const out = resamplePcm16(Int16Array.from(floatSine(5000, 22_050, 1), Math.round), 22_050, 24_000);
    const steady = out.subarray(2400, 21_600);
    expect(db(toneAmplitude(steady, 5000, 24_000) / 10_000)).toBeGreaterThan(-0.1);
    expect(db(toneAmplitude(steady, 6950, 24_000) / 10_000)).toBeLessThan(-60);
  });

  it("rejects rates that are not positive integers", () => {
    expect(() => new Resampler(0, 16_000)).toThrow(/positive integers/);
    expect(() => new Resampler(22_050.5, 24_000)).toThrow(/positive integers/);
  });
});
