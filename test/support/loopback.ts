// The loopback harness's plumbing, shared by the tests and bench/: free ports, child processes
// the caller owns (stopped by process group), and waits with timeouts instead of sleeps.
import { spawn, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { appendFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { performance } from "node:perf_hooks";

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

/** A UDP port free on loopback right now. */
export async function freeUdpPort(): Promise<number> {
  const socket = createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(resolve));
  return port;
}

export interface ManagedProcess {
  name: string;
  proc: ChildProcess;
  pid: number;
  /** Everything the process printed, for assertions and for failure messages. */
  output: () => string;
  /** Resolves with the exit code (null when a signal ended it). */
  exited: Promise<number | null>;
  /** Resolves with the first match of `pattern` in the output; rejects on exit or timeout. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  /** Signals the process group; SIGKILL follows after `killAfterMs` if it has not exited. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface ProcessOptions {
  /** Pins the process to these cores with `taskset -c`. */
  cpu?: string;
  /** Arguments to Node itself (before the script). */
  nodeArgs?: string[];
  /** An IPC channel (fd 3) to the child. */
  ipc?: boolean;
  /** Appends everything the process prints to this file as well. */
  logFile?: (pid: number) => string;
  /** How much output to keep: when it grows past this, the older half is dropped. */
  keepChars?: number;
  /** Grace between stop()'s signal and SIGKILL. */
  killAfterMs?: number;
}

/** Spawns Node (this one) on `args` in its own process group, from the repository root. */
export function startProcess(
  name: string,
  args: string[],
  env: Record<string, string>,
  options: ProcessOptions = {},
): ManagedProcess {
  const node = [process.execPath, ...(options.nodeArgs ?? []), ...args];
  const [cmd, ...rest] = options.cpu ? ["taskset", "-c", options.cpu, ...node] : node;
  const proc = spawn(cmd!, rest, {
    cwd: root,
    env: { ...process.env, FORCE_COLOR: "0", ...env },
    detached: true,
    stdio: options.ipc ? ["ignore", "pipe", "pipe", "ipc"] : ["ignore", "pipe", "pipe"],
  });
  const keep = options.keepChars ?? 1_000_000;
  const logFile = options.logFile?.(proc.pid!);
  let output = "";
  const listeners = new Set<() => void>();
  const append = (chunk: Buffer) => {
    if (logFile) appendFileSync(logFile, chunk);
    output += chunk.toString();
    if (output.length > keep) output = output.slice(-keep / 2);
    for (const l of listeners) l();
  };
  proc.stdout!.on("data", append);
  proc.stderr!.on("data", append);
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  return {
    name,
    proc,
    pid: proc.pid!,
    output: () => output,
    exited,
    waitForOutput(pattern, timeoutMs = 30_000) {
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
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      try {
        process.kill(-proc.pid!, signal);
      } catch {
        return;
      }
      const timer = setTimeout(() => {
        try {
          process.kill(-proc.pid!, "SIGKILL");
        } catch {
          // gone
        }
      }, options.killAfterMs ?? 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Polls an (async) probe until it gives a value other than undefined or false. */
export async function waitUntil<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 30_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`Timed out waiting for ${what}${lastError ? `: ${String(lastError)}` : ""}`);
}

/** Polls a synchronous predicate every `intervalMs` until it holds. */
export async function waitFor(
  predicate: () => boolean,
  timeoutMs: number,
  what: string,
  intervalMs = 10,
): Promise<void> {
  const start = performance.now();
  for (;;) {
    const met: unknown = predicate();
    // An async predicate's promise is truthy: it would pass at once, whatever it resolves to.
    if (met instanceof Promise)
      throw new Error(`waitFor(${what}) takes a synchronous predicate; use waitUntil`);
    if (met) return;
    if (performance.now() - start > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

/** Events recorded with their arrival time, and waits for one (woken on arrival, no polling). */
export class EventLog<E extends { type: string }> {
  readonly events: (E & { at: number })[] = [];
  #waiters = new Set<() => void>();

  push(event: E): void {
    this.events.push({ ...event, at: performance.now() });
    this.wake();
  }

  /** Re-checks the waits (e.g. when the source closes and no event will come). */
  wake(): void {
    for (const wake of this.#waiters) wake();
  }

  ofType(type: string): (E & { at: number })[] {
    return this.events.filter((e) => e.type === type);
  }

  /** The first event of `type` matching, from index `from` on; rejects after `timeoutMs`. */
  waitFor(
    type: string,
    predicate: (e: E) => boolean = () => true,
    { timeoutMs = 10_000, from = 0 }: { timeoutMs?: number; from?: number } = {},
  ): Promise<E & { at: number }> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.events.slice(from).find((e) => e.type === type && predicate(e));
        if (found) {
          cleanup();
          resolve(found);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${type}; got ${this.events.map((e) => e.type).join(", ")}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }
}
