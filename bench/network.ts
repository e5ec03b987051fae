// Earshot on a bad network (issue 19): one call per scenario through the impairment proxy
// (test/support/impairment.ts, both directions), a relay process with production defaults
// (Silero VAD, echo suppression) and a Realtime upstream in this process. Per direction: the
// share of 20 ms speech frames delivered or recovered, concealed frames, the delay the receiver
// adds for jitter (uplink: the relay's jitter buffer, mean; downlink: what a receiver needs for
// 99 % of packets on time), and the envelope score of the received speech against the sent
// (test/support/speech-quality.ts); then barge-in latency (client speech onset → last assistant
// packet received) and the truncate's error against what the client heard. Each scenario runs
// "before" (RELAY_NETWORK_RESILIENCE=0: the fixed 60 ms reorder window, CELT-only downlink) and
// "after" (the default, a client that does not offer RED), interleaved, same seed; and with
// `--builds`, "red-1"/"red-2": a client that offers audio/red and sends 1 or 2 earlier frames a
// packet, the relay at RELAY_RED_DISTANCE=1 or 2 (the default builds: before, after, red-2).
// `--barge-ins=N` interrupts N replies per call, for barge-in p50/p95 per scenario.
//   npx node bench/network.ts [--only=clean,loss-5] [--runs=1] [--builds=before,after,red-1,red-2]
//     [--barge-ins=1]
import { SpeechSynthesizer } from "../agent/tts.ts";
import { burstyLoss, type ImpairmentProfile } from "../test/support/impairment.ts";
import { NetworkModel, runNetworkCall, type NetworkCallResult } from "../test/support/network-call.ts";
import { BENCH_METRICS_TOKEN } from "./lib/relay-metrics.ts";
import { loadAverage, startBenchRelay } from "./lib/procs.ts";
import { median, percentile, round, table } from "./lib/stats.ts";

export interface NetworkScenario {
  name: string;
  profile: ImpairmentProfile;
  blackoutMs?: number;
}

export const NETWORK_SCENARIOS: NetworkScenario[] = [
  { name: "clean", profile: {} },
  { name: "loss-2", profile: { loss: 0.02 } },
  { name: "loss-5", profile: { loss: 0.05 } },
  { name: "loss-10", profile: { loss: 0.1 } },
  { name: "bursty-5", profile: { burst: burstyLoss(0.05, 3) } },
  { name: "jitter-40", profile: { jitterMs: 40 } },
  { name: "jitter-80", profile: { jitterMs: 80 } },
  { name: "loss-5+jitter-40", profile: { loss: 0.05, jitterMs: 40 } },
  { name: "blackout-2s", profile: {}, blackoutMs: 2000 },
];

/** What runs: the relay's bad-network features on or off, and the RED distance each way. */
export interface NetworkBuild {
  name: string;
  resilience: boolean;
  /** RELAY_RED_DISTANCE and the client's own distance; undefined: the client offers no RED. */
  red?: number;
}

export const NETWORK_BUILDS: NetworkBuild[] = [
  { name: "before", resilience: false },
  { name: "after", resilience: true },
  { name: "red-1", resilience: true, red: 1 },
  { name: "red-2", resilience: true, red: 2 },
];
const DEFAULT_BUILDS = ["before", "after", "red-2"];

export interface NetworkRow {
  scenario: string;
  build: string;
  runs: NetworkCallResult[];
}

export interface NetworkResult {
  rows: NetworkRow[];
  load: string;
}

export async function runNetwork(
  options: {
    only?: string[];
    runs?: number;
    builds?: string[];
    /** Interruptions per call (phase 3), for barge-in p50/p95 per scenario. */
    bargeIns?: number;
    log?: (line: string) => void;
  } = {},
): Promise<NetworkResult> {
  const tts = new SpeechSynthesizer();
  const reply = await tts.speak(
    "Sure. The train leaves at seven fifteen from platform two, and it takes about an hour.",
  );
  const speech = await tts.speak("I would like to book a table for four people on Friday evening, please.");
  const interruption = await tts.speak("Wait, stop, I have a question about that.");
  const scenarios = NETWORK_SCENARIOS.filter((s) => !options.only || options.only.includes(s.name));
  const rows: NetworkRow[] = [];
  const builds = NETWORK_BUILDS.filter((b) => (options.builds ?? DEFAULT_BUILDS).includes(b.name));
  for (const scenario of scenarios) {
    for (const build of builds) {
      const row: NetworkRow = { scenario: scenario.name, build: build.name, runs: [] };
      for (let run = 0; run < (options.runs ?? 1); run++) {
        const model = await NetworkModel.start();
        const relay = await startBenchRelay({
          inferenceUrl: model.url,
          env: {
            RELAY_NETWORK_RESILIENCE: build.resilience ? "1" : "0",
            ...(build.red !== undefined && { RELAY_RED_DISTANCE: String(build.red) }),
            RELAY_STATS_SECONDS: "1",
            RELAY_UDP_PORTS: `${43000 + (process.pid % 50) * 20}-${43000 + (process.pid % 50) * 20 + 19}`,
          },
        });
        try {
          const result = await runNetworkCall({
            relay: {
              ...relay,
              metrics: async () =>
                (
                  await fetch(`${relay.url}/metrics`, {
                    headers: { authorization: `Bearer ${BENCH_METRICS_TOKEN}` },
                  })
                ).text(),
            },
            model,
            profile: scenario.profile,
            seed: 1000 + run,
            ...(scenario.blackoutMs ? { blackoutMs: scenario.blackoutMs } : {}),
            ...(build.red !== undefined && { red: build.red }),
            ...(options.bargeIns && { bargeIns: options.bargeIns }),
            reply,
            speech,
            interruption,
          });
          row.runs.push(result);
          options.log?.(`network: ${scenario.name} ${build.name}: ${JSON.stringify(result)}`);
        } finally {
          await relay.stop();
          await model.close();
        }
      }
      rows.push(row);
    }
  }
  return { rows, load: loadAverage() };
}

const med = (values: number[], digits = 1) => {
  const finite = values.filter(Number.isFinite);
  return finite.length ? round(median(finite), digits) : "–";
};

/** One trial: its latency; several: p50/p95 over those that barged in, and how many did of how many. */
function bargeInCell(trials: number[]): string | number {
  if (trials.length <= 1) return med(trials);
  const ok = trials.filter(Number.isFinite).sort((a, b) => a - b);
  if (ok.length === 0) return `– (0/${trials.length})`;
  return `${round(percentile(ok, 50), 0)}/${round(percentile(ok, 95), 0)} (${ok.length}/${trials.length})`;
}

export function networkTable(result: NetworkResult): string {
  const lines: (string | number)[][] = [
    [
      "scenario",
      "build",
      "up: ok %",
      "up: RED/FEC/PLC",
      "up: jb ms",
      "up: score",
      "down: ok %",
      "down: RED/FEC/PLC",
      "down: jitter ms",
      "down: B/pkt",
      "down: score",
      "barge-in ms (p50/p95 n)",
      "truncate err ms",
      "resume ms (down/up)",
    ],
  ];
  for (const row of result.rows) {
    const r = row.runs;
    const sum = (f: (x: NetworkCallResult) => number) => r.reduce((a, x) => a + f(x), 0);
    lines.push([
      row.scenario,
      row.build,
      med(r.map((x) => x.uplink.deliveredOrRecoveredPercent)),
      `${sum((x) => x.uplink.redRecovered)}/${sum((x) => x.uplink.recovered)}/${sum((x) => x.uplink.concealed)}`,
      med(r.map((x) => x.uplink.addedDelayMs)),
      med(
        r.map((x) => x.uplink.quality),
        3,
      ),
      med(r.map((x) => x.downlink.deliveredOrRecoveredPercent)),
      `${sum((x) => x.downlink.redRecovered)}/${sum((x) => x.downlink.recovered)}/${sum((x) => x.downlink.concealed)}`,
      med(r.map((x) => x.downlink.addedDelayMs)),
      med(
        r.map((x) => x.downlink.payloadBytes ?? NaN),
        0,
      ),
      med(
        r.map((x) => x.downlink.quality),
        3,
      ),
      bargeInCell(r.flatMap((x) => x.bargeInTrialsMs)),
      med(r.map((x) => x.truncateErrorMs)),
      r[0]?.downlinkResumeMs === undefined
        ? ""
        : `${med(r.map((x) => x.downlinkResumeMs!))}/${med(r.map((x) => x.uplinkResumeMs!))}${r.every((x) => x.survived) ? "" : " ENDED"}`,
    ]);
  }
  return table(lines);
}

if (import.meta.main) {
  const only = process.argv
    .find((a) => a.startsWith("--only="))
    ?.slice(7)
    .split(",");
  const runs = Number(process.argv.find((a) => a.startsWith("--runs="))?.slice(7) ?? 1);
  const builds = process.argv
    .find((a) => a.startsWith("--builds="))
    ?.slice(9)
    .split(",");
  const bargeIns = Number(process.argv.find((a) => a.startsWith("--barge-ins="))?.slice(12) ?? 1);
  const result = await runNetwork({
    ...(only ? { only } : {}),
    bargeIns,
    ...(builds ? { builds } : {}),
    runs,
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(`${networkTable(result)}\nload ${result.load}\n`);
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
}
