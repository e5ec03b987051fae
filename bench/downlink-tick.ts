// The downlink of `calls` calls in one process, driven tick by tick as the relay's pacer drives
// it (each tick, then each downlink's prepare, if it has one): how long one pacer tick takes for
// all calls (the last call's packet waits that long after the first), the CPU per frame sent
// (push, tick and prepare together), and the V8 heap allocated per frame (Buffers' and typed
// arrays' memory outside the heap not included).
// The relay's own Opus encoder at its clean-link setting (loss-adaptive, complexity 5, past its
// first clean reports: CELT). Each call plays a cycle of 300 ticks: a 4 s reply arrives in
// 100 ms deltas, one a tick (5× real time, as a model runs ahead), plays for 200 ticks, then
// 100 ticks of silence; every third reply is flushed 100 ticks in (a barge-in). Calls are
// spread over the cycle.
// `--baseline=DIR` runs DIR's relay/media/downlink.ts too (a worktree of an older commit),
// rounds interleaved. Run with a young generation large enough that the allocation window sees
// no scavenge: `npx node --max-semi-space-size=64 --min-semi-space-size=64 bench/downlink-tick.ts`.
//   [--calls=100] [--seconds=10] [--rounds=3] [--baseline=DIR]
import { resolve } from "node:path";
import { performance, PerformanceObserver } from "node:perf_hooks";
import { getHeapStatistics } from "node:v8";
import { SpeechSynthesizer } from "../agent/tts.ts";
import { FRAME_SAMPLES } from "../relay/media/audio-format.ts";
import type { Downlink as DownlinkClass } from "../relay/media/downlink.ts";
import { LossAdaptiveOpusEncoder } from "../relay/media/loss-adaptive-encoder.ts";
import { percentile, round, table } from "./lib/stats.ts";

const args = process.argv.slice(2);
const arg = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const calls = Number(arg("calls") ?? 100);
const seconds = Number(arg("seconds") ?? 10);
const rounds = Number(arg("rounds") ?? 3);
const baseline = arg("baseline");

const CYCLE = 300;
const DELTA_SAMPLES = 2400; // 100 ms
const FLUSH_AT = 100;
const ALLOC_TICKS = 50;

const reply = await new SpeechSynthesizer().speak(
  "Sure, the next train leaves at ten past four from platform two, in forty minutes, and the one after it at five.",
);
const replySamples = Math.min(reply.length, 200 * FRAME_SAMPLES);
const deltas: Int16Array[] = [];
for (let at = 0; at < replySamples; at += DELTA_SAMPLES) deltas.push(reply.subarray(at, at + DELTA_SAMPLES));

type DownlinkCtor = typeof DownlinkClass;
const variants: { name: string; Downlink: DownlinkCtor }[] = [
  { name: "this tree", Downlink: (await import("../relay/media/downlink.ts")).Downlink },
];
if (baseline) {
  const url = resolve(baseline, "relay/media/downlink.ts");
  variants.unshift({
    name: `baseline (${baseline})`,
    Downlink: ((await import(url)) as { Downlink: DownlinkCtor }).Downlink,
  });
}

let gcs = 0;
new PerformanceObserver((list) => (gcs += list.getEntries().length)).observe({ entryTypes: ["gc"] });

interface Round {
  tickP50Us: number;
  tickP99Us: number;
  tickMaxUs: number;
  cpuUsPerFrame: number;
  bytesPerFrame: number;
}

function run(Downlink: DownlinkCtor): Round {
  const downlinks = Array.from({ length: calls }, () => {
    const encoder = new LossAdaptiveOpusEncoder(5);
    // Three clean receiver reports: the call's steady state on a clean link (CELT only).
    for (let i = 0; i < 3; i++) encoder.onReceiverReport({ fractionLost: 0, now: i * 1000 });
    return new Downlink({
      encoder,
      send: () => {},
      observer: { onPlayoutStarted() {}, onPlayoutStopped() {} },
    });
  });
  const ticks = seconds * 50;
  const spans: number[] = [];
  let framesBefore = 0;
  let allocFrames = 0;
  let allocBytes = 0;
  const cpuStart = process.cpuUsage();
  for (let t = 0; t < ticks; t++) {
    const allocWindow = t >= ticks - ALLOC_TICKS;
    if (t === ticks - ALLOC_TICKS) {
      framesBefore = downlinks.reduce((n, d) => n + d.stats.framesSent, 0);
      gcs = 0;
      allocBytes = -getHeapStatistics().used_heap_size;
    }
    // Audio arriving from the models during the 20 ms before the tick.
    for (let c = 0; c < calls; c++) {
      const phase = (t + Math.floor((c * CYCLE) / calls)) % CYCLE;
      const turn = Math.floor((t + Math.floor((c * CYCLE) / calls)) / CYCLE);
      const item = `item_${c}_${turn}`;
      if (phase < deltas.length) downlinks[c]!.push(item, 0, deltas[phase]!);
      if (phase === FLUSH_AT && turn % 3 === 2) downlinks[c]!.flush();
    }
    const start = performance.now();
    for (const downlink of downlinks) downlink.tick(t);
    spans.push((performance.now() - start) * 1000);
    for (const downlink of downlinks) (downlink as { prepare?: () => void }).prepare?.();
    if (allocWindow && t === ticks - 1) {
      allocBytes += getHeapStatistics().used_heap_size;
      allocFrames = downlinks.reduce((n, d) => n + d.stats.framesSent, 0) - framesBefore;
    }
  }
  const cpu = process.cpuUsage(cpuStart);
  spans.sort((a, b) => a - b);
  const frames = downlinks.reduce((n, d) => n + d.stats.framesSent, 0);
  return {
    tickP50Us: round(percentile(spans, 50), 1),
    tickP99Us: round(percentile(spans, 99), 1),
    tickMaxUs: round(spans.at(-1)!, 1),
    cpuUsPerFrame: round((cpu.user + cpu.system) / frames, 1),
    // A scavenge inside the window would hide what it freed: no figure then.
    bytesPerFrame: gcs === 0 ? round(allocBytes / allocFrames, 0) : NaN,
  };
}

const rows: (string | number)[][] = [];
for (let r = 0; r < rounds; r++) {
  for (const v of variants) {
    const result = run(v.Downlink);
    rows.push([
      r + 1,
      v.name,
      `${result.tickP50Us}/${result.tickP99Us}/${result.tickMaxUs}`,
      result.cpuUsPerFrame,
      result.bytesPerFrame,
    ]);
    process.stderr.write(`round ${r + 1} ${v.name}: ${JSON.stringify(result)}\n`);
  }
}
process.stdout.write(
  `${calls} calls, ${seconds} s a round\n${table([["round", "downlink", "tick p50/p99/max µs", "µs CPU/frame", "heap B/frame"], ...rows])}\n`,
);
