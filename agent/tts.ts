// The agent's voice: eSpeak NG compiled to WASM (the `espeak-ng` package), offline. It writes
// a 22.05 kHz WAV into its in-memory file system; we resample to the protocol's 24 kHz with
// the band-limited resampler.
import ESpeakNg from "espeak-ng";
import { PCM_SAMPLE_RATE } from "../relay/media/audio-format.ts";
import { resamplePcm16 } from "../relay/media/resampler.ts";

const MAX_TEXT = 1000;
const CACHE_ENTRIES = 16;
/** eSpeak's default rate, in words per minute: what OpenAI's `speed` 1.0 maps to. */
const WORDS_PER_MINUTE = 175;

interface WavPcm {
  sampleRate: number;
  samples: Int16Array;
}

/** Reads a mono PCM16 WAV (the only kind eSpeak writes). */
export function parseWav(bytes: Uint8Array): WavPcm {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (at: number) => String.fromCharCode(bytes[at]!, bytes[at + 1]!, bytes[at + 2]!, bytes[at + 3]!);
  if (bytes.length < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE")
    throw new Error("TTS output is not a WAV file");
  let sampleRate = 0;
  let at = 12;
  while (at + 8 <= bytes.length) {
    const id = tag(at);
    const size = view.getUint32(at + 4, true);
    const body = at + 8;
    if (id === "fmt ") {
      const format = view.getUint16(body, true);
      const channels = view.getUint16(body + 2, true);
      const bits = view.getUint16(body + 14, true);
      if (format !== 1 || channels !== 1 || bits !== 16) throw new Error("TTS output is not mono PCM16");
      sampleRate = view.getUint32(body + 4, true);
    } else if (id === "data") {
      if (!sampleRate) throw new Error("WAV data before fmt");
      // eSpeak may leave a streaming placeholder size; trust the bytes actually there.
      const length = Math.min(size, bytes.length - body) & ~1;
      const samples = new Int16Array(length / 2);
      for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(body + 2 * i, true);
      return { sampleRate, samples };
    }
    at = body + size + (size & 1);
  }
  throw new Error("WAV has no data chunk");
}

export class SpeechSynthesizer {
  readonly #voice: string;
  #cache = new Map<string, Int16Array>();
  /** Milliseconds the last synthesis took (eSpeak + resampling), for the report and logs. */
  lastSynthesisMs = 0;

  constructor(voice = "en-us") {
    this.#voice = voice;
  }

  /** Speaks `text` to 24 kHz PCM16, `speed` times eSpeak's usual rate (OpenAI's `audio.output.speed`). */
  async speak(text: string, speed = 1): Promise<Int16Array> {
    const clean = text.replace(/\s+/g, " ").trim().slice(0, MAX_TEXT);
    const rate = Math.round(WORDS_PER_MINUTE * speed);
    const key = `${rate}:${clean}`;
    const cached = this.#cache.get(key);
    if (cached) return cached;
    const started = performance.now();
    // A fresh instance per sentence: the WASM CLI runs `main` once per instantiation.
    const espeak = await ESpeakNg({
      arguments: [
        "-v",
        this.#voice,
        ...(speed === 1 ? [] : ["-s", String(rate)]),
        "-w",
        "/tmp/speech.wav",
        clean,
      ],
    });
    const wav = parseWav(espeak.FS.readFile("/tmp/speech.wav") as Uint8Array);
    const pcm = resamplePcm16(wav.samples, wav.sampleRate, PCM_SAMPLE_RATE);
    this.lastSynthesisMs = performance.now() - started;
    this.#cache.set(key, pcm);
    if (this.#cache.size > CACHE_ENTRIES) this.#cache.delete(this.#cache.keys().next().value!);
    return pcm;
  }
}
