// Per-frame Opus cost at 24 kHz, the relay's settings and the alternatives, on speech (eSpeak)
// and, for comparison, a 440 Hz tone. The downlink's clean-link encoder is restricted-low-delay
// at 5, stepping to 4 and 2 under load (relay/media/encoder-governor.ts); the loss-adaptive
// encoder's robust mode, which every call starts in for about 3 s (loss-adaptive-encoder.ts), is
// VOIP with in-band FEC planned for 5 % loss. Measured in the thread's CPU time (not wall time,
// which on a loaded machine counts the time the thread waited for a core), settings in
// interleaved rounds, each figure the median over the rounds. Usage:
//   npx node bench/opus-codec.ts [--rounds=5]
import { SpeechSynthesizer } from "../agent/tts.ts";
import { OpusDecoder, OpusEncoder, type OpusEncoderOptions } from "../relay/media/opus-codec.ts";
import { median, round, table } from "./lib/stats.ts";

const rounds = Number(process.argv.find((a) => a.startsWith("--rounds="))?.slice(9) ?? 5);
const FRAMES = 1000;
const speech = await new SpeechSynthesizer().speak(
  "Sure, the next train leaves at ten past four from platform two, in forty minutes, and the one after it at five.",
);
const tone = new Int16Array(FRAMES * 480);
for (let j = 0; j < tone.length; j++) tone[j] = Math.round(8000 * Math.sin((2 * Math.PI * 440 * j) / 24_000));

const settings: [string, Omit<OpusEncoderOptions, "bitrate">][] = [
  ["voip 10", { application: "voip", complexity: 10 }],
  ["voip 5", { application: "voip", complexity: 5 }],
  ["voip 5 + FEC 5 %", { application: "voip", complexity: 5, inbandFec: true, expectedLossPercent: 5 }],
  ["voip 4 + FEC 5 %", { application: "voip", complexity: 4, inbandFec: true, expectedLossPercent: 5 }],
  ["voip 2 + FEC 5 %", { application: "voip", complexity: 2, inbandFec: true, expectedLossPercent: 5 }],
  ["voip 0 + FEC 5 %", { application: "voip", complexity: 0, inbandFec: true, expectedLossPercent: 5 }],
  ["restricted-low-delay 10", { application: "restrictedLowDelay", complexity: 10 }],
  ["restricted-low-delay 5", { application: "restrictedLowDelay", complexity: 5 }],
  ["restricted-low-delay 4", { application: "restrictedLowDelay", complexity: 4 }],
  ["restricted-low-delay 2", { application: "restrictedLowDelay", complexity: 2 }],
];

const packet = new Uint8Array(1500);
const out = new Int16Array(2880);
const cpuUs = (): number => {
  const { user, system } = process.threadCpuUsage();
  return user + system;
};

/** CPU µs per frame to encode and to decode `pcm` (whole 20 ms frames, FRAMES of them, looped). */
function measure(options: Omit<OpusEncoderOptions, "bitrate">, pcm: Int16Array): [number, number] {
  const encoder = new OpusEncoder({ ...options, bitrate: 32_000 });
  const decoder = new OpusDecoder();
  const frames = Math.floor(pcm.length / 480);
  const packets: Uint8Array[] = [];
  let t = cpuUs();
  for (let i = 0; i < FRAMES; i++) {
    const n = encoder.encode(pcm.subarray((i % frames) * 480, ((i % frames) + 1) * 480), packet);
    packets.push(packet.slice(0, n));
  }
  const encode = cpuUs() - t;
  t = cpuUs();
  for (const p of packets) decoder.decode(p, out);
  const decode = cpuUs() - t;
  return [encode / FRAMES, decode / FRAMES];
}

const results = new Map(
  settings.map(([name]) => [name, { speech: [] as number[], tone: [] as number[], decode: [] as number[] }]),
);
for (let r = 0; r < rounds; r++) {
  for (const [name, options] of settings) {
    const entry = results.get(name)!;
    const [encodeSpeech, decodeSpeech] = measure(options, speech);
    entry.speech.push(encodeSpeech);
    entry.decode.push(decodeSpeech);
    entry.tone.push(measure(options, tone)[0]);
  }
}
process.stdout.write(
  `${table([
    ["encoder", "encode speech µs/frame", "encode tone µs/frame", "decode speech µs/frame"],
    ...settings.map(([name]) => {
      const e = results.get(name)!;
      return [name, round(median(e.speech), 1), round(median(e.tone), 1), round(median(e.decode), 1)];
    }),
  ])}\nmedians of ${rounds} interleaved rounds of ${FRAMES} frames\n`,
);
