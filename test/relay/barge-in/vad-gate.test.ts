// The relay VAD's gate (issue 16): while the assistant talks, Silero runs only on chunks that
// may be the user. Quiet chunks get their verdict ("not the user") without an inference, and the
// detector resumes as if it had heard the silence, so a barge-in is caught as early as before.
// Real Silero, real eSpeak speech, the real monitor; uplink frames fed one 20 ms frame at a time.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SpeechSynthesizer } from "../../../agent/tts.ts";
import { FRAME_SAMPLES } from "../../../relay/media/audio-format.ts";
import { Resampler } from "../../../relay/media/resampler.ts";
import { SILERO_CHUNK, SileroModel } from "../../../relay/barge-in/silero-vad.ts";
import { RelayUplinkMonitor } from "../../../relay/barge-in/uplink-monitor.ts";
import { onsetOf } from "../../support/turn-taking.ts";

let model: SileroModel;
let speech: Int16Array;
beforeAll(async () => {
  model = await SileroModel.load();
  speech = await new SpeechSynthesizer().speak("Sorry, wait, that is not what I asked for.");
});
afterAll(() => model.close());

function to16k(pcm24: Int16Array): Float32Array {
  const resampler = new Resampler(24_000, 16_000);
  const out = new Float32Array(resampler.maxOutput(pcm24.length));
  const n = resampler.process(pcm24, out);
  return out.subarray(0, n).map((v) => v / 32768);
}

/** A monitor for a call whose assistant is talking; counts Silero inferences and onsets. */
function talkingCall() {
  const seen = { inferences: 0, onsetAtFrame: -1, frame: 0 };
  const counting = {
    detector() {
      const detector = model.detector();
      const probability = detector.probability.bind(detector);
      detector.probability = (chunk: Float32Array) => {
        seen.inferences++;
        return probability(chunk);
      };
      return detector;
    },
  } as unknown as SileroModel;
  const monitor = new RelayUplinkMonitor(
    {
      assistantActive: () => true,
      onSpeechStart: () => {
        if (seen.onsetAtFrame < 0) seen.onsetAtFrame = seen.frame;
      },
      onSpeechEnd: () => {},
      onSpeech: () => {
        if (seen.onsetAtFrame < 0) seen.onsetAtFrame = seen.frame;
      },
    },
    { silero: counting, echoSuppression: true },
  );
  return {
    seen,
    /** Feeds `pcm` 20 ms at a time, letting each inference finish as a live call would. */
    async feed(pcm: Int16Array) {
      for (let at = 0; at + FRAME_SAMPLES <= pcm.length; at += FRAME_SAMPLES) {
        monitor.onUplinkFrame(pcm.subarray(at, at + FRAME_SAMPLES));
        seen.frame++;
        await new Promise((r) => setTimeout(r, 0));
      }
    },
  };
}

describe("relay VAD gate", () => {
  it("a detector that skipped silence hears speech as early as one that ran on it", async () => {
    const chunks = (signal: Float32Array) =>
      Array.from({ length: Math.floor(signal.length / SILERO_CHUNK) }, (_, i) =>
        signal.subarray(i * SILERO_CHUNK, (i + 1) * SILERO_CHUNK),
      );
    const speechChunks = chunks(to16k(speech));
    const silence = new Float32Array(SILERO_CHUNK);
    /** Speech verdicts (p ≥ 0.5) of the utterance, heard after speech and then `silent` chunks. */
    const verdicts = async (silent: number | "skipped") => {
      const detector = model.detector();
      for (const chunk of speechChunks) await detector.probability(chunk);
      if (silent === "skipped") detector.skipSilence();
      else for (let i = 0; i < silent; i++) await detector.probability(silence);
      const heard: boolean[] = [];
      for (const chunk of speechChunks) heard.push((await detector.probability(chunk)) >= 0.5);
      return heard;
    };
    /** First chunk of two speech verdicts in a row (the monitor's onset). */
    const onset = (heard: boolean[]) => heard.findIndex((v, i) => v && heard[i + 1]);
    const skipped = await verdicts("skipped");
    // Silero's state keeps drifting through silence (it has no resting point): compare with a
    // short and a long pause. The skip may hear speech a little more eagerly, never later.
    for (const silent of [31, 125]) {
      const ran = await verdicts(silent);
      expect(onset(skipped)).toBeGreaterThanOrEqual(0);
      expect(onset(skipped)).toBeLessThanOrEqual(onset(ran));
      const agree = skipped.filter((v, i) => v === ran[i]).length / ran.length;
      expect(agree).toBeGreaterThan(0.8);
    }
  });

  it("runs no inference on silence while the assistant talks, and still catches the user's onset", async () => {
    const call = talkingCall();
    await call.feed(new Int16Array(24_000 * 2)); // 2 s of the user listening
    expect(call.seen.inferences).toBe(0);
    expect(call.seen.onsetAtFrame).toBe(-1);
    const speechFrom = call.seen.frame + onsetOf(speech) / 20;
    await call.feed(speech);
    // Speech chunks are judged: an onset needs two 32 ms chunks of speech after the first
    // audible frame, so within 8 frames (160 ms of audio) of it.
    expect(call.seen.inferences).toBeGreaterThan(10);
    expect(call.seen.onsetAtFrame).toBeGreaterThanOrEqual(speechFrom);
    expect(call.seen.onsetAtFrame - speechFrom).toBeLessThanOrEqual(8);
  });
});
