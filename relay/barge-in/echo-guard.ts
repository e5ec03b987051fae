// Echo suppression for the uplink while the assistant speaks. Without acoustic echo
// cancellation on the client, the assistant's own voice comes back in the user's microphone; no
// VAD (the relay's or the model's) may take it for the user barging in.
//
// Approach (cheap, per 20 ms frame): the relay knows exactly what it sent, so it keeps the level
// envelope of the sent audio (the reference) and of the uplink, both on one time axis: 20 ms
// slots of the relay's clock. A reference level is filed under the slot in which the pacer sent
// it, an uplink level under the slot in which the client captured it (from its media time, see
// MediaClock), not when either happened to be processed: uplink frames that arrive in a burst
// after a stall still line up with what was playing when they were recorded. The guard finds the
// echo path's delay (0–800 ms) as the lag where the two envelopes correlate best (Pearson), and
// its gain as a low percentile of the uplink/reference ratios over the last half second. A frame
// is "echo only" when its level is within ECHO_MARGIN of the echo predicted from the reference at
// that delay; such frames go upstream as silence and cannot start a relay barge-in. The user
// talking over the assistant is louder than the echo alone and passes. If the envelopes do not
// correlate (a client with working AEC, or the user alone), nothing is suppressed.
//
// Echo-free evidence (issue 20): a frame in which the uplink stays at its noise floor while the
// assistant's audio at some delay was loud enough that even a -30 dB echo would show proves that
// delay free of echo. A frame that every delay able to explain it (at the full level played) has
// been proven free of within the last 3 s is "clean": the user, heard from its first frame,
// whatever the envelopes happen to correlate with (before, a user talking into a silent uplink
// was taken for echo whenever the start of their speech lined up with the reply's envelope, and
// waited for the model's own VAD). Browsers cancel echo by default, so this is the common case.
//
// A reply's first frames, before the echo path is measured: for what goes upstream, the worst
// case as before (any delay, unit gain: the model must not hear, and answer, the reply's opening
// echo); for the relay's VAD, each delay is bounded by the mean uplink/reference ratio it has
// shown so far (lastDecision unmeasured_user / unmeasured_echo).
//
// The echo's delay is bounded by the call itself (issue 20): the network round trip (the least
// the client's RTCP reports showed) plus ECHO_PATH_ALLOWANCE_MS for the client's playout, the air
// and its capture. A user who starts talking into a call's FIRST reply lines up with an echo of
// the reply's own opening at delay = the time since it started, which no earlier frame can
// refute from level envelopes; once the reply is older than the bound that delay is no longer a
// candidate, and every delay within it has been tested by the reply's first frames, so the user is
// heard from their first frame. Before, every delay to 800 ms was a candidate and such a user had
// to be louder than the reply's opening (the bench's 0.6 s trials, p95 about 600 ms). A device
// whose echo comes later than the bound (a Bluetooth speaker behind a deep jitter buffer, a
// host far behind) passes for the user until 12 frames of it follow the reply at a steady gain
// (#echoBeyondBound); then the bound goes for the rest of the call (a metric counts such calls).
// From the second reply on the bound does not matter: the evidence carries over from reply to
// reply (it ages only while the assistant is heard; the echo path of a call is stable), so every
// delay is proven from the reply's first frame.
//
// Assumption: the echo path does not go from none to audible mid-call (a user leaving a headset
// for the loudspeaker with echo cancellation off): for up to 3 s of the assistant's audio after
// such a switch, its echo could pass for the user (a hold; a barge-in if it lasts 480 ms).
//
// Trade-off (documented): in double talk the user must be at least ECHO_MARGIN (6 dB) above
// their own echo to be heard during the assistant's reply; with the echo at full level that
// means speaking up, with a normal loudspeaker-to-microphone loss it is automatic.
export const ECHO_MARGIN = 2; // amplitude ratio, 6 dB
/** Slot duration: one frame. */
export const SLOT_MS = 20;
const MAX_LAG = 40; // 800 ms of echo path delay
/**
 * The echo path's reach beyond the network round trip, ms: the client's jitter buffer and audio
 * output, the air, its capture and encoder buffers, and this host's scheduling (on a loaded
 * machine the echo's lag on the relay's clock runs 100-250 ms over the path's own delay).
 * Acoustic echo with AEC off is 40-300 ms of this on real devices (the labelled set's range).
 */
export const ECHO_PATH_ALLOWANCE_MS = 400;
/** The round trip assumed until the client's first RTCP receiver report (about 1 s in). */
const UNMEASURED_ROUND_TRIP_MS = 50;
/**
 * An echo beyond the bound: the uplink follows the assistant's audio at that delay this closely
 * (Pearson) over at least this many frames of it.
 */
const BEYOND_BOUND_CORRELATION = 0.9;
const BEYOND_BOUND_FRAMES = 12;
/** ... and at a steady gain: the standard deviation of ln(uplink / reference) at most this (4 dB). */
const BEYOND_BOUND_SPREAD = 0.35;
const WINDOW = 25; // 500 ms to estimate delay and gain
/**
 * Slots kept of each envelope: the echo path's reach (MAX_LAG + WINDOW + the ±2 around) plus
 * room for the reference to run ahead of the uplink (what the pacer sent while the uplink frames
 * that will carry its echo are still on their way, up to about 2.5 s).
 */
const RING = 256;
const MIN_CORRELATION = 0.7;
/** Below this amplitude (about -60 dBFS) a frame is silence whatever the reference says. */
const NOISE_FLOOR = 33;
/** Reference frames needed at the delay before the echo path's gain is trusted. */
const MIN_MEASURED = 8;
/** An "echo" louder than 1.5× what was played is not an echo (3.5 dB of headroom for AGC). */
const MAX_GAIN = 1.5;
const GAIN_PERCENTILE = 0.3;
/** Decisions under which the relay's VAD may take the frame for the user speaking. */
export function isUserDecision(decision: EchoDecision): boolean {
  return (
    decision === "clean" ||
    decision === "user" ||
    decision === "uncorrelated" ||
    decision === "unmeasured_user" ||
    decision === "no_reference"
  );
}

/** Frames at one delay before the uplink's record at that delay bounds the unmeasured echo. */
const MIN_EVIDENCE = 1;

/**
 * Echo-free evidence, per delay: a frame in which the uplink stayed at its noise floor while the
 * assistant's audio at that delay was audible. A delay with two such frames within the last
 * EVIDENCE_FRAMES (3 s) of the assistant's audio carries no audible echo. The echo path of a
 * call is stable, so the evidence ages only while the assistant is heard: a reply starts with
 * what the previous one proved, and a user who talks over its opening is heard at once.
 */
const EVIDENCE_FRAMES = 150;
/** The weakest echo that matters (-30 dB): evidence needs audio loud enough to show it. */
const MIN_ECHO_GAIN = 0.03;
/** How fast the uplink's noise-floor estimate may rise per frame (about 10 % a second). */
const FLOOR_RISE = 1.002;

/** Why the guard called a frame what it did (metrics: relay/metrics.ts echoGuardFrames). */
export type EchoDecision =
  /** No assistant audio within the echo path's reach, or the frame is below the noise floor. */
  | "no_reference"
  | "silent"
  /** The uplink showed no echo where the assistant's audio would have put one: the user. */
  | "clean"
  /** Path measured: within ECHO_MARGIN of the predicted echo, or louder (the user). */
  | "echo"
  | "user"
  /** Envelopes do not correlate (a client with echo cancellation): not the assistant. */
  | "uncorrelated"
  /** Path not measured yet (a reply's first frames): judged against every delay's evidence. */
  | "unmeasured_echo"
  | "unmeasured_user";

/** The 20 ms slot of the relay's clock that a time (performance.now() ms) falls in. */
export function slotOf(timeMs: number): number {
  return Math.round(timeMs / SLOT_MS);
}

/** Ring position of a slot (slots are integers, possibly negative in tests). */
function at(slot: number): number {
  return ((slot % RING) + RING) % RING;
}

/** Slots of echo delay the guard must consider, for a network round trip of `roundTripMs`. */
export function echoDelayBound(roundTripMs: number): number {
  return Math.min(MAX_LAG, Math.ceil((roundTripMs + ECHO_PATH_ALLOWANCE_MS) / SLOT_MS));
}

export class EchoGuard {
  readonly #uplink = new Float32Array(RING);
  readonly #uplinkSlot = new Float64Array(RING).fill(NaN);
  readonly #reference = new Float32Array(RING);
  readonly #referenceSlot = new Float64Array(RING).fill(NaN);
  #lastReferenceSlot = -Infinity;
  #referenceOnsetSlot = -Infinity;
  readonly #ratios = new Float32Array(WINDOW);
  /** The last decision's estimate, for tests and tuning. */
  lastDelayFrames = -1;
  lastGain = 0;
  lastDecision: EchoDecision = "no_reference";
  /** Per delay, the last two slots that showed it free of echo (echo-free evidence). */
  readonly #clearAt = new Float64Array(MAX_LAG + 1).fill(-Infinity);
  readonly #clearBefore = new Float64Array(MAX_LAG + 1).fill(-Infinity);
  /** Uplink frames within the echo path's reach of the assistant's audio: the evidence's clock. */
  #playing = 0;
  #uplinkFloor = NOISE_FLOOR;
  /**
   * The longest echo delay (slots) the call can have: the network round trip plus
   * ECHO_PATH_ALLOWANCE_MS. Delays beyond it cannot hold an echo, so a user talking into a call's
   * first reply is not taken for the echo of its opening once the reply is older than this.
   * MAX_LAG for good once an echo is measured beyond it (a device slower than allowed for).
   */
  #bound = echoDelayBound(UNMEASURED_ROUND_TRIP_MS);
  #boundExceeded = false;
  #leastRoundTripMs = Infinity;

  /**
   * The amplitude (RMS) of the assistant audio the pacer sent in `slot`. Slots never filed are
   * silence; a slot filed twice (two sends mapped to one slot) keeps the louder.
   */
  reference(slot: number, amplitude: number): void {
    const i = at(slot);
    if (this.#referenceSlot[i] === slot) {
      if (amplitude > this.#reference[i]!) this.#reference[i] = amplitude;
    } else {
      this.#referenceSlot[i] = slot;
      this.#reference[i] = amplitude;
    }
    if (amplitude > NOISE_FLOOR) {
      // A reply starting after a silence longer than the echo path: its echo is not measured yet.
      if (slot - this.#lastReferenceSlot > MAX_LAG + WINDOW) this.#referenceOnsetSlot = slot;
      if (slot > this.#lastReferenceSlot) this.#lastReferenceSlot = slot;
    }
  }

  /**
   * The network round trip the client's RTCP reports measured, ms (bounds the echo delay). The
   * least seen in the call counts: a report is only ever delayed (a busy host answering a call's
   * first sender reports late gave 300-400 ms on loopback), never early.
   */
  roundTrip(rttMs: number): void {
    if (!Number.isFinite(rttMs) || rttMs < 0 || rttMs >= this.#leastRoundTripMs) return;
    this.#leastRoundTripMs = rttMs;
    if (!this.#boundExceeded) this.#bound = echoDelayBound(rttMs);
  }

  /** The longest echo delay considered now, slots (tests, tuning). */
  get delayBound(): number {
    return this.#bound;
  }

  /**
   * One uplink frame's amplitude (RMS), captured in `slot`. Returns true if the frame may be only
   * the assistant's echo (it goes upstream as silence). `lastDecision` says why, and whether the
   * VAD may take the frame for the user (isUserDecision).
   */
  push(slot: number, uplink: number): boolean {
    const t = slot;
    const i = at(t);
    this.#uplinkSlot[i] = t;
    this.#uplink[i] = uplink;
    // No assistant audio within the echo path's reach: nothing to suppress.
    if (t - this.#lastReferenceSlot > MAX_LAG + 2) {
      this.lastDecision = "no_reference";
      return false;
    }
    this.#playing++;
    // The uplink's noise floor (a bed of room noise is not an echo), and echo-free evidence.
    this.#uplinkFloor = Math.max(NOISE_FLOOR, Math.min(uplink, this.#uplinkFloor * FLOOR_RISE));
    if (uplink <= 2 * this.#uplinkFloor) {
      // Only audio whose weakest echo would stand clearly above the floor proves anything.
      const loudEnough = (2 * this.#uplinkFloor) / MIN_ECHO_GAIN;
      for (let lag = 0; lag <= MAX_LAG; lag++) {
        if (this.#referenceAt(t - lag) <= loudEnough) continue;
        this.#clearBefore[lag] = this.#clearAt[lag]!;
        this.#clearAt[lag] = this.#playing;
      }
    }
    if (uplink <= NOISE_FLOOR) {
      this.lastDecision = "silent";
      return false;
    }
    // Clean: no delay within the bound at which the assistant's audio could account for this
    // frame (even at the full level it was played) has shown an echo lately. Only a reply's
    // first frames, reaching the microphone just now at the delay that lines them up with this
    // frame, are unproven; once the reply is older than the bound, none are.
    let clean = true;
    let beyondBoundUnproven = false;
    for (let lag = this.#bound + 1; lag <= MAX_LAG && !beyondBoundUnproven; lag++)
      beyondBoundUnproven = this.#referenceAt(t - lag) >= uplink && !this.#proven(lag);
    for (let lag = 0; lag <= this.#bound && clean; lag++) {
      if (this.#referenceAt(t - lag) < uplink) continue;
      if (!this.#proven(lag)) clean = false;
    }
    // A frame clean only because of the bound is watched for an echo beyond it (the lags past it).
    if (clean && !(beyondBoundUnproven && this.#echoBeyondBound(t))) {
      this.lastDecision = "clean";
      return false;
    }

    let bestLag = -1;
    let bestCorrelation = 0;
    for (let lag = 0; lag <= MAX_LAG; lag++) {
      const correlation = this.#correlation(t, lag);
      if (correlation > bestCorrelation) [bestCorrelation, bestLag] = [correlation, lag];
    }
    this.lastDelayFrames = bestLag;

    // The echo path's gain: a low percentile of the uplink/reference ratios at that delay
    // (frames where the user is silent give the true gain; double talk only raises ratios; the
    // lowest few are the delay estimate's misalignments at word edges).
    let measured = 0;
    if (bestLag >= 0) {
      for (let k = 0; k < WINDOW; k++) {
        const r = this.#referenceAt(t - k - bestLag);
        if (r > NOISE_FLOOR * 4) this.#ratios[measured++] = this.#uplinkAt(t - k) / r;
      }
    }
    const gain = measured > 0 ? this.#percentile(measured, GAIN_PERCENTILE) : 0;
    this.lastGain = gain;
    // The reply just started: its echo path is not measured yet.
    if (measured < MIN_MEASURED || t - this.#referenceOnsetSlot < Math.max(bestLag, 0) + MIN_MEASURED) {
      // Two answers: for the VAD, whether any delay's evidence can explain the frame; for what
      // goes upstream, the worst case (unit gain, any delay), as before: the model must not
      // hear the reply's opening echo (it would take it for a turn and answer its own voice).
      this.lastDecision = this.#explainedByAnyPath(t, uplink) ? "unmeasured_echo" : "unmeasured_user";
      let loudest = 0;
      for (let k = 0; k <= this.#bound; k++) loudest = Math.max(loudest, this.#referenceAt(t - k));
      return uplink <= loudest;
    }
    // Not correlated, or an "echo" louder than what was played: this is not the assistant.
    if (bestCorrelation < MIN_CORRELATION || gain > MAX_GAIN) {
      this.lastDecision = "uncorrelated";
      return false;
    }
    // The reference level around the delay (±2 frames: the pacer, the network, the client's
    // playout and its microphone are not in step).
    let around = 0;
    for (let d = -2; d <= 2 && d <= bestLag; d++)
      around = Math.max(around, this.#referenceAt(t - bestLag + d));
    this.lastDecision = uplink <= ECHO_MARGIN * gain * around ? "echo" : "user";
    return this.lastDecision === "echo";
  }

  /**
   * Before the echo path is measured: could ANY echo path explain this frame? Every delay is a
   * candidate, but each is judged by what the uplink already showed at that delay: the ratio of
   * uplink to reference on the frames before this one (the smallest, scaled by ECHO_MARGIN) is
   * the most that delay's echo can be. A clean uplink (a client with echo cancellation, or the
   * user alone) shows near nothing at every delay within a few frames of the reply's start, so
   * the user who then talks over the reply is heard at once. Only delays with fewer than
   * MIN_EVIDENCE frames of evidence (the reply's first frames, reaching the microphone just now)
   * are assumed the worst: an echo as loud as what was played.
   */
  #explainedByAnyPath(t: number, uplink: number): boolean {
    for (let lag = 0; lag <= this.#bound; lag++) {
      const r = this.#referenceAt(t - lag);
      if (r <= NOISE_FLOOR) continue;
      let evidence = 0;
      let ratios = 0;
      for (let k = 1; k <= WINDOW; k++) {
        const earlier = this.#referenceAt(t - k - lag);
        if (earlier <= NOISE_FLOOR * 4 || !this.#uplinkKnown(t - k)) continue;
        evidence++;
        ratios += this.#uplinkAt(t - k) / earlier;
      }
      // The mean ratio: the echo's misalignment at word edges only lowers a few ratios, the
      // user's own earlier speech only raises them (then more is called echo, the safe side).
      const gain = evidence >= MIN_EVIDENCE ? Math.min((ECHO_MARGIN * ratios) / evidence, MAX_GAIN) : 1;
      if (uplink <= gain * r) return true;
    }
    return false;
  }

  /**
   * Pearson correlation of the uplink's and the reference's envelopes over the last WINDOW slots,
   * the reference `lag` slots earlier (slots with nothing filed are silence). Amplitudes are all
   * positive, so without removing the means any two speech envelopes would look alike.
   */
  #correlation(t: number, lag: number): number {
    let su = 0;
    let sr = 0;
    let ur = 0;
    let uu = 0;
    let rr = 0;
    for (let k = 0; k < WINDOW; k++) {
      const u = this.#uplinkAt(t - k);
      const r = this.#referenceAt(t - k - lag);
      su += u;
      sr += r;
      ur += u * r;
      uu += u * u;
      rr += r * r;
    }
    const cov = ur - (su * sr) / WINDOW;
    const varU = uu - (su * su) / WINDOW;
    const varR = rr - (sr * sr) / WINDOW;
    return varU > 0 && varR > 0 ? cov / Math.sqrt(varU * varR) : 0;
  }

  /**
   * Whether the uplink follows the assistant's audio at a delay beyond the bound (a device slower
   * than ECHO_PATH_ALLOWANCE_MS): then the bound was wrong for this call and goes for good.
   * Judged only on the frames where the audio at that delay was playing: a user who starts
   * talking as the reply starts (the case the bound is for) makes the same step in both
   * envelopes, which says nothing; only an echo follows the reply's syllables after it.
   */
  #echoBeyondBound(t: number): boolean {
    for (let lag = this.#bound + 1; lag <= MAX_LAG; lag++) {
      let n = 0;
      let sum = 0;
      let squares = 0;
      for (let k = 0; k < WINDOW; k++) {
        const r = this.#referenceAt(t - k - lag);
        if (r <= NOISE_FLOOR * 4) continue;
        const logRatio = Math.log(Math.max(this.#uplinkAt(t - k), 1) / r);
        n++;
        sum += logRatio;
        squares += logRatio * logRatio;
      }
      if (n < BEYOND_BOUND_FRAMES) continue;
      const mean = sum / n;
      const spread = Math.sqrt(Math.max(0, squares / n - mean * mean));
      if (spread > BEYOND_BOUND_SPREAD || mean < Math.log(MIN_ECHO_GAIN) || mean > Math.log(MAX_GAIN))
        continue;
      if (this.#correlation(t, lag) < BEYOND_BOUND_CORRELATION) continue;
      this.#bound = MAX_LAG;
      this.#boundExceeded = true;
      return true;
    }
    return false;
  }

  /** Whether an echo was measured beyond the round trip's bound in this call (tests, metrics). */
  get boundExceeded(): boolean {
    return this.#boundExceeded;
  }

  /** Whether the delay has shown no echo lately (echo-free evidence, see EVIDENCE_FRAMES). */
  #proven(lag: number): boolean {
    return this.#playing - this.#clearBefore[lag]! <= EVIDENCE_FRAMES;
  }

  /** Slots from the last non-silent reference to `slot` (tests). */
  sinceReference(slot: number): number {
    return slot - this.#lastReferenceSlot;
  }

  /** The q-quantile of the first n ratios (insertion sort in place: n ≤ WINDOW, no allocation). */
  #percentile(n: number, q: number): number {
    const r = this.#ratios;
    for (let i = 1; i < n; i++) {
      const v = r[i]!;
      let j = i - 1;
      for (; j >= 0 && r[j]! > v; j--) r[j + 1] = r[j]!;
      r[j + 1] = v;
    }
    return r[Math.floor(n * q)]!;
  }

  #uplinkAt(slot: number): number {
    const i = at(slot);
    return this.#uplinkSlot[i] === slot ? this.#uplink[i]! : 0;
  }

  #uplinkKnown(slot: number): boolean {
    return this.#uplinkSlot[at(slot)] === slot;
  }

  #referenceAt(slot: number): number {
    const i = at(slot);
    return this.#referenceSlot[i] === slot ? this.#reference[i]! : 0;
  }
}
