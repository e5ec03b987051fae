// The relay's own look at a call's uplink: echo suppression (always, while assistant audio can
// echo) and the barge-in VAD (only while the assistant speaks, the only time it can matter).
// Silero VAD is the detector; an energy threshold is the documented fallback (RELAY_VAD=energy)
// for hosts where onnxruntime cannot load.
//
// Timing: the echo guard compares the two envelopes on the relay's clock. What the pacer sent is
// filed at the pacer's time for it (the downlink's media time, mapped by a MediaClock), what the
// uplink carries at the client's capture time (the uplink's media time, mapped likewise), so
// bursts of late uplink frames (network jitter, a loaded host) still line up with the audio that
// was playing when they were recorded. A bridge that gives no media times (tests' doubles) falls
// back to arrival order: one slot per uplink frame, with what was sent since the previous one,
// which is right when both sides run in step.
import { FRAME_SAMPLES, PCM_SAMPLE_RATE } from "../media/audio-format.ts";
import type { SentFrame } from "../media/downlink.ts";
import type { RelayMetrics } from "../metrics.ts";
import { type EchoDecision, EchoGuard, isUserDecision, slotOf } from "./echo-guard.ts";
import { MediaClock } from "./media-clock.ts";
import { Resampler } from "../media/resampler.ts";
import { SILERO_CHUNK, SILERO_SAMPLE_RATE, type SileroDetector, type SileroModel } from "./silero-vad.ts";

/** Silero speech probability that counts as speech. */
const SPEECH_PROBABILITY = 0.5;
/** Consecutive speech chunks (32 ms each) before a speech onset: one loud click is not the user. */
const ONSET_CHUNKS = 2;
/** Speech needed before a held reply is interrupted (RELAY_BARGE_IN_MIN_SPEECH_MS's default). */
export const DEFAULT_MIN_SPEECH_MS = 480;
/**
 * Non-speech after which speech that did not reach the minimum was not an interruption. Longer
 * than the pause at a comma ("Wait, stop, I have…"), which must not let the reply resume.
 */
export const RESUME_SILENCE_MS = 320;
/** Echo-guard decision counts are added to the metrics this often (frames), not per frame. */
const DECISION_FLUSH_FRAMES = 250;
/** Energy fallback: frames above this level (dBFS) count as speech. */
const ENERGY_ONSET_DBFS = -35;
const ENERGY_ONSET_FRAMES = 3;
const ITEMS_TRACKED = 4;
/** About -50 dBFS: quieter frames cannot be the user barging in. */
const USER_FLOOR = 100;

/**
 * The 20 ms levels of one item not yet read back, as a growable ring: levels are pushed as the
 * model generates audio and dropped once the pacer has sent that audio, so memory follows the
 * audio queued ahead of the pacer (itself capped by the downlink), not the reply's length.
 * Indices are absolute frame numbers within the item.
 */
class LevelQueue {
  #ring = new Float64Array(64);
  /** Physical slot of the oldest level kept. */
  #head = 0;
  #length = 0;
  /** Absolute index of the oldest level kept. */
  #start = 0;

  /** Frames pushed since the item began. */
  get total(): number {
    return this.#start + this.#length;
  }

  push(level: number): void {
    if (this.#length === this.#ring.length) {
      const grown = new Float64Array(this.#ring.length * 2);
      for (let i = 0; i < this.#length; i++) grown[i] = this.#at(i);
      this.#ring = grown;
      this.#head = 0;
    }
    this.#ring[(this.#head + this.#length) % this.#ring.length] = level;
    this.#length++;
  }

  /** Level of absolute frame `index`, which must lie in [dropped frames, total). */
  get(index: number): number {
    return this.#at(index - this.#start);
  }

  /** Forgets every frame before absolute index `index`. */
  dropBefore(index: number): void {
    const n = Math.min(Math.max(0, index - this.#start), this.#length);
    this.#head = (this.#head + n) % this.#ring.length;
    this.#start += n;
    this.#length -= n;
  }

  #at(offset: number): number {
    return this.#ring[(this.#head + offset) % this.#ring.length]!;
  }
}

/**
 * Level envelope of the assistant audio the relay generated, read back as the downlink reports
 * each frame sent (its item and samples), so the guard compares the uplink with what actually
 * went out, not with what was queued.
 */
class EchoReference {
  // Per item: amplitude (RMS) of each 20 ms of generated audio not yet read back.
  #items = new Map<string, ReferenceItem>();

  generated(itemId: string, pcm: Int16Array): void {
    const item = this.#item(itemId);
    for (let i = 0; i < pcm.length; i++) {
      item.sum += pcm[i]! * pcm[i]!;
      if (++item.count === FRAME_SAMPLES) {
        item.frames.push(Math.sqrt(item.sum / FRAME_SAMPLES));
        item.sum = 0;
        item.count = 0;
      }
    }
    // Frames already sent and read back are never read again: drop them at once.
    item.frames.dropBefore(item.readFrames);
  }

  /** The downlink sent `samples` more of the item's audio (read back at the next look). */
  sent(itemId: string, samples: number): void {
    this.#item(itemId).sentSamples += samples;
  }

  /** Amplitude of what was sent since the last look (0 if nothing was). */
  sentSinceLastLook(): number {
    let power = 0;
    let frames = 0;
    for (const item of this.#items.values()) {
      const sent = Math.floor(item.sentSamples / FRAME_SAMPLES);
      const total = item.frames.total;
      for (let f = item.readFrames; f < sent && f < total; f++) {
        const level = item.frames.get(f);
        power += level * level;
        frames++;
      }
      item.readFrames = Math.max(item.readFrames, sent);
      item.frames.dropBefore(item.readFrames);
    }
    return frames > 0 ? Math.sqrt(power / frames) : 0;
  }

  #item(itemId: string): ReferenceItem {
    let item = this.#items.get(itemId);
    if (!item) {
      item = { frames: new LevelQueue(), sum: 0, count: 0, sentSamples: 0, readFrames: 0 };
      this.#items.set(itemId, item);
      if (this.#items.size > ITEMS_TRACKED) this.#items.delete(this.#items.keys().next().value!);
    }
    return item;
  }
}

interface ReferenceItem {
  frames: LevelQueue;
  /** Power and samples of the 20 ms level being summed. */
  sum: number;
  count: number;
  /** Samples the downlink reported sent, and whole frames of them read back so far. */
  sentSamples: number;
  readFrames: number;
}

/** What the relay's uplink VAD and echo suppression need from the bridge. */
export interface UplinkMonitorHooks {
  /**
   * True while assistant audio is queued or being generated and the session lets the relay
   * interrupt it: the only time the VAD needs to run.
   */
  assistantActive(): boolean;
  /** The user started speaking over the assistant (hold the reply). */
  onSpeechStart(): void;
  /** The user stopped before the minimum speech: not an interruption (play on). */
  onSpeechEnd(): void;
  /** The user spoke over the assistant long enough: an interruption (barge in). */
  onSpeech(): void;
}

/** The relay's own look at a call's uplink audio, as the inference bridge drives it. */
export interface UplinkMonitor {
  /**
   * Returns true if the frame is only the assistant's echo and should go upstream as silence.
   * `mediaTimeMs`: the frame's capture time on the client's media clock (CallBridge.onUplinkFrame).
   */
  onUplinkFrame(pcm: Int16Array, mediaTimeMs?: number): boolean;
  /** Whether this monitor detects speech (the relay owns interruption), or only suppresses echo. */
  readonly detectsSpeech: boolean;
  /** A downlink frame went out (CallBridge.onDownlinkSent): what the user may hear back as echo. */
  onDownlinkSent(frame: SentFrame): void;
  /** Assistant audio about to be queued on the downlink (the echo reference). */
  onAssistantAudio(itemId: string, pcm: Int16Array): void;
  /** The network round trip the client's RTCP reports measured (bounds the echo's delay). */
  onRoundTrip(rttMs: number): void;
  close(): void;
}

export interface UplinkMonitorOptions {
  /** Silero, or null for the energy fallback. */
  silero: SileroModel | null;
  echoSuppression: boolean;
  /** Whether the monitor may start barge-ins at all (RELAY_VAD=off keeps echo suppression only). */
  vad?: boolean;
  /**
   * Speech (ms) before a held reply becomes a barge-in (DEFAULT_MIN_SPEECH_MS); 0 interrupts at
   * the onset itself. See barge-in.ts.
   */
  minSpeechMs?: number;
  /** The relay's clock, ms; performance.now() unless a test drives time itself. */
  now?: () => number;
}

export class RelayUplinkMonitor implements UplinkMonitor {
  readonly #hooks: UplinkMonitorHooks;
  readonly #vadSeconds: RelayMetrics["vadChunkSeconds"] | undefined;
  readonly #detector: SileroDetector | null;
  readonly #echoSuppression: boolean;
  readonly #vad: boolean;
  readonly #minSpeechMs: number;
  readonly #metrics: RelayMetrics | undefined;
  /** Echo-guard decisions since the last flush to the metrics (plain counts: no per-frame labels). */
  readonly #decisions: Record<EchoDecision, number> = {
    no_reference: 0,
    silent: 0,
    clean: 0,
    echo: 0,
    user: 0,
    uncorrelated: 0,
    unmeasured_echo: 0,
    unmeasured_user: 0,
  };
  #suppressed = 0;
  #decided = 0;
  readonly #reference = new EchoReference();
  readonly #guard = new EchoGuard();
  readonly #now: () => number;
  readonly #uplinkClock = new MediaClock();
  readonly #downlinkClock = new MediaClock();
  /** Slot of the latest downlink send, NaN until the bridge reports sends (then polls use it). */
  #sendSlot = NaN;
  /** Uplink frames without a media time: their slots in arrival order. */
  #arrivals = 0;
  readonly #resampler = new Resampler(PCM_SAMPLE_RATE, SILERO_SAMPLE_RATE);
  readonly #resampled: Float32Array;
  readonly #chunk = new Float32Array(SILERO_CHUNK);
  readonly #pending = new Float32Array(SILERO_CHUNK);
  #chunkLength = 0;
  #running = false;
  #active = false;
  #speechRun = 0;
  /** Between a speech onset and its outcome (interruption, or play on). */
  #speaking = false;
  #voicedMs = 0;
  #quietMs = 0;
  /** Echo-only verdicts of the frames in the chunk being collected: a chunk of echo is not the user. */
  #chunkHasUser = false;
  #pendingHasUser = false;
  /**
   * Audible frames in the chunk, echo or not. Once the reply is held nothing new is played, so
   * an echo dies out within the echo path's delay; speech that goes on is the user, even where
   * the guard (its estimate thrown by the user's own voice) calls it echo.
   */
  #chunkAudible = false;
  #pendingReady = false;
  #closed = false;

  constructor(hooks: UplinkMonitorHooks, options: UplinkMonitorOptions, metrics?: RelayMetrics) {
    this.#hooks = hooks;
    this.#vadSeconds = metrics?.vadChunkSeconds;
    this.#detector = options.silero?.detector() ?? null;
    this.#echoSuppression = options.echoSuppression;
    this.#vad = options.vad ?? true;
    this.#minSpeechMs = options.minSpeechMs ?? DEFAULT_MIN_SPEECH_MS;
    this.#metrics = metrics;
    this.#now = options.now ?? (() => performance.now());
    this.#resampled = new Float32Array(this.#resampler.maxOutput(FRAME_SAMPLES));
  }

  get detectsSpeech(): boolean {
    return this.#vad;
  }

  onAssistantAudio(itemId: string, pcm: Int16Array): void {
    this.#reference.generated(itemId, pcm);
  }

  onRoundTrip(rttMs: number): void {
    this.#guard.roundTrip(rttMs);
  }

  /**
   * The downlink put a frame on the wire. What was sent before it is filed under the previous
   * send's slot; this frame is read back at the next look (the next send or uplink frame).
   * A NaN media time (a sender with no media clock) keeps the uplink's arrival order.
   */
  onDownlinkSent(frame: SentFrame): void {
    const now = this.#now();
    if (!Number.isNaN(this.#sendSlot)) this.#readBackSent(this.#sendSlot);
    this.#reference.sent(frame.itemId, frame.samples);
    this.#sendSlot = Number.isNaN(frame.mediaTimeMs)
      ? NaN
      : slotOf(this.#downlinkClock.wallTime(frame.mediaTimeMs, now));
  }

  onUplinkFrame(pcm: Int16Array, mediaTimeMs?: number): boolean {
    let sum = 0;
    for (let i = 0; i < FRAME_SAMPLES; i++) sum += pcm[i]! * pcm[i]!;
    const amplitude = Math.sqrt(sum / FRAME_SAMPLES);
    const slot =
      mediaTimeMs === undefined
        ? ++this.#arrivals
        : slotOf(this.#uplinkClock.wallTime(mediaTimeMs, this.#now()));
    this.#readBackSent(Number.isNaN(this.#sendSlot) ? slot : this.#sendSlot);
    const boundExceeded = this.#guard.boundExceeded;
    const echoOnly = this.#guard.push(slot, amplitude);
    if (this.#guard.boundExceeded !== boundExceeded) this.#metrics?.echoDelayBoundExceeded.inc();
    this.#decisions[this.#guard.lastDecision]++;
    if (echoOnly && this.#echoSuppression) this.#suppressed++;
    if (++this.#decided >= DECISION_FLUSH_FRAMES) this.#flushDecisions();

    const active = this.#vad && this.#hooks.assistantActive();
    if (!active) {
      if (this.#active) this.#idle();
      return this.#echoSuppression && echoOnly;
    }
    this.#active = true;
    if (!this.#detector) {
      // Energy fallback: loud frames the echo does not explain.
      const loud =
        20 * Math.log10(amplitude / 32768 + 1e-12) > ENERGY_ONSET_DBFS &&
        isUserDecision(this.#guard.lastDecision);
      this.#vadResult(loud, 20, ENERGY_ONSET_FRAMES);
      return this.#echoSuppression && echoOnly;
    }
    // Silence is not the user either: only audible frames the echo does not explain count.
    this.#chunkHasUser ||= isUserDecision(this.#guard.lastDecision) && amplitude > USER_FLOOR;
    this.#chunkAudible ||= amplitude > USER_FLOOR;
    const n = this.#resampler.process(pcm, this.#resampled);
    for (let i = 0; i < n; i++) {
      this.#chunk[this.#chunkLength++] = this.#resampled[i]! / 32768;
      if (this.#chunkLength === SILERO_CHUNK) {
        this.#chunkLength = 0;
        this.#submit();
      }
    }
    return this.#echoSuppression && echoOnly;
  }

  /** Files what the pacer sent since the last look under `slot`, the slot it was sent in. */
  #readBackSent(slot: number): void {
    const reference = this.#reference.sentSinceLastLook();
    if (reference > 0 && !Number.isNaN(slot)) this.#guard.reference(slot, reference);
  }

  /** Runs Silero on the completed chunk; one inference in flight, the newest chunk waits. */
  #submit(): void {
    const hasUser = this.#chunkHasUser || (this.#speaking && this.#chunkAudible);
    this.#chunkHasUser = false;
    this.#chunkAudible = false;
    if (this.#running) {
      // The previous inference is still out: keep only the newest chunk (speech onsets are
      // what matter, and stale chunks would only delay them).
      this.#pending.set(this.#chunk);
      this.#pendingHasUser = hasUser;
      this.#pendingReady = true;
      return;
    }
    this.#run(this.#chunk, hasUser);
  }

  #run(chunk: Float32Array, hasUser: boolean): void {
    this.#running = true;
    const detector = this.#detector!;
    detector.probability(chunk).then(
      (p) => {
        this.#running = false;
        if (this.#closed) return;
        this.#vadSeconds?.observe(detector.lastRunMs / 1000);
        if (!this.#active) return;
        this.#vadResult(p >= SPEECH_PROBABILITY && hasUser, 32, ONSET_CHUNKS);
        if (this.#active && this.#pendingReady) {
          this.#pendingReady = false;
          this.#chunk.set(this.#pending);
          this.#run(this.#chunk, this.#pendingHasUser);
        }
      },
      () => {
        this.#running = false;
      },
    );
  }

  /**
   * One VAD verdict covering `ms` of audio. `onsetUnits` speech verdicts in a row are an onset:
   * the reply is held; speech that adds up to the minimum (short pauses allowed) interrupts it;
   * RESUME_SILENCE_MS without speech before that lets it play on.
   */
  #vadResult(speech: boolean, ms: number, onsetUnits: number): void {
    if (!this.#speaking) {
      this.#speechRun = speech ? this.#speechRun + 1 : 0;
      if (this.#speechRun < onsetUnits) return;
      this.#speaking = true;
      this.#voicedMs = this.#speechRun * ms;
      this.#quietMs = 0;
      if (this.#voicedMs >= this.#minSpeechMs) return this.#interrupt();
      this.#hooks.onSpeechStart();
      return;
    }
    if (speech) {
      this.#voicedMs += ms;
      this.#quietMs = 0;
      if (this.#voicedMs >= this.#minSpeechMs) this.#interrupt();
      return;
    }
    this.#quietMs += ms;
    if (this.#quietMs >= RESUME_SILENCE_MS) this.#endSpeech();
  }

  #interrupt(): void {
    this.#speaking = false;
    this.#speechRun = 0;
    this.#hooks.onSpeech();
  }

  #endSpeech(): void {
    this.#speaking = false;
    this.#speechRun = 0;
    this.#hooks.onSpeechEnd();
  }

  /** The assistant stopped (or may no longer be interrupted): the next reply starts clean. */
  #idle(): void {
    this.#active = false;
    if (this.#speaking) this.#endSpeech();
    this.#speechRun = 0;
    this.#chunkLength = 0;
    this.#pendingReady = false;
    if (!this.#running) this.#detector?.reset();
  }

  #flushDecisions(): void {
    this.#decided = 0;
    const metrics = this.#metrics;
    const decisions = this.#decisions;
    for (const decision of Object.keys(decisions) as EchoDecision[]) {
      if (decisions[decision] > 0) metrics?.echoGuardFrames.inc({ decision }, decisions[decision]);
      decisions[decision] = 0;
    }
    if (this.#suppressed > 0) metrics?.echoSuppressedFrames.inc(this.#suppressed);
    this.#suppressed = 0;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#flushDecisions();
  }
}

/** Per-call monitor factory for InferenceBridgeOptions.uplinkMonitor. */
export function relayUplinkMonitor(options: UplinkMonitorOptions) {
  return (hooks: UplinkMonitorHooks, metrics: RelayMetrics) =>
    new RelayUplinkMonitor(hooks, options, metrics);
}
