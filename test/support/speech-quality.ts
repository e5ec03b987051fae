// A simple objective score of received speech against the speech that was sent: the mean
// correlation of their 20 ms log-spectral envelopes (16 bands, 100 Hz–8 kHz) over the sent
// speech's voiced frames, at the best alignment. 1 is the same spectral shape frame by frame;
// clean Opus scores about 0.95; a concealed frame drags its frame toward 0. Not PESQ (no
// well-kept package gives PESQ in Node), but it falls with each frame that is lost or smeared,
// which is what the network table compares.
import { FRAME, RATE } from "./audio.ts";

const FFT = 512;
const BANDS = 16;
const HOP = FRAME / 4; // alignment in 5 ms steps
/** Band edges in FFT bins, log-spaced from 100 Hz to 8 kHz. */
const EDGES = Array.from({ length: BANDS + 1 }, (_, i) =>
  Math.round(((100 * (8000 / 100) ** (i / BANDS)) / RATE) * FFT),
);
const WINDOW = Float64Array.from(
  { length: FRAME },
  (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / FRAME),
);

/** In-place radix-2 FFT (re, im of length FFT). */
function fft(re: Float64Array, im: Float64Array): void {
  for (let i = 1, j = 0; i < FFT; i++) {
    let bit = FFT >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      [re[i], re[j]] = [re[j]!, re[i]!];
      [im[i], im[j]] = [im[j]!, im[i]!];
    }
  }
  for (let size = 2; size <= FFT; size <<= 1) {
    const step = (-2 * Math.PI) / size;
    for (let start = 0; start < FFT; start += size) {
      for (let k = 0; k < size / 2; k++) {
        const wr = Math.cos(step * k);
        const wi = Math.sin(step * k);
        const a = start + k;
        const b = a + size / 2;
        const tr = re[b]! * wr - im[b]! * wi;
        const ti = re[b]! * wi + im[b]! * wr;
        re[b] = re[a]! - tr;
        im[b] = im[a]! - ti;
        re[a] = re[a]! + tr;
        im[a] = im[a]! + ti;
      }
    }
  }
}

/** The log band energies (dB) of the 20 ms frame starting at `start`; a frame past the end is silence. */
function envelope(pcm: Int16Array, start: number): Float64Array {
  const re = new Float64Array(FFT);
  const im = new Float64Array(FFT);
  for (let i = 0; i < FRAME && start + i < pcm.length; i++) re[i] = pcm[start + i]! * WINDOW[i]!;
  fft(re, im);
  const out = new Float64Array(BANDS);
  for (let b = 0; b < BANDS; b++) {
    let energy = 1e-3;
    for (let k = EDGES[b]!; k < Math.max(EDGES[b]! + 1, EDGES[b + 1]!); k++)
      energy += re[k]! ** 2 + im[k]! ** 2;
    out[b] = 10 * Math.log10(energy);
  }
  return out;
}

function correlation(a: Float64Array, b: Float64Array): number {
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < BANDS; i++) {
    ma += a[i]!;
    mb += b[i]!;
  }
  ma /= BANDS;
  mb /= BANDS;
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < BANDS; i++) {
    ab += (a[i]! - ma) * (b[i]! - mb);
    aa += (a[i]! - ma) ** 2;
    bb += (b[i]! - mb) ** 2;
  }
  return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : 0;
}

function frameRms(pcm: Int16Array, start: number): number {
  let sum = 0;
  for (let i = start; i < start + FRAME && i < pcm.length; i++) sum += pcm[i]! ** 2;
  return Math.sqrt(sum / FRAME);
}

/** The score of `received` against `sent` at the best alignment (sent's voiced frames only). */
export function envelopeScore(sent: Int16Array, received: Int16Array): number {
  const frames = Math.floor(sent.length / FRAME);
  const loudest = Math.max(...Array.from({ length: frames }, (_, k) => frameRms(sent, k * FRAME)));
  const voiced: number[] = [];
  for (let k = 0; k < frames; k++) if (frameRms(sent, k * FRAME) > loudest * 0.05) voiced.push(k);
  if (voiced.length === 0 || received.length === 0) return 0;
  const sentEnvelopes = voiced.map((k) => envelope(sent, k * FRAME));
  const hops = Math.max(1, Math.ceil(received.length / HOP));
  const cache = new Map<number, Float64Array>();
  const receivedEnvelope = (hop: number) => {
    let e = cache.get(hop);
    if (!e) cache.set(hop, (e = envelope(received, hop * HOP)));
    return e;
  };
  // Align on loudness first (cheap), then score the best few lags in full.
  const sentLevel = voiced.map((k) => frameRms(sent, k * FRAME));
  const lags: [number, number][] = [];
  for (let lag = 0; lag < hops; lag++) {
    let dot = 0;
    for (let i = 0; i < voiced.length; i++) {
      const at = lag * HOP + voiced[i]! * FRAME;
      dot += sentLevel[i]! * (at < received.length ? frameRms(received, at) : 0);
    }
    lags.push([dot, lag]);
  }
  lags.sort((a, b) => b[0] - a[0]);
  let best = 0;
  for (const [, lag] of lags.slice(0, 8)) {
    let sum = 0;
    for (let i = 0; i < voiced.length; i++) {
      const hop = lag + (voiced[i]! * FRAME) / HOP;
      sum += hop * HOP < received.length ? correlation(sentEnvelopes[i]!, receivedEnvelope(hop)) : 0;
    }
    best = Math.max(best, sum / voiced.length);
  }
  return best;
}
