// Starts the real parts of Earshot as separate processes on loopback, the way `npm start` does:
// the edge under `wrangler dev` (workerd), relays and the built-in agent as Node processes.
// The test owns every process it starts; stop() ends them all, process groups included.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const root = join(import.meta.dirname, "../..");
const nodeBin = process.execPath;

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

export interface ManagedProcess {
  name: string;
  proc: ChildProcess;
  /** Everything the process printed, for assertions and for failure messages. */
  output: () => string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export function startProcess(name: string, args: string[], env: Record<string, string>): ManagedProcess {
  const proc = spawn(nodeBin, args, {
    cwd: root,
    env: { ...process.env, FORCE_COLOR: "0", ...env },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const append = (chunk: Buffer) => {
    output += chunk.toString();
    if (output.length > 1_000_000) output = output.slice(-500_000);
  };
  proc.stdout!.on("data", append);
  proc.stderr!.on("data", append);
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  return {
    name,
    proc,
    output: () => output,
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
      }, 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

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

async function httpOk(url: string): Promise<true | undefined> {
  const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
  await res.body?.cancel();
  return res.ok ? true : undefined;
}

export interface EdgeOptions {
  apiKey?: string;
  relaySecret?: string;
  /** Vars and secrets, written to the env file wrangler reads (`--env-file`). */
  vars?: Record<string, string>;
  /**
   * Passed as `--var NAME:value`. Needed for optional secrets (EARSHOT_TURN_SECRET): with
   * `[secrets] required` in wrangler.toml, local dev loads only the required names from an
   * env file. (Deployed, `wrangler secret put` binds a secret whatever `required` says.)
   */
  cliVars?: Record<string, string>;
  /** A fixed port, e.g. to start a new edge where a stopped one was. */
  port?: number;
}

export interface Edge extends ManagedProcess {
  url: string;
  port: number;
  apiKey: string;
  relaySecret: string;
  /** Every var the edge got from its env file, so another edge can be started just like it. */
  vars: Record<string, string>;
}

/** `wrangler dev` on loopback with fresh Durable Object state; resolves when /healthz answers. */
export async function startEdge(options: EdgeOptions = {}): Promise<Edge> {
  const port = options.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), "earshot-edge-"));
  const vars: Record<string, string> = {
    EARSHOT_API_KEYS: options.apiKey ?? `sk_e2e_${randomBytes(18).toString("base64url")}`,
    EARSHOT_SIGNING_KEYS: `e2e:${randomBytes(24).toString("base64url")}`,
    EARSHOT_RELAY_SECRET: options.relaySecret ?? randomBytes(24).toString("base64url"),
    EARSHOT_DEV: "1",
    ...options.vars,
  };
  writeFileSync(
    join(dir, "edge.env"),
    Object.entries(vars)
      .map(([k, v]) => `${k}=${v}`)
      .join("\n"),
  );
  const cliVars = Object.entries(options.cliVars ?? {}).flatMap(([k, v]) => ["--var", `${k}:${v}`]);
  const proc = startProcess(
    "edge",
    [
      join(root, "node_modules/wrangler/bin/wrangler.js"),
      "dev",
      "--ip",
      "127.0.0.1",
      "--port",
      String(port),
      "--env-file",
      join(dir, "edge.env"),
      ...cliVars,
      "--persist-to",
      join(dir, "state"),
      "--show-interactive-dev-session=false",
      "--log-level",
      "warn",
    ],
    { WRANGLER_SEND_METRICS: "false", CI: "1" },
  );
  const url = `http://127.0.0.1:${port}`;
  const stop = proc.stop;
  const edge: Edge = {
    ...proc,
    url,
    port,
    apiKey: vars.EARSHOT_API_KEYS!,
    relaySecret: vars.EARSHOT_RELAY_SECRET!,
    vars,
    async stop(signal) {
      await stop(signal);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await waitUntil("the edge to answer", () => httpOk(`${url}/healthz`), 90_000, 200);
  } catch (err) {
    await edge.stop();
    throw new Error(`${(err as Error).message}\n${proc.output()}`);
  }
  return edge;
}

export interface RelayOptions {
  edge?: Edge;
  id?: string;
  region?: string;
  lat?: number;
  lon?: number;
  inferenceUrl?: string;
  env?: Record<string, string>;
}

export interface Relay extends ManagedProcess {
  id: string;
  url: string;
}

export async function startRelay(options: RelayOptions = {}): Promise<Relay> {
  const port = await freePort();
  const id = options.id ?? `relay-${Math.random().toString(36).slice(2, 8)}`;
  const url = `http://127.0.0.1:${port}`;
  const env: Record<string, string> = {
    RELAY_ID: id,
    RELAY_REGION: options.region ?? "local",
    RELAY_LAT: String(options.lat ?? 0),
    RELAY_LON: String(options.lon ?? 0),
    RELAY_HTTP_PORT: String(port),
    RELAY_PUBLIC_URL: url,
    RELAY_PUBLIC_IP: "127.0.0.1",
    EARSHOT_RELAY_SECRET: options.edge?.relaySecret ?? "relay-secret-for-tests-only",
    ...(options.edge ? { EARSHOT_EDGE_URL: options.edge.url } : {}),
    ...(options.inferenceUrl ? { INFERENCE_URL: options.inferenceUrl } : {}),
    ...options.env,
  };
  const proc = startProcess(`relay ${id}`, ["relay/main.ts"], env);
  try {
    await waitUntil(`relay ${id} to answer`, () => httpOk(`${url}/healthz`), 30_000);
  } catch (err) {
    await proc.stop();
    throw new Error(`${(err as Error).message}\n${proc.output()}`);
  }
  return { ...proc, id, url };
}

export interface RelayAtEdge {
  relay_id: string;
  region: string;
  usable: boolean;
  unusable_reason: string | null;
  active_calls: number;
}

/** The edge's registry, as an operator sees it (GET /admin/relays). */
export async function relaysAtEdge(edge: Edge): Promise<RelayAtEdge[]> {
  const res = await fetch(`${edge.url}/admin/relays`, {
    headers: { Authorization: `Bearer ${edge.apiKey}` },
  });
  if (!res.ok) throw new Error(`GET /admin/relays: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { data: RelayAtEdge[] }).data;
}

/** Waits until the edge sees `relayId` as usable (or, with `usable: false`, as not usable). */
export async function waitForRelayAtEdge(edge: Edge, relayId: string, usable = true, timeoutMs = 30_000) {
  return waitUntil(
    `relay ${relayId} to be ${usable ? "usable" : "unusable"} at the edge`,
    async () => {
      const relay = (await relaysAtEdge(edge)).find((r) => r.relay_id === relayId);
      return (relay?.usable ?? false) === usable ? (relay ?? true) : undefined;
    },
    timeoutMs,
    200,
  );
}
