// Child processes for benchmarks: the relay (optionally pinned to a core with taskset), the bench
// upstream, load generators. Started by the test harness (test/support/), owned by the bench and
// stopped by pid (process group).
import { readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { root, startProcess, type ManagedProcess } from "../../test/support/loopback.ts";
import { startRelayProcess } from "../../test/support/relays.ts";
import { BENCH_METRICS_TOKEN } from "./relay-metrics.ts";

export { root };

export type Child = ManagedProcess;

/** Keeps each child's whole output in BENCH_LOG_DIR (the relay's logs, --trace-gc) for reading later. */
function logFile(name: string): ((pid: number) => string) | undefined {
  const dir = process.env.BENCH_LOG_DIR;
  return dir ? (pid) => join(dir, `${basename(name, ".ts")}-${pid}.log`) : undefined;
}

/** Spawns Node (this one) on `args`; `cpu` pins it with `taskset -c`. */
export function startNode(
  args: string[],
  options: { env?: Record<string, string>; cpu?: string; ipc?: boolean; nodeArgs?: string[] } = {},
): Child {
  return startProcess(args[0] ?? "node", args, options.env ?? {}, {
    cpu: options.cpu,
    ipc: options.ipc,
    nodeArgs: options.nodeArgs,
    logFile: logFile(args[0] ?? "node"),
    keepChars: 200_000,
    killAfterMs: 3000,
  });
}

export const BENCH_SECRET = "bench-relay-secret-0123456789";

export interface BenchRelay extends Child {
  url: string;
  relayId: string;
  secret: string;
}

/** `node relay/main.ts` on loopback with the bench upstream as its inference backend. */
export async function startBenchRelay(
  options: { inferenceUrl: string; cpu?: string; env?: Record<string, string>; nodeArgs?: string[] } = {
    inferenceUrl: "",
  },
): Promise<BenchRelay> {
  const relayId = "relay-bench";
  const relay = await startRelayProcess({
    id: relayId,
    secret: BENCH_SECRET,
    inferenceUrl: options.inferenceUrl,
    env: {
      RELAY_UDP_PORTS: "41000-41999",
      RELAY_CAPACITY: "2000",
      LOG_LEVEL: "warn",
      // SIGTERM ends the calls at once, so a --cpu-prof profile is written promptly.
      RELAY_DRAIN_SECONDS: "0",
      // bench/lib/relay-metrics.ts scrapes with this token, every scrape rendered afresh.
      RELAY_METRICS_TOKEN: BENCH_METRICS_TOKEN,
      RELAY_METRICS_MAX_AGE_SECONDS: "0",
      ...options.env,
    },
    process: {
      cpu: options.cpu,
      nodeArgs: options.nodeArgs,
      logFile: logFile("relay/main.ts"),
      keepChars: 200_000,
      killAfterMs: 3000,
    },
  });
  return { ...relay, relayId, secret: BENCH_SECRET };
}

const CLOCK_TICKS = 100; // getconf CLK_TCK on Linux

/** CPU seconds (user + system) a process has used, from /proc. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** Resident set size in MB, from /proc. */
export function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

export function loadAverage(): string {
  return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
}
