// The echo guard before the echo path is measured (a reply's first second): a clean uplink must
// let the user through at once, an echo must not leak. (Double talk is echo-timing.test.ts's.) Real speech levels (eSpeak), the guard
// driven slot by slot (no clock, no network).
import { beforeAll, describe, expect, it } from "vitest";
import { SpeechSynthesizer } from "../../../agent/tts.ts";
import { FRAME_SAMPLES } from "../../../relay/media/audio-format.ts";
import {
  ECHO_PATH_ALLOWANCE_MS,
  EchoGuard,
  SLOT_MS,
  echoDelayBound,
  isUserDecision,
} from "../../../relay/barge-in/echo-guard.ts";
import { rms } from "../../support/audio.ts";

let reply: number[];
let user: number[];
const levels = (pcm: Int16Array) => {
  const out: number[] = [];
  for (let i = 0; i + FRAME_SAMPLES <= pcm.length; i += FRAME_SAMPLES)
    out.push(rms(pcm, i, i + FRAME_SAMPLES));
  return out;
};
beforeAll(async () => {
  const tts = new SpeechSynthesizer();
  reply = levels(await tts.speak("Hello! I am Earshot's built-in agent. Say something and I will answer."));
  user = levels(await tts.speak("Wait, stop, I have a question."));
});

/**
 * The reply's levels as sent from slot 0, the uplink carrying `echoGain` × the reply `delay`
 * slots later plus the user's speech × `userGain` from slot `userFrom`. Returns, per uplink slot,
 * whether the guard called it echo, with what the frame held.
 */
function run(options: {
  delay: number;
  echoGain: number;
  userFrom: number;
  userGain: number;
  slots: number;
  /** The round trip the client's RTCP reports gave (none: the guard's assumption). */
  roundTripMs?: number;
}) {
  const guard = new EchoGuard();
  if (options.roundTripMs !== undefined) guard.roundTrip(options.roundTripMs);
  const out: { slot: number; echo: number; user: number; echoOnly: boolean; vadHearsUser: boolean }[] = [];
  for (let t = 0; t < options.slots; t++) {
    if (t < reply.length) guard.reference(t, reply[t]!);
    const echo =
      t - options.delay >= 0 && t - options.delay < reply.length
        ? reply[t - options.delay]! * options.echoGain
        : 0;
    const u =
      t >= options.userFrom && t - options.userFrom < user.length
        ? user[t - options.userFrom]! * options.userGain
        : 0;
    // Levels add as powers (uncorrelated signals).
    const echoOnly = guard.push(t, Math.sqrt(echo * echo + u * u));
    out.push({ slot: t, echo, user: u, echoOnly, vadHearsUser: isUserDecision(guard.lastDecision) });
  }
  return Object.assign(out, { guard });
}

describe("echo guard, path not measured yet", () => {
  it("the echo delay's bound is the round trip plus the echo path allowance, at most 800 ms", () => {
    expect(echoDelayBound(0)).toBe(Math.ceil(ECHO_PATH_ALLOWANCE_MS / SLOT_MS));
    expect(echoDelayBound(100)).toBe(Math.ceil((100 + ECHO_PATH_ALLOWANCE_MS) / SLOT_MS));
    expect(echoDelayBound(5000)).toBe(40);
    const guard = new EchoGuard();
    guard.roundTrip(20);
    expect(guard.delayBound).toBe(echoDelayBound(20));
    // A report that makes no sense leaves the bound as it was.
    guard.roundTrip(NaN);
    guard.roundTrip(-5);
    expect(guard.delayBound).toBe(echoDelayBound(20));
  });

  it("a clean uplink: the user talking 0.6 s into a call's FIRST reply (older than every echo delay the round trip allows), 12 dB under it, is heard from the first frame", () => {
    for (const userGain of [1, 0.5, 0.25]) {
      const frames = run({ delay: 0, echoGain: 0, userFrom: 30, userGain, slots: 100, roundTripMs: 20 });
      const speaking = frames.filter((f) => f.user > 200);
      expect(speaking.length).toBeGreaterThan(10);
      expect({ userGain, missed: speaking.filter((f) => f.echoOnly || !f.vadHearsUser).length }).toEqual({
        userGain,
        missed: 0,
      });
      expect(frames.guard.boundExceeded).toBe(false);
    }
    // The witness: over a 200 ms round trip the delays up to 600 ms are candidates, and the
    // reply's opening (600 ms before the user's first words) could be their echo.
    const farther = run({
      delay: 0,
      echoGain: 0,
      userFrom: 30,
      userGain: 0.25,
      slots: 100,
      roundTripMs: 200,
    });
    expect(farther.filter((f) => f.user > 200 && !f.vadHearsUser).length).toBeGreaterThan(0);
  });

  it("an echo at the bound's delay (round trip 0: 460 ms) never leaks; one frame past it, the guard finds it and considers every delay from then on", () => {
    const bound = echoDelayBound(0);
    for (const echoGain of [0.5, 0.1, 0.032]) {
      const at = run({
        delay: bound,
        echoGain,
        userFrom: 10_000,
        userGain: 0,
        slots: reply.length + bound,
        roundTripMs: 0,
      });
      const atLeaks = at.filter((f) => f.echo > 100 && (!f.echoOnly || f.vadHearsUser)).length;
      expect({ echoGain, atLeaks, exceeded: at.guard.boundExceeded }).toEqual({
        echoGain,
        atLeaks: 0,
        exceeded: false,
      });
    }
    for (const delay of [bound + 1, bound + 3, 35, 40])
      for (const echoGain of [0.5, 0.1, 0.032]) {
        const past = run({
          delay,
          echoGain,
          userFrom: 10_000,
          userGain: 0,
          slots: reply.length + delay,
          roundTripMs: 0,
        });
        expect(past.guard.boundExceeded).toBe(true);
        // Only the echo's first frames (its opening, until 12 frames of it show the path) leak.
        const audible = past.filter((f) => f.echo > 100);
        const leaked = audible.map((f, i) => (!f.echoOnly || f.vadHearsUser ? i : -1)).filter((i) => i >= 0);
        expect({ delay, echoGain, late: leaked.filter((i) => i >= 14) }).toEqual({
          delay,
          echoGain,
          late: [],
        });
      }
  });

  it("a clean uplink: the user talking 1 s into the reply (every delay proven echo-free), 12 dB under it, is heard from the first frame", () => {
    const frames = run({ delay: 0, echoGain: 0, userFrom: 50, userGain: 0.25, slots: 100 });
    const speaking = frames.filter((f) => f.user > 200);
    expect(speaking.length).toBeGreaterThan(10);
    // Before issue 20 every one of these was "echo" (quieter than the loudest assistant frame).
    expect(speaking.filter((f) => f.echoOnly)).toEqual([]);
  });

  it("an echo from the reply's first frame (40-300 ms, -6 to -30 dB) never leaks, measured or not", () => {
    for (const delay of [2, 5, 9, 15])
      for (const echoGain of [0.5, 0.25, 0.1, 0.032]) {
        const frames = run({ delay, echoGain, userFrom: 10_000, userGain: 0, slots: reply.length + delay });
        const leaks = frames.filter((f) => f.echo > 100 && !f.echoOnly);
        expect({ delay, echoGain, leaks: leaks.length }).toEqual({ delay, echoGain, leaks: 0 });
      }
  });
});

/**
 * Two replies, 6 s apart: the uplink carries `echoGain` × each reply `delay` slots later, and the
 * user's speech × `userGain` from `userAfter` slots into the SECOND reply. Returns the second
 * reply's frames: what each held, whether it went upstream as silence, and whether the VAD may
 * take it for the user.
 */
function twoReplies(options: { delay: number; echoGain: number; userAfter: number; userGain: number }) {
  const guard = new EchoGuard();
  const second = reply.length + 300;
  const out: { echo: number; user: number; echoOnly: boolean; vadHearsUser: boolean }[] = [];
  for (let t = 0; t < second + reply.length + options.delay; t++) {
    const played = t < reply.length ? t : t >= second && t - second < reply.length ? t - second : -1;
    if (played >= 0) guard.reference(t, reply[played]!);
    const heard = t - options.delay;
    const echoOf = heard < reply.length ? heard : heard - second;
    const echo =
      heard >= 0 && echoOf >= 0 && echoOf < reply.length && (heard < reply.length || heard >= second)
        ? reply[echoOf]! * options.echoGain
        : 0;
    const k = t - second - options.userAfter;
    const u = k >= 0 && k < user.length ? user[k]! * options.userGain : 0;
    const echoOnly = guard.push(t, Math.sqrt(echo * echo + u * u));
    if (t >= second) out.push({ echo, user: u, echoOnly, vadHearsUser: isUserDecision(guard.lastDecision) });
  }
  return out;
}

describe("echo guard, from one reply to the next (the echo path of a call is stable)", () => {
  it("a clean uplink: the user talking 0.4 s into the second reply, 12 dB under it, is heard from the first frame", () => {
    const frames = twoReplies({ delay: 0, echoGain: 0, userAfter: 20, userGain: 0.25 });
    const speaking = frames.filter((f) => f.user > 200);
    expect(speaking.length).toBeGreaterThan(10);
    expect(speaking.filter((f) => f.echoOnly || !f.vadHearsUser)).toEqual([]);
  });

  it("the same user 0.4 s into a call's first reply is not all heard: the reply's opening could be its echo", () => {
    // The witness that the test above depends on the first reply's evidence.
    const frames = run({ delay: 0, echoGain: 0, userFrom: 20, userGain: 0.25, slots: 80 });
    expect(frames.filter((f) => f.user > 200 && f.echoOnly).length).toBeGreaterThan(0);
  });

  it("an echo in both replies (40-300 ms, -6 to -30 dB) never leaks in the second", () => {
    for (const delay of [2, 9, 15])
      for (const echoGain of [0.5, 0.1, 0.032]) {
        const frames = twoReplies({ delay, echoGain, userAfter: 10_000, userGain: 0 });
        const leaks = frames.filter((f) => f.echo > 100 && (!f.echoOnly || f.vadHearsUser));
        expect({ delay, echoGain, leaks: leaks.length }).toEqual({ delay, echoGain, leaks: 0 });
      }
  });
});
