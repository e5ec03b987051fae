// The relay's uplink monitor (echo guard + barge-in VAD) on one conversation, in process: CPU
// per 20 ms uplink frame and Silero inferences, so a change to the VAD path can be compared
// without the capacity bench's noise. Production settings: Silero, echo suppression.
// Per call and 8 s cycle: the user speaks (the assistant silent), 0.5 s later the assistant
// replies for 4 s (its audio reported sent 20 ms a frame, a quiet echo of it on the uplink at
// −30 dB, 100 ms late, over a −60 dBFS noise floor); every third cycle the user talks over the
// reply 2 s into it. Frames are fed as a live call's would arrive, `calls` calls per 20 ms tick,
// each inference finishing before the next tick.
// `--bare` does everything but the monitor's work (the harness's own cost, to subtract).
//   npx node bench/uplink-monitor.ts [--calls=20] [--seconds=24] [--bare]
import { SpeechSynthesizer } from "../agent/tts.ts";
import { FRAME_SAMPLES } from "../relay/media/audio-format.ts";
import { SileroModel } from "../relay/barge-in/silero-vad.ts";
import { RelayUplinkMonitor } from "../relay/barge-in/uplink-monitor.ts";
import { round } from "./lib/stats.ts";

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) =>
  Number(args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback);
const calls = arg("calls", 20);
const seconds = arg("seconds", 24);
const bare = args.includes("--bare");

const tts = new SpeechSynthesizer();
const user = await tts.speak("Can you tell me when the next train to the city leaves?");
const reply = await tts.speak(
  "Sure, the next train leaves at ten past four from platform two, in forty minutes.",
);
const model = await SileroModel.load();

/** Deterministic low noise, about −60 dBFS. */
let seed = 1;
const noise = () => ((seed = (Math.imul(seed, 1_664_525) + 1_013_904_223) >>> 0) / 2 ** 32 - 0.5) * 70;

const CYCLE = 400; // frames
const REPLY_FROM = 150;
const REPLY_FRAMES = 200;
const ECHO_DELAY = 5;
const frameAt = (pcm: Int16Array, k: number) =>
  k >= 0 && (k + 1) * FRAME_SAMPLES <= pcm.length
    ? pcm.subarray(k * FRAME_SAMPLES, (k + 1) * FRAME_SAMPLES)
    : null;

interface Call {
  monitor: RelayUplinkMonitor;
  replying: boolean;
  bargedIn: boolean;
  offset: number;
}
let inferences = 0;
let bargeIns = 0;
const counting = {
  detector() {
    const detector = model.detector();
    const probability = detector.probability.bind(detector);
    detector.probability = (chunk: Float32Array) => {
      inferences++;
      return probability(chunk);
    };
    return detector;
  },
} as unknown as SileroModel;

const all: Call[] = [];
for (let c = 0; c < calls; c++) {
  const call: Call = { replying: false, bargedIn: false, offset: (c * 97) % CYCLE } as Call;
  call.monitor = new RelayUplinkMonitor(
    {
      assistantActive: () => call.replying && !call.bargedIn,
      onSpeechStart: () => {},
      onSpeechEnd: () => {},
      onSpeech: () => {
        call.bargedIn = true;
        bargeIns++;
      },
    },
    { silero: counting, echoSuppression: true },
  );
  all.push(call);
}

const uplink = new Int16Array(FRAME_SAMPLES);
let cpuUs = 0;
const frames = seconds * 50;
for (let tick = 0; tick < frames; tick++) {
  const started = process.cpuUsage();
  for (const call of all) {
    const t = tick + call.offset;
    const inCycle = t % CYCLE;
    const cycle = Math.floor(t / CYCLE);
    const replyFrame = inCycle - REPLY_FROM;
    if (replyFrame === 0) {
      call.replying = true;
      call.bargedIn = false;
      call.monitor.onAssistantAudio(`item_${cycle}`, reply.subarray(0, REPLY_FRAMES * FRAME_SAMPLES));
    }
    if (replyFrame === REPLY_FRAMES) call.replying = false;
    const playing = call.replying && !call.bargedIn;
    if (playing && !bare)
      call.monitor.onDownlinkSent({
        itemId: `item_${cycle}`,
        contentIndex: 0,
        samples: FRAME_SAMPLES,
        mediaTimeMs: NaN,
      });
    const speech = frameAt(user, inCycle) ?? (cycle % 3 === 2 ? frameAt(user, replyFrame - 100) : null);
    const echo = playing ? frameAt(reply, replyFrame - ECHO_DELAY) : null;
    for (let i = 0; i < FRAME_SAMPLES; i++)
      uplink[i] = Math.round(noise() + (speech ? speech[i]! : 0) + (echo ? echo[i]! * 0.03 : 0));
    if (!bare) call.monitor.onUplinkFrame(uplink);
  }
  // Let this tick's inferences finish (onnxruntime-node runs them from setImmediate).
  await new Promise((r) => setTimeout(r, 0));
  const used = process.cpuUsage(started);
  cpuUs += used.user + used.system;
}
await model.close();
const uplinkFrames = frames * calls;
process.stdout.write(
  `${bare ? "bare harness, " : ""}${calls} calls × ${seconds} s: ${round(cpuUs / uplinkFrames, 1)} µs CPU per uplink frame, ` +
    `${round(inferences / (seconds * calls), 2)} Silero runs per call-second, ${bargeIns} barge-ins\n`,
);
