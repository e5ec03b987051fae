// Per-frame Opus cost at 24 kHz, the relay's settings and the alternatives. Usage:
//   npx node bench/opus-codec.ts
import { performance } from "node:perf_hooks";
import { OpusDecoder, OpusEncoder, type OpusApplication } from "../relay/media/opus-codec.ts";

const FRAMES = 2000;
const pcm = new Int16Array(480);
const packet = new Uint8Array(1500);
const out = new Int16Array(2880);
// The relay's encoder is restricted-low-delay at 5, stepping to 4 and 2 under load
// (relay/media/encoder-governor.ts).
for (const [application, complexity] of [
  ["voip", 10],
  ["voip", 5],
  ["restrictedLowDelay", 10],
  ["restrictedLowDelay", 5],
  ["restrictedLowDelay", 4],
  ["restrictedLowDelay", 2],
] as [OpusApplication, number][]) {
  const encoder = new OpusEncoder({ application, complexity, bitrate: 32_000 });
  const decoder = new OpusDecoder();
  let phase = 0;
  let encode = 0;
  let decode = 0;
  for (let i = 0; i < FRAMES; i++) {
    for (let j = 0; j < 480; j++)
      pcm[j] = Math.round(8000 * Math.sin((phase += (2 * Math.PI * 440) / 24_000)));
    let t = performance.now();
    const n = encoder.encode(pcm, packet);
    encode += performance.now() - t;
    t = performance.now();
    decoder.decode(packet.subarray(0, n), out);
    decode += performance.now() - t;
  }
  process.stdout.write(
    `${application} complexity ${complexity}: encode ${((encode / FRAMES) * 1000).toFixed(1)} µs/frame, decode ${((decode / FRAMES) * 1000).toFixed(1)} µs/frame\n`,
  );
}
