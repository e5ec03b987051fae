// Audio measurements for tests: what a listener would notice (level, pitch, duration).

/** Power of `frequency` in `samples` by the Goertzel algorithm, normalised so a full-scale sine of amplitude A gives A²/4·... (compare ratios, not absolutes). */
export function goertzelPower(samples: ArrayLike<number>, sampleRate: number, frequency: number): number {
  const w = (2 * Math.PI * frequency) / sampleRate;
  const coefficient = 2 * Math.cos(w);
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < samples.length; i++) {
    // Hann window so a tone between bins does not leak into the bins we compare against.
    const hann = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (samples.length - 1));
    const s0 = samples[i]! * hann + coefficient * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
  return power / (samples.length * samples.length);
}

/** Amplitude (peak) of the tone at `frequency`, from Goertzel with a Hann window (gain 1/2). */
export function toneAmplitude(samples: ArrayLike<number>, sampleRate: number, frequency: number): number {
  return 4 * Math.sqrt(goertzelPower(samples, sampleRate, frequency));
}

export function rms(samples: ArrayLike<number>, start = 0, end = samples.length): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum += samples[i]! * samples[i]!;
  return end > start ? Math.sqrt(sum / (end - start)) : 0;
}

export function dbfs(samples: ArrayLike<number>, start = 0, end = samples.length): number {
  return 20 * Math.log10(Math.max(rms(samples, start, end), 1e-9) / 32768);
}

/** The strongest frequency among `candidates` (Hz). */
export function dominantFrequency(
  samples: ArrayLike<number>,
  sampleRate: number,
  candidates: number[],
): number {
  let best = candidates[0]!;
  let bestPower = -1;
  for (const f of candidates) {
    const p = goertzelPower(samples, sampleRate, f);
    if (p > bestPower) [best, bestPower] = [f, p];
  }
  return best;
}

export function sine(frequency: number, seconds: number, sampleRate = 24_000, amplitude = 8000): Int16Array {
  const out = new Int16Array(Math.round(seconds * sampleRate));
  for (let i = 0; i < out.length; i++)
    out[i] = Math.round(amplitude * Math.sin((2 * Math.PI * frequency * i) / sampleRate));
  return out;
}

/** Ms of audio above `thresholdDbfs`, counted in 20 ms windows. */
export function voicedMs(samples: Int16Array, sampleRate = 24_000, thresholdDbfs = -45): number {
  const window = (sampleRate * 20) / 1000;
  let voiced = 0;
  for (let i = 0; i + window <= samples.length; i += window)
    if (dbfs(samples, i, i + window) > thresholdDbfs) voiced += 20;
  return voiced;
}

export function concat(chunks: Int16Array[]): Int16Array {
  const out = new Int16Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
