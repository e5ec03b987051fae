// The turn-taking evaluation set and the client that plays it, shared by bench/turn-taking.ts and
// test/relay/barge-in/. Everything is generated at run time (eSpeak NG for voices, DSP in code for
// echo, rooms, noises and noise beds); nothing is downloaded.
//
// The client is a werift peer with a real 20 ms RTP clock. Its microphone, every tick, mixes:
//   - the echo of what it actually heard: the assistant's packets, decoded in arrival order and
//     played out as they arrive, come back `delayMs` later at `gainDb` (optionally coloured by a
//     small room: a low-pass and two reflections);
//   - a stimulus (an interruption, a backchannel, a noise) from a chosen point of the reply;
//   - a noise bed under all of it.
// It then judges what a user would notice: whether the reply stopped for good (no assistant audio
// after the stimulus, the `output_audio_buffer.cleared` event) or played to its end, how long after
// speech onset the last assistant packet arrived, and the longest pause in the reply.
import { performance } from "node:perf_hooks";
import { SpeechSynthesizer } from "../../agent/tts.ts";
import { concat, createOpusEncoder, dbfs, isKeepalive, opus, RATE, FRAME } from "./audio.ts";
import { waitFor } from "./loopback.ts";
import { TestPeer } from "./peer.ts";

export type StimulusClass =
  "interruption" | "echo" | "double_talk" | "backchannel" | "continuation" | "noise";

/** Classes where a barge-in is the right answer. */
export const SHOULD_BARGE_IN: ReadonlySet<StimulusClass> = new Set([
  "interruption",
  "double_talk",
  "continuation",
]);

export interface EchoPath {
  delayMs: number;
  gainDb: number;
  /** A room's colouring (low-pass, two reflections) on top of the delay. */
  room: boolean;
}

export interface Trial {
  name: string;
  class: StimulusClass;
  /** What the user says or does (24 kHz), or null (echo alone). */
  stimulus: Int16Array | null;
  stimulusGainDb: number;
  /** Where speech (or the noise) starts in the stimulus, ms. */
  onsetMs: number;
  /** The stimulus starts once this much of the reply has been heard, ms. */
  startAfterMs: number;
  /**
   * The trial's reply is the call's second: a first one plays out before it, so the relay has
   * heard the uplink under one reply already (the echo path of a call is stable).
   */
  secondReply?: boolean;
  echo: EchoPath | null;
  /** A noise bed under everything, dBFS (RMS), or null. */
  bedDbfs: number | null;
}

// ─── the evaluation set ──────────────────────────────────────────────────────────────────────

/** First 20 ms frame louder than -40 dBFS, in ms: where a listener hears the stimulus start. */
export function onsetOf(pcm: Int16Array): number {
  for (let i = 0; i + FRAME <= pcm.length; i += FRAME)
    if (dbfs(pcm, i, i + FRAME) > -40) return (i / FRAME) * 20;
  return 0;
}

/** Deterministic noise (a small LCG), so a run of the set is repeatable. */
function noiseSource(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state = (Math.imul(state, 1_664_525) + 1_013_904_223) >>> 0;
    return state / 0x8000_0000 - 1;
  };
}

function scaleTo(pcm: Float32Array, peakOrRms: number, byRms = false): Int16Array {
  let level = 0;
  if (byRms) {
    let sum = 0;
    for (const v of pcm) sum += v * v;
    level = Math.sqrt(sum / pcm.length);
  } else for (const v of pcm) level = Math.max(level, Math.abs(v));
  const k = level > 0 ? peakOrRms / level : 0;
  const out = new Int16Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) out[i] = Math.max(-32768, Math.min(32767, Math.round(pcm[i]! * k)));
  return out;
}

/** A cough: a 250 ms burst of band-limited noise with a fast attack and a decay. */
export function cough(seed = 1): Int16Array {
  const n = (RATE * 250) / 1000;
  const next = noiseSource(seed);
  const out = new Float32Array(n);
  let low = 0;
  let band = 0;
  for (let i = 0; i < n; i++) {
    const t = i / RATE;
    const envelope = Math.min(1, t / 0.01) * Math.exp(-t / 0.08);
    low += 0.25 * (next() - low);
    band += 0.5 * (low - band);
    out[i] = (low - band * 0.6) * envelope;
  }
  return scaleTo(out, 16_000);
}

/** A door closing: a low thump (60 Hz, decaying) and a click of the latch. */
export function door(seed = 2): Int16Array {
  const n = (RATE * 400) / 1000;
  const next = noiseSource(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const t = i / RATE;
    out[i] = Math.sin(2 * Math.PI * 60 * t) * Math.exp(-t / 0.09) + (t < 0.006 ? next() * 0.8 : 0);
  }
  return scaleTo(out, 20_000);
}

/** Typing: eight key clicks (3 ms noise bursts) at irregular intervals over about 700 ms. */
export function keyboard(seed = 3): Int16Array {
  const n = (RATE * 700) / 1000;
  const next = noiseSource(seed);
  const out = new Float32Array(n);
  let at = 0;
  for (let k = 0; k < 8; k++) {
    for (let i = 0; i < 72 && at + i < n; i++) out[at + i] = next() * Math.exp(-i / 20);
    at += Math.round(RATE * (0.06 + 0.04 * ((next() + 1) / 2)));
  }
  return scaleTo(out, 12_000);
}

/** A noise bed: brownish noise (a fan, a room) at `dbfsRms`, `ms` long. */
export function noiseBed(dbfsRms: number, ms: number, seed = 4): Int16Array {
  const n = Math.round((RATE * ms) / 1000);
  const next = noiseSource(seed);
  const out = new Float32Array(n);
  let brown = 0;
  for (let i = 0; i < n; i++) {
    brown = 0.98 * brown + 0.2 * next();
    out[i] = brown + 0.15 * next();
  }
  return scaleTo(out, 32768 * 10 ** (dbfsRms / 20), true);
}

/**
 * The noise bed's level: a quiet room or a laptop fan at the microphone. (At -45 dBFS the
 * built-in agent's energy VAD, threshold 0.5 = -40 dBFS onset, takes the bed for speech.)
 */
export const BED_DBFS = -52;

export interface EvaluationSet {
  trials: Trial[];
  /** The sentence the interruptions use most, for single-trial tests. */
  interruption: Int16Array;
  backchannels: Record<string, Int16Array>;
}

/**
 * The labelled set. `size: "test"` keeps one or two of each kind (for test/); "bench" has every
 * combination the bench reports.
 */
export async function evaluationSet(size: "test" | "bench" = "bench"): Promise<EvaluationSet> {
  const tts = new SpeechSynthesizer();
  const say = (text: string) => tts.speak(text);
  const interruptions = {
    "wait, stop": await say("Wait, stop, I have a question."),
    "hold on": await say("Hold on, that is not what I asked."),
    no: await say("No, no, go back to the first part please."),
  };
  const backchannels: Record<string, Int16Array> = {
    "uh huh": await say("uh huh"),
    yeah: await say("yeah"),
    "mm-hm": await say("mm-hm"),
    right: await say("right"),
  };
  const continuation = concat([
    backchannels.yeah!,
    new Int16Array((RATE * 150) / 1000),
    await say("but wait, what about tomorrow?"),
  ]);
  const noises = { cough: cough(), door: door(), keyboard: keyboard() };
  const trials: Trial[] = [];
  const add = (t: Omit<Trial, "onsetMs">) =>
    trials.push({ ...t, onsetMs: t.stimulus ? onsetOf(t.stimulus) : 0 });
  const bench = size === "bench";

  // Real interruptions: several sentences, loudness, starting points.
  const starts = bench ? [600, 1000, 1600] : [800];
  const gains = bench ? [0, -6, -12] : [0];
  for (const [name, pcm] of Object.entries(
    bench ? interruptions : { "wait, stop": interruptions["wait, stop"] },
  ))
    for (const gainDb of gains)
      for (const startAfterMs of starts.slice(0, bench && gainDb !== 0 ? 1 : starts.length))
        add({
          name: `"${name}" ${gainDb} dB at ${startAfterMs} ms`,
          class: "interruption",
          stimulus: pcm,
          stimulusGainDb: gainDb,
          startAfterMs,
          echo: null,
          bedDbfs: null,
        });

  // Pure echo: the assistant's own audio back at realistic delays and gains.
  const echoPaths: EchoPath[] = bench
    ? [
        { delayMs: 40, gainDb: -6, room: false },
        { delayMs: 100, gainDb: -12, room: true },
        { delayMs: 180, gainDb: -6, room: true },
        { delayMs: 300, gainDb: -20, room: false },
        { delayMs: 300, gainDb: -30, room: true },
        { delayMs: 60, gainDb: -18, room: true },
      ]
    : [
        { delayMs: 40, gainDb: -6, room: false },
        { delayMs: 180, gainDb: -12, room: true },
      ];
  for (const echo of echoPaths)
    add({
      name: `echo ${echo.delayMs} ms ${echo.gainDb} dB${echo.room ? " room" : ""}`,
      class: "echo",
      stimulus: null,
      stimulusGainDb: 0,
      startAfterMs: 600,
      echo,
      bedDbfs: null,
    });

  // Double talk: the user interrupts over their own echo; the user must still win.
  for (const echo of bench ? echoPaths.slice(0, 3) : echoPaths.slice(1, 2))
    add({
      name: `"wait, stop" over echo ${echo.delayMs} ms ${echo.gainDb} dB`,
      class: "double_talk",
      stimulus: interruptions["wait, stop"],
      stimulusGainDb: 0,
      startAfterMs: 1000,
      echo,
      bedDbfs: null,
    });

  // Backchannels and short noises: the assistant keeps talking.
  for (const [name, pcm] of Object.entries(bench ? backchannels : { "uh huh": backchannels["uh huh"]! }))
    add({
      name: `"${name}"`,
      class: "backchannel",
      stimulus: pcm,
      stimulusGainDb: -3,
      startAfterMs: 800,
      echo: null,
      bedDbfs: null,
    });
  for (const [name, pcm] of Object.entries(bench ? noises : { cough: noises.cough }))
    add({
      name,
      class: "noise",
      stimulus: pcm,
      stimulusGainDb: 0,
      startAfterMs: 800,
      echo: null,
      bedDbfs: null,
    });

  // A backchannel the user keeps talking past: an interruption from the backchannel's onset.
  add({
    name: `"yeah… but wait"`,
    class: "continuation",
    stimulus: continuation,
    stimulusGainDb: 0,
    startAfterMs: 800,
    echo: null,
    bedDbfs: null,
  });

  // Noise beds under a sample of everything above.
  if (bench) {
    const bedded = trials
      .filter((_, i) => i % 3 === 0)
      .map((t) => ({ ...t, name: `${t.name} + bed ${BED_DBFS} dBFS`, bedDbfs: BED_DBFS }));
    trials.push(...bedded);

    // The same early interruptions in a call's second reply (bench only: each plays a whole reply
    // first), where the echo guard starts with what the first reply showed it. (No echo trial
    // here: the built-in agent answers the first reply's echo the guard lets upstream, so there
    // is no second reply of the trial's own to judge; see bench/README.md.)
    const early = trials.filter(
      (t) =>
        t.class === "interruption" && t.startAfterMs === 600 && t.stimulusGainDb !== 0 && t.bedDbfs === null,
    );
    for (const t of early) trials.push({ ...t, name: `${t.name} of the second reply`, secondReply: true });
  } else {
    add({
      name: `"wait, stop" + echo + bed ${BED_DBFS} dBFS`,
      class: "double_talk",
      stimulus: interruptions["wait, stop"],
      stimulusGainDb: 0,
      startAfterMs: 800,
      echo: echoPaths[0]!,
      bedDbfs: BED_DBFS,
    });
    add({
      name: `echo + bed ${BED_DBFS} dBFS`,
      class: "echo",
      stimulus: null,
      stimulusGainDb: 0,
      startAfterMs: 600,
      echo: echoPaths[1]!,
      bedDbfs: BED_DBFS,
    });
  }
  return { trials, interruption: interruptions["wait, stop"], backchannels };
}

// ─── the client ──────────────────────────────────────────────────────────────────────────────

export interface ClientEvent {
  type: string;
  at: number;
  [key: string]: unknown;
}

/** Stateful room colouring: a one-pole low-pass and two early reflections (7 and 17 ms). */
class Room {
  #low = 0;
  readonly #history = new Float32Array(1024);
  #at = 0;
  process(x: number): number {
    this.#low += 0.35 * (x - this.#low);
    const h = this.#history;
    h[this.#at] = this.#low;
    const tap = (ms: number) => h[(this.#at - Math.round((RATE * ms) / 1000) + h.length) % h.length]!;
    const y = this.#low + 0.5 * tap(7) + 0.3 * tap(17);
    this.#at = (this.#at + 1) % h.length;
    return y * 0.7;
  }
}

interface Heard {
  at: number;
  pcm: Int16Array;
}

/**
 * A werift caller whose microphone runs on a real 20 ms clock and mixes echo, a stimulus and a
 * noise bed; it records the events and every assistant packet (decoded) with its arrival time.
 */
export class TurnClient extends TestPeer {
  readonly events: ClientEvent[] = [];
  readonly heard: Heard[] = [];
  readonly #decoder = new opus.OpusEncoder(RATE, 1);
  readonly #encoder = createOpusEncoder();
  readonly #frame = new Int16Array(FRAME);
  readonly #room = new Room();
  #timer: NodeJS.Timeout | undefined;
  #origin = 0;
  #ticks = 0;
  #echo: EchoPath | null = null;
  #bed: Int16Array | null = null;
  #stimulus: Int16Array | null = null;
  #stimulusGain = 1;
  #stimulusTick = -1;
  /** When the stimulus's first frame was captured (its tick's time). */
  stimulusAt = NaN;
  #echoIndex = 0;

  constructor() {
    super({ record: false });
    this.channel.onMessage.subscribe((m) => {
      try {
        this.events.push({ ...(JSON.parse(String(m)) as ClientEvent), at: performance.now() });
      } catch {
        this.events.push({ type: "<not json>", at: performance.now() });
      }
    });
    this.transceiver.onTrack.subscribe((track) => {
      track.onReceiveRtp.subscribe((rtp) => {
        // The relay's idle keepalive (a silent frame every 300 ms, also while a reply is held)
        // is not assistant audio: it would end "the reply" late and plays no echo.
        if (isKeepalive(rtp)) return;
        const decoded = this.#decoder.decode(rtp.payload);
        this.heard.push({
          at: performance.now(),
          pcm: new Int16Array(decoded.buffer, decoded.byteOffset, decoded.length / 2).slice(),
        });
      });
    });
  }

  send(event: object): void {
    this.channel.send(JSON.stringify(event));
  }

  async waitEvent(
    type: string,
    predicate: (e: ClientEvent) => boolean = () => true,
    ms = 10_000,
  ): Promise<ClientEvent> {
    const find = () => this.events.find((e) => e.type === type && predicate(e));
    await waitFor(() => find() !== undefined, ms, type);
    return find()!;
  }

  ofType(type: string): ClientEvent[] {
    return this.events.filter((e) => e.type === type);
  }

  /** Starts the microphone: one Opus frame every 20 ms of wall time, in bursts if the timer runs late. */
  startMicrophone(options: { echo?: EchoPath | null; bedDbfs?: number | null } = {}): void {
    this.#echo = options.echo ?? null;
    this.#bed = options.bedDbfs != null ? noiseBed(options.bedDbfs, 10_000) : null;
    // Already running: the RTP clock runs on (a microphone does not restart its timeline).
    if (this.#timer) return;
    this.#origin = performance.now();
    this.#ticks = 0;
    const tick = () => {
      const now = performance.now();
      while (this.#origin + (this.#ticks + 1) * 20 <= now + 1) this.#sendTick();
      this.#timer = setTimeout(tick, Math.max(1, this.#origin + (this.#ticks + 1) * 20 - performance.now()));
    };
    tick();
  }

  /** The stimulus starts at the next tick; returns the wall time its first frame is captured. */
  speak(pcm: Int16Array, gainDb = 0): void {
    this.#stimulus = pcm;
    this.#stimulusGain = 10 ** (gainDb / 20);
    this.#stimulusTick = this.#ticks;
    this.stimulusAt = this.#origin + (this.#ticks + 1) * 20;
  }

  stopMicrophone(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Assistant audio heard so far, ms (20 ms per packet). */
  get heardMs(): number {
    return this.heard.length * 20;
  }

  #sendTick(): void {
    const n = this.#ticks++;
    const capturedAt = this.#origin + (n + 1) * 20;
    const frame = this.#frame;
    frame.fill(0);
    const mix = new Float32Array(FRAME);
    if (this.#echo) {
      // What was playing `delayMs` before this frame's capture: packets play as they arrive.
      const playedAt = capturedAt - this.#echo.delayMs;
      while (this.#echoIndex < this.heard.length && this.heard[this.#echoIndex]!.at <= playedAt - 20)
        this.#echoIndex++;
      const playing = this.heard[this.#echoIndex];
      const gain = 10 ** (this.#echo.gainDb / 20);
      const source = playing && playing.at <= playedAt ? playing.pcm : null;
      if (source) this.#echoIndex++;
      for (let i = 0; i < FRAME; i++) {
        const x = source ? source[i]! * gain : 0;
        mix[i] = this.#echo.room ? this.#room.process(x) : x;
      }
    }
    if (this.#stimulus && this.#stimulusTick >= 0) {
      const offset = (n - this.#stimulusTick) * FRAME;
      if (offset >= 0 && offset < this.#stimulus.length)
        for (let i = 0; i < FRAME && offset + i < this.#stimulus.length; i++)
          mix[i]! += this.#stimulus[offset + i]! * this.#stimulusGain;
    }
    if (this.#bed) {
      const offset = (n * FRAME) % (this.#bed.length - FRAME);
      for (let i = 0; i < FRAME; i++) mix[i]! += this.#bed[offset + i]!;
    }
    for (let i = 0; i < FRAME; i++) frame[i] = Math.max(-32768, Math.min(32767, Math.round(mix[i]!)));
    const payload = this.#encoder.encode(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength));
    this.transceiver.sender.sendRtp(this.rtpPacket(payload)).catch(() => {});
  }

  override async close(): Promise<void> {
    this.stopMicrophone();
    await super.close();
  }
}

// ─── one trial ───────────────────────────────────────────────────────────────────────────────

export interface TrialResult {
  trial: Trial;
  /** The reply stopped for good after the stimulus (the relay cleared it). */
  bargedIn: boolean;
  /** Speech onset → the last assistant packet heard (only when bargedIn). */
  onsetToLastPacketMs: number;
  /** Longest gap between assistant packets after the stimulus began, while the reply went on. */
  longestPauseMs: number;
  /** Assistant audio heard in all, ms. */
  heardMs: number;
}

/**
 * Between a trial's first reply and its second (Trial.secondReply): about a user's turn, when the
 * user would speak and the model answer. Longer than the echo guard's old 3 s memory of a path.
 */
export const SECOND_REPLY_GAP_MS = 3500;

/**
 * Plays one trial on a connected client: asks for a reply, starts the stimulus once
 * `startAfterMs` of it has been heard, and waits for the reply to end (played out or cleared).
 */
export async function playTrial(client: TurnClient, trial: Trial): Promise<TrialResult> {
  client.startMicrophone({ echo: trial.echo, bedDbfs: trial.bedDbfs });
  if (trial.secondReply) {
    client.send({ type: "response.create" });
    await waitFor(
      () => {
        const stopped = client.ofType("output_audio_buffer.stopped").at(-1);
        return stopped !== undefined && performance.now() - stopped.at > SECOND_REPLY_GAP_MS;
      },
      30_000,
      "the first reply to play out",
    );
  }
  const started = client.ofType("output_audio_buffer.started").length;
  const heardBefore = client.heardMs;
  client.send({ type: "response.create" });
  await waitFor(() => client.heardMs - heardBefore >= trial.startAfterMs, 15_000, "the reply to be heard");
  let onsetAt = NaN;
  if (trial.stimulus) {
    client.speak(trial.stimulus, trial.stimulusGainDb);
    onsetAt = client.stimulusAt + trial.onsetMs;
  } else onsetAt = performance.now();
  const from = client.heard.length;
  // The reply is over when it was cleared, or when its playout was last reported stopped (not
  // started again) 400 ms ago. A reply the relay holds while the user talks reports nothing, so
  // it is not over; replies after it (the model answering the user) are not this trial's.
  const replyId = client.ofType("output_audio_buffer.started")[started]?.response_id;
  await waitFor(
    () => {
      if (client.ofType("output_audio_buffer.cleared").length > 0) return true;
      const playout = client.events.filter(
        (e) =>
          (e.type === "output_audio_buffer.started" || e.type === "output_audio_buffer.stopped") &&
          e.response_id === replyId,
      );
      const last = playout.at(-1);
      return last?.type === "output_audio_buffer.stopped" && performance.now() - last.at > 400;
    },
    30_000,
    "the reply to end",
  );
  client.stopMicrophone();
  const bargedIn = client.ofType("output_audio_buffer.cleared").length > 0;
  let longestPauseMs = 0;
  for (let i = Math.max(from, 1); i < client.heard.length; i++)
    longestPauseMs = Math.max(longestPauseMs, client.heard[i]!.at - client.heard[i - 1]!.at);
  return {
    trial,
    bargedIn,
    onsetToLastPacketMs: bargedIn ? (client.heard.at(-1)?.at ?? onsetAt) - onsetAt : NaN,
    longestPauseMs,
    heardMs: client.heardMs - heardBefore,
  };
}

/** Places a TurnClient's call straight on a relay (ticket signed here) and waits for its session. */
export async function connectTurnClient(
  relayUrl: string,
  session: object = {},
  ticket: { secret?: string; relayId?: string } = {},
): Promise<TurnClient> {
  const client = new TurnClient();
  const response = await client.call(relayUrl, session, ticket);
  if (response.status !== 201) {
    await client.close();
    throw new Error(`POST /calls: ${response.status} ${await response.text()}`);
  }
  await client.connected();
  await client.channelOpen();
  await client.waitEvent("session.created");
  return client;
}

/** Ms of assistant audio above -40 dBFS the client heard arrive between `from` and `to` (performance.now()). */
export function voicedHeardMs(client: TurnClient, from: number, to: number): number {
  let voiced = 0;
  for (const h of client.heard) if (h.at >= from && h.at < to && dbfs(h.pcm) > -40) voiced += 20;
  return voiced;
}

/** The last assistant packet heard (its arrival time), or NaN. */
export function lastHeardAt(client: TurnClient): number {
  return client.heard.at(-1)?.at ?? NaN;
}
