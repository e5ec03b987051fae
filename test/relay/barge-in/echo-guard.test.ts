// The echo guard before the echo path is measured (a reply's first second): a clean uplink must
// let the user through at once, an echo must not leak. (Double talk is echo-timing.test.ts's.) Real speech levels (eSpeak), the guard
// driven slot by slot (no clock, no network).
import { beforeAll, describe, expect, it } from "vitest";
import { SpeechSynthesizer } from "../../../agent/tts.ts";
import { FRAME_SAMPLES } from "../../../relay/media/audio-format.ts";
import { EchoGuard, isUserDecision } from "../../../relay/barge-in/echo-guard.ts";
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
}) {
  const guard = new EchoGuard();
  const out: { slot: number; echo: number; user: number; echoOnly: boolean }[] = [];
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
    out.push({ slot: t, echo, user: u, echoOnly: guard.push(t, Math.sqrt(echo * echo + u * u)) });
  }
  return out;
}

describe("echo guard, path not measured yet", () => {
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
