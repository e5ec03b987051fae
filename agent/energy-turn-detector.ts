// The built-in agent's server VAD: frame energy with hysteresis. It stands in for OpenAI's
// server VAD (a neural model upstream); the relay's own barge-in VAD is Silero (relay/barge-in/).
import { FRAME_MS, FRAME_SAMPLES } from "../relay/media/audio-format.ts";

export interface TurnDetectorOptions {
  /** OpenAI's 0..1 threshold, mapped to an onset level from -60 dBFS (0) to -20 dBFS (1). */
  threshold: number;
  /** Silence that ends a turn. */
  silenceDurationMs: number;
}

export type TurnEvent =
  | { type: "speech_started"; onsetMs: number }
  | { type: "speech_stopped"; lastVoicedEndMs: number; stopMs: number };

/** Frames above the onset level needed to start a turn: a click or a pop is not speech. */
const ONSET_FRAMES = 2;
/** The level must fall this far below the onset level to count as silence (hysteresis). */
const HYSTERESIS_DB = 10;

export class EnergyTurnDetector {
  #onsetDb: number;
  #silenceFrames: number;
  #speaking = false;
  #loudRun = 0;
  #quietRun = 0;
  #lastVoicedEndMs = 0;

  constructor(options: TurnDetectorOptions) {
    this.#onsetDb = -60 + 40 * options.threshold;
    this.#silenceFrames = Math.max(1, Math.round(options.silenceDurationMs / FRAME_MS));
  }

  get speaking(): boolean {
    return this.#speaking;
  }

  /** One 20 ms frame that starts at `startMs` of the session's input audio. */
  push(frame: Int16Array, startMs: number): TurnEvent | null {
    let sum = 0;
    for (let i = 0; i < FRAME_SAMPLES; i++) sum += frame[i]! * frame[i]!;
    const level = 10 * Math.log10(sum / FRAME_SAMPLES / (32768 * 32768) + 1e-12);
    const endMs = startMs + FRAME_MS;
    if (!this.#speaking) {
      this.#loudRun = level > this.#onsetDb ? this.#loudRun + 1 : 0;
      if (this.#loudRun < ONSET_FRAMES) return null;
      this.#speaking = true;
      this.#quietRun = 0;
      this.#lastVoicedEndMs = endMs;
      return { type: "speech_started", onsetMs: endMs - ONSET_FRAMES * FRAME_MS };
    }
    if (level > this.#onsetDb - HYSTERESIS_DB) {
      this.#quietRun = 0;
      this.#lastVoicedEndMs = endMs;
      return null;
    }
    if (++this.#quietRun < this.#silenceFrames) return null;
    this.#speaking = false;
    this.#loudRun = 0;
    return { type: "speech_stopped", lastVoicedEndMs: this.#lastVoicedEndMs, stopMs: endMs };
  }

  reset(): void {
    this.#speaking = false;
    this.#loudRun = 0;
    this.#quietRun = 0;
  }
}
