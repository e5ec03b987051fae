// What blocks the relay's event loop: preloaded into the relay with
// `--relay-node-args="--import=./bench/lib/stall-probe.ts"` (bench/capacity.ts). A 5 ms timer
// notices every gap over STALL_MS between its runs; each gap is attributed to the garbage
// collections that ran inside it (PerformanceObserver 'gc' entries), to the main thread's own CPU
// time in it (busy: a synchronous task) and to its time waiting for a core (the kernel's run
// queue, /proc/thread-self/schedstat: descheduled, the machine's other load). On exit it writes
// one JSON line to stderr: stalls by cause, GC pauses by kind, the event loop delay p50/p99/max.
// The relay's log keeps stderr (BENCH_LOG_DIR), so `grep STALLS` finds the summary.
import { monitorEventLoopDelay, performance, PerformanceObserver } from "node:perf_hooks";
import { constants } from "node:perf_hooks";
import { readFileSync } from "node:fs";

const STALL_MS = Number(process.env.STALL_PROBE_MS ?? 20);
const INTERVAL_MS = 5;

interface GcPause {
  kind: number;
  start: number;
  duration: number;
}

const KIND_NAMES: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: "scavenge",
  [constants.NODE_PERFORMANCE_GC_MAJOR]: "mark-compact",
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: "weak-callbacks",
};

const recentGc: GcPause[] = [];
const gcByKind: Record<string, { count: number; totalMs: number; maxMs: number; over10Ms: number }> = {};
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    // A 'gc' entry's detail names its kind (Node's PerformanceEntry type leaves detail out).
    const kind = (entry as { detail?: { kind?: number } }).detail?.kind ?? 0;
    const name = KIND_NAMES[kind] ?? `kind-${kind}`;
    const stats = (gcByKind[name] ??= { count: 0, totalMs: 0, maxMs: 0, over10Ms: 0 });
    stats.count++;
    stats.totalMs += entry.duration;
    stats.maxMs = Math.max(stats.maxMs, entry.duration);
    if (entry.duration > 10) stats.over10Ms++;
    recentGc.push({ kind, start: entry.startTime, duration: entry.duration });
    if (recentGc.length > 256) recentGc.splice(0, 128);
  }
}).observe({ entryTypes: ["gc"] });

const delay = monitorEventLoopDelay({ resolution: 10 });
delay.enable();

interface Stall {
  at: number;
  ms: number;
  gcMs: number;
  /** The main thread's CPU time in the gap. */
  cpuMs: number;
  /** Time the main thread was runnable but waiting for a core. */
  waitMs: number;
}
const stalls: Stall[] = [];

/** ns the main thread has waited on a run queue (schedstat's second field). */
function runQueueWaitNs(): number {
  try {
    return Number(readFileSync("/proc/thread-self/schedstat", "latin1").split(" ")[1]);
  } catch {
    return 0;
  }
}
const threadCpuMs = (): number => {
  const { user, system } = process.threadCpuUsage();
  return (user + system) / 1000;
};

const round1 = (x: number): number => Math.round(x * 10) / 10;
let last = performance.now();
let lastCpu = threadCpuMs();
let lastWait = runQueueWaitNs();
setInterval(() => {
  const now = performance.now();
  const cpu = threadCpuMs();
  const wait = runQueueWaitNs();
  const gap = now - last - INTERVAL_MS;
  if (gap > STALL_MS) {
    let gcMs = 0;
    for (const gc of recentGc) if (gc.start >= last && gc.start < now) gcMs += gc.duration;
    stalls.push({
      at: Math.round(now),
      ms: round1(gap),
      gcMs: round1(gcMs),
      cpuMs: round1(cpu - lastCpu),
      waitMs: round1((wait - lastWait) / 1e6),
    });
  }
  last = now;
  lastCpu = cpu;
  lastWait = wait;
}).unref();

function summary(): void {
  const sum = (pick: (s: Stall) => number): number => Math.round(stalls.reduce((a, s) => a + pick(s), 0));
  const line = {
    stalls: stalls.length,
    /** Stalls whose time was mostly GC, mostly waiting for a core, mostly the thread's own work. */
    mostlyGc: stalls.filter((s) => s.gcMs > s.ms / 2).length,
    mostlyWaiting: stalls.filter((s) => s.waitMs > s.ms / 2).length,
    mostlyBusy: stalls.filter((s) => s.cpuMs > s.ms / 2 && s.gcMs <= s.ms / 2).length,
    stallMs: sum((s) => s.ms),
    stallGcMs: sum((s) => s.gcMs),
    stallWaitMs: sum((s) => s.waitMs),
    stallCpuMs: sum((s) => s.cpuMs),
    worst: [...stalls].sort((a, b) => b.ms - a.ms).slice(0, 10),
    gc: Object.fromEntries(
      Object.entries(gcByKind).map(([k, v]) => [
        k,
        { ...v, totalMs: Math.round(v.totalMs), maxMs: Math.round(v.maxMs * 10) / 10 },
      ]),
    ),
    loopDelayMs: {
      p50: delay.percentile(50) / 1e6,
      p99: delay.percentile(99) / 1e6,
      max: delay.max / 1e6,
    },
  };
  process.stderr.write(`STALLS ${JSON.stringify(line)}\n`);
}
process.on("exit", summary);
// The bench stops the relay with SIGTERM; the relay's own handler exits, which runs 'exit'.
