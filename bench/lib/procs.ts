// Child processes for benchmarks: the relay (optionally pinned to a core with taskset), the bench
// upstream, load generators. Each is owned by the bench and stopped by pid (process group).
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { basename, join } from "node:path";
import { BENCH_METRICS_TOKEN } from "./relay-metrics.ts";

export const root = join(import.meta.dirname, "../..");

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface Child {
  proc: ChildProcess;
  pid: number;
  output: () => string;
  /** Resolves with the first stdout line matching `pattern`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  stop(): Promise<void>;
}

/** Spawns Node (this one) on `args`; `cpu` pins it with `taskset -c`. */
export function startNode(
  args: string[],
  options: { env?: Record<string, string>; cpu?: string; ipc?: boolean; nodeArgs?: string[] } = {},
): Child {
  const node = [process.execPath, ...(options.nodeArgs ?? []), ...args];
  const [cmd, ...rest] = options.cpu ? ["taskset", "-c", options.cpu, ...node] : node;
  const proc = spawn(cmd!, rest, {
    cwd: root,
    env: { ...process.env, FORCE_COLOR: "0", ...options.env },
    detached: true,
    stdio: options.ipc ? ["ignore", "pipe", "pipe", "ipc"] : ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const listeners = new Set<() => void>();
  // BENCH_LOG_DIR keeps each child's whole output (the relay's logs, --trace-gc) for reading later.
  const logFile = process.env.BENCH_LOG_DIR
    ? join(process.env.BENCH_LOG_DIR, `${basename(args[0] ?? "node", ".ts")}-${proc.pid}.log`)
    : undefined;
  const append = (chunk: Buffer) => {
    if (logFile) appendFileSync(logFile, chunk);
    output += chunk.toString();
    if (output.length > 200_000) output = output.slice(-100_000);
    for (const l of listeners) l();
  };
  proc.stdout!.on("data", append);
  proc.stderr!.on("data", append);
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  return {
    proc,
    pid: proc.pid!,
    output: () => output,
    waitFor(pattern, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = pattern.exec(output);
          if (match) {
            clearTimeout(timer);
            listeners.delete(check);
            resolve(match);
          }
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`timed out waiting for ${pattern}:\n${output.slice(-2000)}`));
        }, timeoutMs);
        listeners.add(check);
        void exited.then(() => {
          clearTimeout(timer);
          reject(new Error(`process exited waiting for ${pattern}:\n${output.slice(-2000)}`));
        });
        check();
      });
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      try {
        process.kill(-proc.pid!, "SIGTERM");
      } catch {
        return;
      }
      const timer = setTimeout(() => {
        try {
          process.kill(-proc.pid!, "SIGKILL");
        } catch {
          // already gone
        }
      }, 3000);
      await exited;
      clearTimeout(timer);
    },
  };
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
  const port = await freePort();
  const relayId = "relay-bench";
  const child = startNode(["relay/main.ts"], {
    cpu: options.cpu,
    nodeArgs: options.nodeArgs,
    env: {
      RELAY_ID: relayId,
      RELAY_HTTP_PORT: String(port),
      RELAY_MEDIA_IP: "127.0.0.1",
      RELAY_UDP_PORTS: "41000-41999",
      RELAY_CAPACITY: "2000",
      EARSHOT_RELAY_SECRET: BENCH_SECRET,
      INFERENCE_URL: options.inferenceUrl,
      LOG_LEVEL: "warn",
      // Every scrape rendered afresh: the bench reads counters at step boundaries.
      RELAY_METRICS_TOKEN: BENCH_METRICS_TOKEN,
      RELAY_METRICS_MAX_AGE_SECONDS: "0",
      // SIGTERM ends the calls at once, so a --cpu-prof profile is written promptly.
      RELAY_DRAIN_SECONDS: "0",
      ...options.env,
    },
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline || child.proc.exitCode !== null) {
      await child.stop();
      throw new Error(`relay did not start:\n${child.output()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { ...child, url, relayId, secret: BENCH_SECRET };
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
