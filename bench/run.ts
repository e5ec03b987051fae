// `npm run bench`: every benchmark in turn, one table, bench/results/latest.json.
//   npm run bench [-- --quick] [-- --edge]
// Each part also runs alone: bench/setup.ts, bench/barge-in.ts, bench/network.ts, bench/turn-taking.ts,
// bench/capacity.ts, bench/edge.ts, bench/edge-events.ts, bench/sideband.ts, bench/continuity.ts,
// bench/shared-port.ts, bench/shared-port-dispatch.ts, bench/ice-tcp.ts.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { bargeInTable, runBargeIn, type BargeInResult } from "./barge-in.ts";
import { capacityTable, capacityVerdict, runCapacity, type CapacityResult } from "./capacity.ts";
import { continuityTable, runContinuity, type ContinuityResult } from "./continuity.ts";
import { edgeTable, runEdge, type EdgeResult } from "./edge.ts";
import { edgeEventsTable, runEdgeEvents, type EdgeEventsResult } from "./edge-events.ts";
import { iceTcpTable, runIceTcp, type IceTcpResult } from "./ice-tcp.ts";
import { networkTable, runNetwork, type NetworkResult } from "./network.ts";
import { loadAverage, root } from "./lib/procs.ts";
import { table } from "./lib/stats.ts";
import { runSetup, setupTable, type SetupResult } from "./setup.ts";
import { runSharedPort, sharedPortTable, type SharedPortResult } from "./shared-port.ts";
import { runSideband, sidebandTable, type SidebandResult } from "./sideband.ts";
import { runTurnTaking, turnTakingTable, type TurnTakingResult } from "./turn-taking.ts";

const args = process.argv.slice(2);
const quick = args.includes("--quick");
const log = (line: string) => process.stderr.write(`${line}\n`);

function commit(): string {
  try {
    const sha = execFileSync("git", ["rev-parse", "HEAD"], { cwd: root, encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], {
      cwd: root,
      encoding: "utf8",
    }).trim();
    return dirty ? `${sha}+dirty` : sha;
  } catch {
    return "unknown";
  }
}

const version = (pkg: string) =>
  (JSON.parse(readFileSync(join(root, "node_modules", pkg, "package.json"), "utf8")) as { version: string })
    .version;

const started = new Date();
const loadBefore = loadAverage();
log(`bench: ${quick ? "quick" : "full"} run, load ${loadBefore}`);

log("bench: setup…");
const setup: SetupResult = await runSetup({ calls: quick ? 20 : 50, edge: args.includes("--edge") });
log(setupTable(setup));
log("bench: barge-in…");
const bargeIn: BargeInResult = await runBargeIn({ runs: quick ? 3 : 8 });
log(bargeInTable(bargeIn));
// One call per impairment scenario through the UDP impairment proxy, before (RELAY_NETWORK_RESILIENCE=0)
// and after, interleaved (~15 s per call; --quick: clean, 5 % loss, 40 ms jitter, blackout).
log("bench: network (impairment proxy, before/after)…");
const network: NetworkResult = await runNetwork({
  ...(quick ? { only: ["clean", "loss-5", "jitter-40", "blackout-2s"] } : {}),
  log,
});
log(networkTable(network));
// The labelled turn-taking set through a real relay and the built-in agent: production defaults
// against the relay's VAD without echo suppression (--quick: defaults only).
log("bench: turn-taking (labelled set)…");
const turnTaking: TurnTakingResult = await runTurnTaking({
  configs: quick ? ["defaults"] : ["defaults", "vad-only"],
});
log(turnTakingTable(turnTaking));
// Capacity twice: as users run it (Silero, echo suppression, calls taking turns: the headline)
// and the old full-duplex load (VAD off, everyone talking all the time) for comparison.
log("bench: capacity, production defaults and a conversation (relay pinned to core 0)…");
const capacity: CapacityResult = await runCapacity({ quick, log });
log(capacityTable(capacity));
log(capacityVerdict(capacity));
log("bench: capacity, VAD off and everyone talking all the time…");
const capacityStream: CapacityResult = await runCapacity({ quick, log, vad: "off", upstream: "stream" });
log(capacityTable(capacityStream));
// Edge: throughput with 8 requests in flight, then one at a time for the edge's own share of
// setup (offer → answer with nothing queued). Each starts its own wrangler dev (~15 s).
log("bench: edge (wrangler dev, stub relay)…");
const edgeLoaded: EdgeResult = await runEdge({ seconds: quick ? 3 : 5, concurrency: 8 });
log(edgeTable(edgeLoaded));
const edgeAlone: EdgeResult = await runEdge({ seconds: quick ? 3 : 5, concurrency: 1 });
log(edgeTable(edgeAlone));

// Relay → edge call events: 100 calls' events through the relay's EdgeClient and a 100 ms
// delay proxy to a real edge (~30 s with its own wrangler dev).
log("bench: relay → edge events (wrangler dev, 100 ms delay proxy)…");
const edgeEvents: EdgeEventsResult = await runEdgeEvents({ calls: 100, roundTripMs: 100, log });
log(edgeEventsTable(edgeEvents));

// A tool call over the sideband: model → app server and back, straight on a relay and through
// the edge's pass-through (~20 s with its own wrangler dev).
log("bench: sideband (relay process, wrangler dev)…");
const sideband: SidebandResult = await runSideband({ rounds: quick ? 100 : 300, edge: true });
log(sidebandTable(sideband));

// A call outliving its relay (SIGKILL, resumed on another through the edge) and its model
// session (rollovers every 2 s between replies): ~60 s with its own wrangler dev.
log("bench: continuity (wrangler dev, two relays, SIGKILL; rollovers)…");
const continuity: ContinuityResult = await runContinuity({ runs: quick ? 5 : 10, replies: quick ? 8 : 16 });
log(continuityTable(continuity));

// The shared UDP port (RELAY_UDP_PORT) against per-call sockets, interleaved rounds (~1 min).
log("bench: shared UDP port against per-call sockets…");
const sharedPort: SharedPortResult = await runSharedPort({
  calls: 20,
  seconds: quick ? 3 : 5,
  rounds: quick ? 1 : 2,
});
log(sharedPortTable(sharedPort));

// The receive path alone (per-call sockets, one socket, the host port's connected sockets) and
// the host dispatcher's CPU per new flow (~20 s). A script of its own: its IPC sink is a fork.
log("bench: shared-port receive path and the host dispatcher…");
const dispatch = execFileSync(
  process.execPath,
  ["bench/shared-port-dispatch.ts", `--datagrams=${quick ? 20_000 : 50_000}`, "--rounds=3", "--flows=5000"],
  { cwd: root, encoding: "utf8" },
);
log(dispatch);

// ICE-TCP (RELAY_TCP_PORT) against UDP on one relay, batches interleaved (~1 min).
log("bench: ICE-TCP against UDP…");
const iceTcp: IceTcpResult = await runIceTcp({ calls: 20, seconds: quick ? 3 : 5, rounds: quick ? 1 : 2 });
log(iceTcpTable(iceTcp));

const light = capacity.steps[0];
const at = capacity.atCapacity;
const summary = table([
  ["measure", "value", "goal"],
  [
    `setup: ${setup.path === "edge" ? "secret" : "POST"} → answer p50/p99 ms`,
    `${setup.answerMs.p50} / ${setup.answerMs.p99}`,
    "< 20 (offer → answer)",
  ],
  ["setup: answer → ICE connected p50/p99 ms", `${setup.answerToIceMs.p50} / ${setup.answerToIceMs.p99}`, ""],
  [
    "setup: answer → DTLS connected p50/p99 ms",
    `${setup.answerToDtlsMs.p50} / ${setup.answerToDtlsMs.p99}`,
    "< 30",
  ],
  [
    "setup: DTLS → first audio p50/p99 ms",
    `${setup.dtlsToFirstAudioMs.p50} / ${setup.dtlsToFirstAudioMs.p99}`,
    "",
  ],
  [
    `frame work up p50/p99 µs (${light?.calls ?? "?"} calls)`,
    `${light?.uplinkP50Us} / ${light?.uplinkP99Us}`,
    "p99 < 1000",
  ],
  [
    `frame work down p50/p99 µs (${light?.calls ?? "?"} calls)`,
    `${light?.downlinkP50Us} / ${light?.downlinkP99Us}`,
    "p99 < 1000",
  ],
  ["relay CPU per frame, all-in µs", `${light?.cpuUsPerFrame}`, ""],
  [
    "speech_started → last packet p50/max ms",
    `${bargeIn.speechStartedToLastPacketMs.p50} / ${bargeIn.speechStartedToLastPacketMs.max}`,
    "≤ 20",
  ],
  [
    "speech onset → last packet (Silero) p50/max ms",
    `${bargeIn.onsetToLastPacketMs.p50} / ${bargeIn.onsetToLastPacketMs.max}`,
    "< 100",
  ],
  [
    "truncate error p50/max ms",
    `${bargeIn.upstreamTruncateErrorMs.p50} / ${bargeIn.upstreamTruncateErrorMs.max}`,
    "0",
  ],
  ...(["loss-5+jitter-40", "blackout-2s"] as const).flatMap((name) => {
    const row = network.rows.find((r) => r.scenario === name && r.build === "after")?.runs[0];
    if (!row) return [];
    return [
      [
        `network ${name}: speech frames delivered or recovered up / down %`,
        `${row.uplink.deliveredOrRecoveredPercent.toFixed(1)} / ${row.downlink.deliveredOrRecoveredPercent.toFixed(1)}`,
        name === "blackout-2s" ? "" : "≥ 99",
      ],
      ...(name === "blackout-2s"
        ? [
            [
              "network blackout-2s: audio back down / up ms",
              `${row.downlinkResumeMs?.toFixed(0)} / ${row.uplinkResumeMs?.toFixed(0)}`,
              "< 200, call not ended",
            ],
          ]
        : []),
    ];
  }),
  [
    "turn-taking: interruption onset → last packet p50/p95 ms (defaults)",
    `${turnTaking.configs.defaults?.interruption?.onsetToLastPacketMs.p50} / ${turnTaking.configs.defaults?.interruption?.onsetToLastPacketMs.p95}`,
    "p95 < 100",
  ],
  [
    "turn-taking: false barge-ins echo / backchannel / noise (defaults)",
    (["echo", "backchannel", "noise"] as const)
      .map(
        (c) =>
          `${turnTaking.configs.defaults?.[c]?.bargeIns ?? "-"}/${turnTaking.configs.defaults?.[c]?.trials ?? "-"}`,
      )
      .join(" / "),
    "0 / 0 / 0",
  ],
  [`capacity, calls per core (production: vad ${capacity.vad}, conversation)`, capacity.capacity, "≥ 100"],
  ["  CPU-bound estimate (calls × 100 / CPU %)", capacity.cpuBoundEstimate, ""],
  ["  CPU % / RSS MB there", at ? `${at.cpuPct} / ${at.rssMb}` : "-", ""],
  ["memory per call MB", at ? `${at.rssPerCallMb}` : "-", "< 2"],
  [
    `capacity, calls per core (vad ${capacityStream.vad}, all talking all the time)`,
    capacityStream.capacity,
    "",
  ],
  ["  CPU-bound estimate (calls × 100 / CPU %)", capacityStream.cpuBoundEstimate, ""],
  [
    "edge: client secrets/s, calls/s (8 in flight)",
    `${edgeLoaded.secretsPerSecond} / ${edgeLoaded.callsPerSecond}`,
    "",
  ],
  [
    "edge: offer → answer p50/p99 ms (one at a time)",
    `${edgeAlone.callLatencyMs.p50} / ${edgeAlone.callLatencyMs.p99}`,
    "< 20 (with the relay's answer)",
  ],
  [
    `relay → edge connected delay p50/p99/max ms (${edgeEvents.calls} calls, ${edgeEvents.roundTripMs} ms RTT)`,
    `${edgeEvents.connectedDelayMs.p50} / ${edgeEvents.connectedDelayMs.p99} / ${edgeEvents.connectedDelayMs.max}`,
    "< 1000",
  ],
  ...sideband.paths.flatMap((p) => [
    [
      `sideband ${p.path}: function_call_arguments.done → server p50/p99 ms`,
      `${p.modelToServerMs.p50} / ${p.modelToServerMs.p99}`,
      "< 2 beyond the network",
    ],
    [
      `sideband ${p.path}: function_call_output → model p50/p99 ms`,
      `${p.serverToModelMs.p50} / ${p.serverToModelMs.p99}`,
      "< 2 beyond the network",
    ],
  ]),
  [
    `relay → edge ended delay p50/p99/max ms (${edgeEvents.undelivered.ended} not delivered)`,
    `${edgeEvents.endedDelayMs.p50} / ${edgeEvents.endedDelayMs.p99} / ${edgeEvents.endedDelayMs.max}`,
    "< 1000, none lost",
  ],
  [
    `continuity: relay SIGKILL → assistant audio on the next relay p50/p95 ms (${continuity.runs} runs, client detection included)`,
    `${continuity.killToAudioMs.p50} / ${continuity.killToAudioMs.p95}`,
    "p95 < 1500 with detection",
  ],
  [
    `continuity: missing frames across ${continuity.rollovers} model-session rollovers`,
    `${continuity.missingFrames}`,
    "0",
  ],
]);
process.stdout.write(`\n${summary}\n`);

const result = {
  commit: commit(),
  date: started.toISOString(),
  node: process.version,
  werift: version("werift"),
  opus: version("@discordjs/opus"),
  cores: cpus().length,
  cpuModel: cpus()[0]?.model,
  quick,
  load: { before: loadBefore, after: loadAverage() },
  setup,
  bargeIn,
  network,
  turnTaking,
  capacity,
  capacityStream,
  edge: { loaded: edgeLoaded, alone: edgeAlone },
  edgeEvents,
  sideband,
  continuity,
  sharedPort,
  iceTcp,
};
mkdirSync(join(root, "bench/results"), { recursive: true });
writeFileSync(join(root, "bench/results/latest.json"), `${JSON.stringify(result, null, 2)}\n`);
process.stdout.write(`wrote bench/results/latest.json (load ${result.load.before} → ${result.load.after})\n`);
process.exit(0);
