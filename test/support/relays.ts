// The only place tests and benchmarks start a relay: in-process (startRelay, useRelay), as a
// child process (startRelayProcess), or behind an edge under `wrangler dev` (startEdge, then
// startRelayProcess({ edge })). Whatever a test needs of a relay comes from what these return.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, afterEach, beforeAll } from "vitest";
import type { Heartbeat } from "../../protocol/relay-api.ts";
import { AgentServer } from "../../agent/agent-server.ts";
import type { CallBridgeFactory } from "../../relay/bridge.ts";
import type { Call } from "../../relay/call/call.ts";
import { loadConfig, type RelayConfig } from "../../relay/config.ts";
import { createLogger } from "../../relay/log.ts";
import type { EncoderGovernor } from "../../relay/media/encoder-governor.ts";
import type { Pacer } from "../../relay/media/pacer.ts";
import type { RelayMetrics } from "../../relay/metrics.ts";
import { serveRelay } from "../../relay/serve.ts";
import type { TcpFront } from "../../relay/transport/tcp-front.ts";
import type { TcpMux } from "../../relay/transport/tcp-mux.ts";
import type { UdpMux } from "../../relay/transport/udp-mux.ts";
import {
  freePort,
  root,
  startProcess,
  waitUntil,
  type ManagedProcess,
  type ProcessOptions,
} from "./loopback.ts";
import { metricsAuth, TEST_METRICS_TOKEN, TEST_RELAY_ID, TEST_SECRET } from "./relay-api.ts";

let udpBlock = 0;
/** A UDP port range of its own for each relay, so parallel relays never contend for ports. */
export function udpRange(): string {
  const base = 30000 + ((process.pid * 53 + udpBlock++ * 300) % 9000);
  return `${base}-${base + 299}`;
}

/** The environment of a test relay (in-process, HTTP port chosen by the OS, logs silent). */
export function testEnv(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    RELAY_ID: TEST_RELAY_ID,
    RELAY_HTTP_PORT: "0",
    RELAY_MEDIA_IP: "127.0.0.1",
    // A shared port (RELAY_UDP_PORT) replaces the per-call range.
    ...("RELAY_UDP_PORT" in overrides ? {} : { RELAY_UDP_PORTS: udpRange() }),
    EARSHOT_RELAY_SECRET: TEST_SECRET,
    RELAY_METRICS_TOKEN: TEST_METRICS_TOKEN,
    // Tests read a counter right after what moves it: every scrape is rendered afresh.
    RELAY_METRICS_MAX_AGE_SECONDS: "0",
    LOG_LEVEL: "silent",
    ...overrides,
  };
}

export function testConfig(overrides: Record<string, string> = {}): RelayConfig {
  return loadConfig(testEnv(overrides));
}

// ─── in-process ──────────────────────────────────────────────────────────────────────────────

export interface InProcessRelayOptions {
  bridgeFactory?: CallBridgeFactory;
  env?: Record<string, string>;
  /** Collects the relay's log lines (at debug); silent without. */
  logs?: string[];
}

export interface InProcessRelay {
  url: string;
  config: RelayConfig;
  /** The relay's live calls by call id. */
  readonly calls: ReadonlyMap<string, Call>;
  readonly metrics: RelayMetrics;
  readonly pacer: Pacer;
  readonly encoderGovernor: EncoderGovernor;
  /** The shared UDP port's router, with RELAY_UDP_PORT. */
  readonly udpMux: UdpMux | undefined;
  /** ICE-TCP's router and listener, with RELAY_TCP_PORT. */
  readonly tcpMux: TcpMux | undefined;
  readonly tcpFront: TcpFront | undefined;
  heartbeat(): Heartbeat;
  close(): Promise<void>;
}

/** A relay in this process, listening on loopback. */
export async function startRelay(options: InProcessRelayOptions = {}): Promise<InProcessRelay> {
  const config = testConfig(options.env);
  const logs = options.logs;
  const log = logs
    ? createLogger(
        "debug",
        new Writable({
          write(chunk, _enc, done) {
            logs.push(String(chunk));
            done();
          },
        }),
      )
    : createLogger("silent");
  const { relay, port, udpMux, tcpMux, tcpFront, close } = await serveRelay({
    config,
    log,
    bridgeFactory: options.bridgeFactory,
  });
  return {
    url: `http://127.0.0.1:${port}`,
    config,
    calls: relay.calls,
    metrics: relay.metrics,
    pacer: relay.pacer,
    encoderGovernor: relay.encoderGovernor,
    udpMux,
    tcpMux,
    tcpFront,
    heartbeat: () => relay.heartbeat(),
    close,
  };
}

interface Closable {
  close(): Promise<void>;
}

/** Registers an afterEach that closes what the returned `track` was given during the test. */
export function closeAfterEach(): <P extends Closable>(peer: P, ...more: Closable[]) => P {
  const peers: Closable[] = [];
  afterEach(async () => {
    await Promise.all(peers.splice(0).map((p) => p.close()));
  });
  return (peer, ...more) => {
    peers.push(peer, ...more);
    return peer;
  };
}

export interface UsedRelay extends InProcessRelay {
  /** Closes `peer` (and `more`) after the test that made it; returns `peer`. */
  track<P extends Closable>(peer: P, ...more: Closable[]): P;
}

/**
 * One in-process relay for the file (or describe block), started before its tests and closed
 * after them; peers passed to `track` are closed after each test. The relay's fields are read
 * through the returned object, so it can be declared at the top of a file.
 */
export function useRelay(options: InProcessRelayOptions = {}): UsedRelay {
  let relay: InProcessRelay | undefined;
  beforeAll(async () => {
    relay = await startRelay(options);
  });
  afterAll(() => relay?.close());
  const track = closeAfterEach();
  return new Proxy({} as UsedRelay, {
    get(_target, key) {
      if (key === "track") return track;
      if (!relay) throw new Error("the relay starts in beforeAll");
      return Reflect.get(relay, key);
    },
    has: (_target, key) => key === "track" || (relay !== undefined && key in relay),
  });
}

// ─── child processes ─────────────────────────────────────────────────────────────────────────

export interface RelayProcessOptions {
  /** RELAY_ID (random if not given). */
  id?: string;
  region?: string;
  lat?: number;
  lon?: number;
  /** Registers with this edge, with its relay secret. */
  edge?: { url: string; relaySecret: string };
  /** The relay secret without an edge (TEST_SECRET if not given). */
  secret?: string;
  /** The Realtime upstream; without it, an echoing built-in agent in this process. */
  inferenceUrl?: string;
  /** Anything else, over the defaults (RELAY_HTTP_PORT here moves the URL with it). */
  env?: Record<string, string>;
  /**
   * Ready when /healthz answers (the default), or when the log says "relay listening" (for a
   * relay whose /healthz this test cannot fetch, as with its own TLS or a supervisor).
   */
  readyWhen?: "healthz" | "listening";
  /** The relay's entry point (another checkout's, to compare builds); relay/main.ts if not given. */
  main?: string;
  /** How to run the process (taskset, Node flags, a log file). */
  process?: ProcessOptions;
}

export interface RelayProcess extends ManagedProcess {
  id: string;
  url: string;
  /** UDP sockets the process holds right now (from /proc). */
  udpSockets(): number;
  health(): Promise<{ status: string; active_calls: number }>;
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

/** `node relay/main.ts` on loopback; resolves once it is ready. */
export async function startRelayProcess(options: RelayProcessOptions = {}): Promise<RelayProcess> {
  const id = options.id ?? `relay-${randomBytes(3).toString("hex")}`;
  // The relay bridges every call to an upstream; give it the built-in agent unless told otherwise.
  const agent = options.inferenceUrl ? undefined : await AgentServer.start({ port: 0, reply: "echo" });
  const env: Record<string, string> = {
    RELAY_ID: id,
    RELAY_REGION: options.region ?? "local",
    RELAY_LAT: String(options.lat ?? 0),
    RELAY_LON: String(options.lon ?? 0),
    RELAY_MEDIA_IP: "127.0.0.1",
    ...(options.env && "RELAY_UDP_PORT" in options.env ? {} : { RELAY_UDP_PORTS: udpRange() }),
    EARSHOT_RELAY_SECRET: options.edge?.relaySecret ?? options.secret ?? TEST_SECRET,
    INFERENCE_URL: options.inferenceUrl ?? agent!.url,
    RELAY_METRICS_TOKEN: TEST_METRICS_TOKEN,
    RELAY_METRICS_MAX_AGE_SECONDS: "0",
    LOG_LEVEL: "info",
    ...(options.edge ? { EARSHOT_EDGE_URL: options.edge.url } : {}),
    ...options.env,
  };
  env.RELAY_HTTP_PORT ??= String(await freePort());
  const scheme = env.RELAY_TLS_CERT ? "https" : "http";
  const url = `${scheme}://127.0.0.1:${env.RELAY_HTTP_PORT}`;
  env.RELAY_PUBLIC_URL ??= url;
  const proc = startProcess(`relay ${id}`, [options.main ?? "relay/main.ts"], env, options.process);
  void proc.exited.then(() => agent?.close());
  try {
    if (options.readyWhen === "listening") await proc.waitForOutput(/relay listening/, 15_000);
    else
      await Promise.race([
        waitUntil(
          `relay ${id} to answer`,
          async () => {
            const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
            await res.body?.cancel();
            return res.ok || undefined;
          },
          30_000,
        ),
        proc.exited.then((code) => Promise.reject(new Error(`relay ${id} exited with ${code}`))),
      ]);
  } catch (err) {
    await proc.stop("SIGKILL");
    throw new Error(`${(err as Error).message}\n${proc.output()}`);
  }
  return {
    ...proc,
    id,
    url,
    udpSockets: () => udpSocketsOf(proc.pid),
    health: async () =>
      (await (await fetch(`${url}/healthz`)).json()) as { status: string; active_calls: number },
    metric: async (name, labels = {}) =>
      metricValue(await (await fetch(`${url}/metrics`, { headers: metricsAuth })).text(), name, labels),
  };
}

/** A relay process's JSON log lines (pino), parsed. */
export interface LogLine {
  level: number;
  msg: string;
  call_id?: string;
  count?: number;
}

export function logLines(relay: { output(): string }): LogLine[] {
  return relay
    .output()
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as LogLine);
}

/** The sum of a Prometheus sample over all series whose labels include `labels`. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const labelText = match[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) sum += Number(match[3]);
  }
  return sum;
}

/** UDP sockets held by `pid`: its socket fds matched against /proc/net/udp's inodes. */
export function udpSocketsOf(pid: number): number {
  return udpPortsOf(pid).length;
}

/** The local port of each UDP socket `pid` holds (one entry per socket). */
export function udpPortsOf(pid: number): number[] {
  const portByInode = new Map<string, number>();
  for (const file of ["/proc/net/udp", "/proc/net/udp6"]) {
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[9]) portByInode.set(fields[9], parseInt(fields[1]!.split(":").at(-1)!, 16));
    }
  }
  const ports: number[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      const port = inode === undefined ? undefined : portByInode.get(inode);
      if (port !== undefined) ports.push(port);
    } catch {
      // closed while we looked
    }
  }
  return ports;
}

// ─── behind an edge ──────────────────────────────────────────────────────────────────────────

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

/** Tries of an edge whose free port was taken before wrangler bound it (test files run in parallel). */
const EDGE_PORT_TRIES = 3;

/** `wrangler dev` on loopback with fresh Durable Object state; resolves when /healthz answers. */
export async function startEdge(options: EdgeOptions = {}): Promise<Edge> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startEdgeOnce(options.port ?? (await freePort()), options);
    } catch (err) {
      const raced = options.port === undefined && /Address already in use/.test((err as Error).message);
      if (!raced || attempt >= EDGE_PORT_TRIES) throw err;
    }
  }
}

async function startEdgeOnce(port: number, options: EdgeOptions): Promise<Edge> {
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
  // wrangler reports a port taken meanwhile and stays up: no need to wait out the timeout.
  const portTaken = proc.waitForOutput(/Address already in use/, 90_000).then(
    () => Promise.reject(new Error("Address already in use")),
    () => new Promise<never>(() => {}),
  );
  try {
    await Promise.race([
      portTaken,
      waitUntil(
        "the edge to answer",
        async () => {
          const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
          await res.body?.cancel();
          return res.ok || undefined;
        },
        90_000,
        200,
      ),
    ]);
  } catch (err) {
    await edge.stop();
    throw new Error(`${(err as Error).message}\n${proc.output()}`);
  }
  return edge;
}

export interface RelayAtEdge {
  relay_id: string;
  boot_id: string;
  public_url: string;
  region: string;
  usable: boolean;
  unusable_reason: string | null;
  active_calls: number;
  /** When the edge last heard its heartbeat (epoch ms). */
  last_seen_ms: number;
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
