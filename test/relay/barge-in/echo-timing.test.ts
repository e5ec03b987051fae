// Echo suppression on a loaded host, in simulated time: the relay's monitor (real EchoReference,
// EchoGuard, MediaClock) sees the pacer's sends and the client's uplink frames
// at the times a busy event loop would deliver them (late, in bursts after stalls), while the
// audio itself keeps its media timing, as a device's playout and capture do. Real speech (eSpeak)
// is the assistant's voice and the user's.
import { beforeAll, describe, expect, it } from "vitest";
import { SpeechSynthesizer } from "../../../agent/tts.ts";
import { FRAME_SAMPLES } from "../../../relay/media/audio-format.ts";
import { MediaClock } from "../../../relay/barge-in/media-clock.ts";
import { RelayUplinkMonitor } from "../../../relay/barge-in/uplink-monitor.ts";

let reply: Int16Array;
let user: Int16Array;
beforeAll(async () => {
  const tts = new SpeechSynthesizer();
  reply = await tts.speak("Here is the weather for today: sunny in the morning, with some rain later on.");
  user = await tts.speak("Stop, stop, that is not what I asked for at all.");
});

const frameOf = (pcm: Int16Array, k: number) =>
  k >= 0 && (k + 1) * FRAME_SAMPLES <= pcm.length
    ? pcm.subarray(k * FRAME_SAMPLES, (k + 1) * FRAME_SAMPLES)
    : null;
const level = (frame: Int16Array) => Math.sqrt(frame.reduce((s, v) => s + v * v, 0) / frame.length);

/**
 * When a busy event loop runs something due at `due` (ms): a stall of `stallMs` every
 * `periodMs` holds everything due during it until its end, when it all runs at once.
 */
function delivered(due: number, periodMs: number, stallMs: number): number {
  const phase = due % periodMs;
  return phase < stallMs ? due - phase + stallMs : due;
}

interface Scenario {
  /** Loudspeaker-to-uplink delay of the echo, frames (playout, acoustics, capture). */
  echoDelayFrames: number;
  echoGain: number;
  /** User speech added from this uplink frame on (at full level), or -1. */
  userFrom?: number;
  /** Whether the call gives media times (the fix), or only arrival order (the old alignment). */
  mediaTimes: boolean;
  stallPeriodMs: number;
  stallMs: number;
}

/** Runs a reply through the monitor; returns per uplink frame: its level, echo, user, verdict. */
function run(s: Scenario) {
  let now = 0;
  const monitor = new RelayUplinkMonitor(
    { assistantActive: () => false, onSpeechStart: () => {}, onSpeechEnd: () => {}, onSpeech: () => {} },
    { silero: null, echoSuppression: true, vad: false, now: () => now },
  );
  const item = "item_reply";
  monitor.onAssistantAudio(item, reply);
  const replyFrames = Math.floor(reply.length / FRAME_SAMPLES);
  const uplinkFrames = replyFrames + s.echoDelayFrames + 10;
  // Media clocks: the pacer's and the client's, with arbitrary origins; the client's uplink
  // reaches the relay 3 ms after capture at best.
  const start = 1000;
  const downlinkOrigin = 123_456;
  const uplinkOrigin = 987_000;
  type Event = { at: number; order: number; run: () => void };
  const events: Event[] = [];
  for (let k = 0; k < replyFrames; k++) {
    const due = start + k * 20;
    events.push({
      at: delivered(due, s.stallPeriodMs, s.stallMs),
      order: events.length,
      // The downlink's report of each frame; without media times, only its item and samples.
      run: () =>
        monitor.onDownlinkSent({
          itemId: item,
          contentIndex: 0,
          samples: FRAME_SAMPLES,
          mediaTimeMs: s.mediaTimes ? downlinkOrigin + k * 20 : NaN,
        }),
    });
  }
  const frames: { level: number; echo: number; user: number; echoOnly: boolean }[] = [];
  const frame = new Int16Array(FRAME_SAMPLES);
  for (let j = 0; j < uplinkFrames; j++) {
    const captured = start + j * 20 + 3;
    events.push({
      at: delivered(captured, s.stallPeriodMs, s.stallMs),
      order: events.length,
      run: () => {
        const echo = frameOf(reply, j - s.echoDelayFrames);
        const speech = s.userFrom !== undefined && s.userFrom >= 0 ? frameOf(user, j - s.userFrom) : null;
        for (let i = 0; i < FRAME_SAMPLES; i++) {
          frame[i] = Math.round((echo ? echo[i]! * s.echoGain : 0) + (speech ? speech[i]! : 0));
        }
        const echoOnly = monitor.onUplinkFrame(frame, s.mediaTimes ? uplinkOrigin + j * 20 : undefined);
        frames[j] = {
          level: level(frame),
          echo: echo ? level(echo) * s.echoGain : 0,
          user: speech ? level(speech) : 0,
          echoOnly,
        };
      },
    });
  }
  events.sort((a, b) => a.at - b.at || a.order - b.order);
  for (const e of events) {
    now = e.at;
    e.run();
  }
  monitor.close();
  return frames;
}

/** Audible frames that are only echo and still went upstream as sound. */
const leaks = (frames: ReturnType<typeof run>) =>
  frames.filter((f) => f.user === 0 && f.echo > 100 && !f.echoOnly).length;
const audibleEcho = (frames: ReturnType<typeof run>) =>
  frames.filter((f) => f.user === 0 && f.echo > 100).length;

describe("echo suppression aligned on media time", () => {
  // 100 ms stalls every 300 ms: a third of the time the loop is blocked, so the pacer's sends and
  // the uplink frames come five at a time.
  const loaded = { stallPeriodMs: 300, stallMs: 100 };

  it("suppresses every audible echo frame when sends and uplink frames arrive in bursts", () => {
    const frames = run({ echoDelayFrames: 9, echoGain: 0.8, mediaTimes: true, ...loaded });
    expect(audibleEcho(frames)).toBeGreaterThan(100);
    expect(leaks(frames)).toBe(0);
  });

  it("the same bursts, aligned by arrival as before (no media times), leak echo: the case the fix is for", () => {
    const frames = run({ echoDelayFrames: 9, echoGain: 0.8, mediaTimes: false, ...loaded });
    expect(leaks(frames)).toBeGreaterThan(5);
  });

  it("on a quiet host, arrival order and media time agree and nothing leaks", () => {
    const quiet = { stallPeriodMs: 300, stallMs: 0 };
    expect(leaks(run({ echoDelayFrames: 9, echoGain: 0.8, mediaTimes: false, ...quiet }))).toBe(0);
    expect(leaks(run({ echoDelayFrames: 9, echoGain: 0.8, mediaTimes: true, ...quiet }))).toBe(0);
  });

  it("a long echo path (700 ms, past the round trip's bound) is found: only its opening leaks", () => {
    const frames = run({ echoDelayFrames: 35, echoGain: 0.5, mediaTimes: true, ...loaded });
    // Within the bound (echo-guard.ts echoDelayBound) a user talking into a call's first reply
    // is heard at once; an echo beyond it passes for the user until 12 frames of it show the path.
    const audible = frames.filter((f) => f.user === 0 && f.echo > 100);
    expect(audible.length).toBeGreaterThan(100);
    const leaked = audible.map((f, i) => (f.echoOnly ? -1 : i)).filter((i) => i >= 0);
    expect(leaked.filter((i) => i >= 14)).toEqual([]);
  });

  it("the user talking over the echo, in bursts, is heard as often as on a quiet host", () => {
    const userFrom = 60;
    const heard = (stallMs: number) => {
      const frames = run({
        echoDelayFrames: 9,
        echoGain: 0.3,
        userFrom,
        mediaTimes: true,
        stallPeriodMs: 300,
        stallMs,
      });
      // Frames where the user is clearly speaking (6 dB and more over their echo).
      const speaking = frames.filter((f) => f.user > 1000 && f.user > 2 * f.echo);
      expect(speaking.length).toBeGreaterThan(20);
      return speaking.filter((f) => !f.echoOnly).length / speaking.length;
    };
    const quiet = heard(0);
    // Double talk costs some frames (the ECHO_MARGIN trade-off in echo-guard.ts), never most.
    expect(quiet).toBeGreaterThan(0.6);
    expect(heard(100)).toBeGreaterThanOrEqual(quiet);
  });
});

describe("MediaClock", () => {
  it("maps bursty arrivals to media time plus the least transit", () => {
    const clock = new MediaClock();
    const mapped: number[] = [];
    for (let j = 0; j < 500; j++) {
      const arrival = delivered(5000 + j * 20 + 3, 300, 100);
      mapped.push(clock.wallTime(j * 20, arrival) - j * 20);
    }
    // Exact after the first undelayed frame (the first 5 frames came in the first stall).
    expect(new Set(mapped.slice(5))).toEqual(new Set([5003]));
  });

  it("keeps the offset through a 5 s jump in arrival − media time and restarts past it", () => {
    const at = (jump: number) => {
      const clock = new MediaClock();
      for (let j = 0; j < 10; j++) clock.wallTime(j * 20, 100 + j * 20);
      // The next frame arrives `jump` ms later than its media time says it should.
      return clock.wallTime(200, 300 + jump) - 200;
    };
    expect(at(5000)).toBe(100); // a long delay: the frame maps to its undelayed time
    expect(at(5001)).toBe(5101); // a new timeline: the clock starts again from it
  });

  it("follows a lasting change of transit within two windows (4 s), not before one (2 s)", () => {
    const clock = new MediaClock();
    let j = 0;
    const step = (transit: number) => {
      const offset = clock.wallTime(j * 20, j * 20 + transit) - j * 20;
      j++;
      return offset;
    };
    for (let i = 0; i < 100; i++) step(10);
    const after: number[] = [];
    for (let i = 0; i < 250; i++) after.push(step(60));
    expect(after.slice(0, 100).every((o) => o === 10)).toBe(true); // the first 2 s
    expect(after.slice(200).every((o) => o === 60)).toBe(true); // from 4 s on
  });
});
