// The relay's one config, read from the environment and validated once at start-up.
// Names follow DESIGN.md "Configuration and ports"; a bad value stops the process with a
// message naming the variable.
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { z } from "zod";
import { bareOrigin } from "../protocol/relay-api.ts";
import { RELAY_KEY_PATTERN } from "../protocol/relay-key.ts";
import { MAX_PROCESS_INDEX } from "./transport/ufrag.ts";

const PORT_RANGE = /^(\d{1,5})-(\d{1,5})$/;

const portRange = z
  .string()
  .regex(PORT_RANGE, "expected a range like 40000-40999")
  .transform((value, ctx): [number, number] => {
    const [, lo, hi] = PORT_RANGE.exec(value)!;
    const range: [number, number] = [Number(lo), Number(hi)];
    // werift needs min < max, and every port must be a real one.
    if (range[0] < 1024 || range[1] > 65535 || range[0] >= range[1]) {
      ctx.addIssue({ code: "custom", message: "expected 1024 <= min < max <= 65535" });
      return z.NEVER;
    }
    return range;
  });

/** Most relay processes one host runs (RELAY_PROCESSES); well above any core count in use. */
export const MAX_RELAY_PROCESSES = 256;

const processCount = z
  .string()
  .regex(/^(auto|\d{1,3})$/, `expected an integer 1-${MAX_RELAY_PROCESSES} or auto`)
  .transform((value, ctx) => {
    if (value === "auto") return Math.min(availableParallelism(), MAX_RELAY_PROCESSES);
    const count = Number(value);
    if (count < 1 || count > MAX_RELAY_PROCESSES) {
      ctx.addIssue({ code: "custom", message: `expected an integer 1-${MAX_RELAY_PROCESSES} or auto` });
      return z.NEVER;
    }
    return count;
  });

export const RELAY_ID = /^[A-Za-z0-9._-]{1,64}$/;
export const DEFAULT_AGENT_URL = "ws://127.0.0.1:8791/v1/realtime";
const ipv4 = z.ipv4();
const number = (schema: z.ZodNumber) => z.coerce.number().pipe(schema);

const headerMap = z
  .string()
  .transform((text, ctx) => {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      ctx.addIssue({ code: "custom", message: 'must be a JSON object like {"OpenAI-Beta":"…"}' });
      return z.NEVER;
    }
  })
  .pipe(z.record(z.string().regex(/^[A-Za-z0-9-]{1,64}$/), z.string().max(1024)));

/** Environment variables, their defaults and checks. */
export const RelayEnv = z.object({
  RELAY_ID: z.string().regex(RELAY_ID).default("relay-local"),
  RELAY_REGION: z
    .string()
    .regex(/^[a-z0-9-]{1,32}$/)
    .default("local"),
  RELAY_LAT: number(z.number().min(-90).max(90)).default(0),
  RELAY_LON: number(z.number().min(-180).max(180)).default(0),
  /**
   * The relay's HTTP API as the edge reaches it, a bare origin (no path). Default:
   * http://127.0.0.1:<RELAY_HTTP_PORT>.
   */
  RELAY_PUBLIC_URL: z
    .url({ protocol: /^https?$/ })
    .refine((url) => bareOrigin(url) !== undefined, "must be a bare origin: scheme, host and port, no path")
    .optional(),
  RELAY_HTTP_PORT: number(z.number().int().min(0).max(65535)).default(8790),
  /**
   * Bearer token for GET /metrics (`Authorization: Bearer …`), wherever it is served. Unset: the
   * API port does not serve /metrics at all; only RELAY_METRICS_PORT does, with no credentials.
   */
  RELAY_METRICS_TOKEN: z.string().min(16, "must be at least 16 characters").optional(),
  /** A listener of its own for /metrics (and nothing else), on RELAY_METRICS_HOST. Unset: none. */
  RELAY_METRICS_PORT: number(z.number().int().min(0).max(65535)).optional(),
  RELAY_METRICS_HOST: z.string().min(1).default("127.0.0.1"),
  /** A scrape this soon after the last rendering gets the same text: rendering costs the media thread ms. */
  RELAY_METRICS_MAX_AGE_SECONDS: number(z.number().min(0).max(300)).default(5),
  /** PEM certificate chain and key files: with both, the HTTP API is served over HTTPS. */
  RELAY_TLS_CERT: z.string().min(1).optional(),
  RELAY_TLS_KEY: z.string().min(1).optional(),
  /** Address the HTTP API listens on. */
  RELAY_HTTP_HOST: z.string().min(1).default("127.0.0.1"),
  /**
   * Most open connections to the HTTP API. The edge sends a few short requests per call, so
   * 256 is far above its need; at the cap a new connection replaces the oldest idle one.
   */
  RELAY_HTTP_MAX_CONNECTIONS: number(z.number().int().min(1).max(100_000)).default(256),
  /** Address advertised in ICE candidates (host candidates carry it). Unset: the bound address. */
  RELAY_PUBLIC_IP: ipv4.optional(),
  /** Local IPv4 address the media sockets bind to. */
  RELAY_MEDIA_IP: ipv4.default("127.0.0.1"),
  /**
   * One UDP port for every call on this host, routed by ICE ufrag (relay/transport/). With
   * RELAY_PROCESSES > 1 all processes share it: a dispatcher holds the port and each process pins
   * its flows with connected sockets (SO_REUSEPORT). Unset: per-call ports from RELAY_UDP_PORTS.
   */
  RELAY_UDP_PORT: number(z.number().int().min(0).max(65535)).optional(),
  /** Set by the supervisor: RELAY_UDP_PORT is the host's, first packets come from its dispatcher. */
  RELAY_UDP_DISPATCHED: z.enum(["0", "1"]).default("0"),
  /**
   * ICE-TCP (RFC 6544, passive) for clients whose networks block UDP: every answer also carries a
   * `tcptype passive` candidate on this one port (443 in production), routed by ICE ufrag
   * (relay/transport/tcp-front.ts). One port for the host: with RELAY_PROCESSES > 1 the
   * supervisor listens and hands each connection to its process. Unset: no TCP candidate.
   */
  RELAY_TCP_PORT: number(z.number().int().min(0).max(65535)).optional(),
  /** Per-call UDP ports: the fallback mode, kept for one release; RELAY_UDP_PORT replaces it. */
  RELAY_UDP_PORTS: portRange.default([40000, 40999]),
  /** Set by the supervisor (1-based); names the owning process in this relay's ICE ufrags. */
  RELAY_PROCESS_INDEX: number(z.number().int().min(0).max(MAX_PROCESS_INDEX)).default(0),
  /** Most concurrent calls, per relay process (each of RELAY_PROCESSES takes this many). */
  RELAY_CAPACITY: number(z.number().int().min(0).max(100_000)).default(100),
  /**
   * Relay processes on this host, each a complete relay to the edge (`auto`: one per core). One
   * runs in-process; more are forked by a supervisor (relay/supervisor.ts), see relayProcesses().
   */
  RELAY_PROCESSES: processCount.default(1),
  RELAY_DRAIN_SECONDS: number(z.number().min(0).max(86_400)).default(300),
  /** Seconds between heartbeats to the edge. */
  RELAY_HEARTBEAT_SECONDS: number(z.number().positive().max(60)).default(5),
  /**
   * Seconds between per-call stats events to the edge. They are also what tells the edge a
   * connected call's relay is alive, so keep this below the edge's EARSHOT_RELAY_SILENCE_SECONDS.
   */
  RELAY_STATS_SECONDS: number(z.number().positive().max(60)).default(5),
  /** A call that is not connected this long after its answer ends with `never_connected`. */
  RELAY_CONNECT_TIMEOUT_SECONDS: number(z.number().positive().max(300)).default(10),
  /** Answer as ICE-lite (the relay has a public address and never needs to check). */
  RELAY_ICE_LITE: z.enum(["0", "1"]).default("0"),
  /**
   * Downlink Opus complexity: `auto` (5, stepping down to 4 then 2 while the relay's event loop
   * is over 85 % busy, back up under 70 %), or a fixed 0-10.
   */
  RELAY_OPUS_COMPLEXITY: z
    .union([z.literal("auto"), number(z.number().int().min(0).max(10))])
    .default("auto"),
  /** Where heartbeats and call events go. Unset: the relay runs standalone and reports nowhere. */
  EARSHOT_EDGE_URL: z.url({ protocol: /^https?$/ }).optional(),
  /** The deployment's relay secret: the relay derives its own key from it and RELAY_ID. */
  EARSHOT_RELAY_SECRET: z.string().min(16, "must be at least 16 characters").optional(),
  /**
   * This relay's own key (`npm run relay-key -- <RELAY_ID>`), instead of the secret: a host
   * holding only it can speak as this relay and no other.
   */
  EARSHOT_RELAY_KEY: z
    .string()
    .regex(RELAY_KEY_PATTERN, "must be the 43-character key `npm run relay-key` prints")
    .optional(),
  /** The Realtime upstream. Unset: the built-in agent (npm start runs it on 8791). */
  INFERENCE_URL: z.url({ protocol: /^wss?$/ }).default(DEFAULT_AGENT_URL),
  INFERENCE_API_KEY: z.string().min(1).optional(),
  /** Extra upgrade headers as a JSON object (e.g. `OpenAI-Beta`, a gateway's routing header). */
  INFERENCE_HEADERS: headerMap.optional(),
  INFERENCE_CONNECT_TIMEOUT_MS: number(z.number().int().min(100).max(60_000)).default(5000),
  INFERENCE_MAX_RETRIES: number(z.number().int().min(0).max(10)).default(3),
  INFERENCE_RETRY_BASE_MS: number(z.number().int().min(10).max(10_000)).default(250),
  INFERENCE_PING_INTERVAL_MS: number(z.number().int().min(100).max(60_000)).default(5000),
  /**
   * Age of a model session at which the relay rolls the call over to a fresh one (make-before-
   * break, conversation replayed): under OpenAI's 60-minute cap. Seconds.
   */
  RELAY_MODEL_SESSION_MAX_SECONDS: number(z.number().int().min(1).max(86_400)).default(3300),
  /** Most tokens (estimated at 4 characters each) of conversation replayed into a new model session. */
  RELAY_REPLAY_TOKEN_BUDGET: number(z.number().int().min(500).max(100_000)).default(8000),
  /** The relay's own uplink VAD for barge-in: Silero, an energy fallback, or off. */
  RELAY_VAD: z.enum(["silero", "energy", "off"]).default("silero"),
  /** Silence uplink audio that is only the assistant's own echo, so no VAD hears it. */
  RELAY_ECHO_SUPPRESSION: z.enum(["0", "1"]).default("1"),
  /**
   * Speech over the assistant (ms) before the relay's VAD interrupts it. At speech onset the reply
   * is paused; shorter speech (a backchannel, a cough) lets it play on. 0: interrupt at the onset.
   */
  /**
   * Bad-network features (issue 19): the uplink jitter buffer follows measured jitter, and the
   * downlink switches to Opus with in-band FEC when the client reports loss. 0: the fixed 60 ms
   * reorder window and CELT-only downlink of before (for comparison: bench/network.ts).
   */
  RELAY_NETWORK_RESILIENCE: z.enum(["0", "1"]).default("1"),
  /**
   * RFC 2198 redundancy (`audio/red`) for clients that offer it (Chrome): the relay answers red
   * first, takes lost uplink frames from later packets' copies, and while the client reports
   * downlink loss sends this many earlier frames in each packet. 0 (the default for now): not
   * negotiated; see bench/README.md, "RED, NACK/RTX…", for the open question before it is on by
   * default. Needs RELAY_NETWORK_RESILIENCE=1.
   */
  RELAY_RED_DISTANCE: number(z.number().int().min(0).max(2)).default(0),
  RELAY_BARGE_IN_MIN_SPEECH_MS: number(z.number().int().min(0).max(5000)).default(480),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});

export interface RelayConfig {
  relayId: string;
  region: string;
  lat: number;
  lon: number;
  publicUrl: string;
  httpPort: number;
  httpHost: string;
  httpMaxConnections: number;
  metrics: MetricsConfig;
  /** PEM contents read at start-up; set when the API is served over HTTPS. */
  tls: { cert: Buffer; key: Buffer } | undefined;
  publicIp: string | undefined;
  mediaIp: string;
  /** The shared UDP port (RELAY_UDP_PORT); undefined in the per-call fallback mode. */
  udpPort: number | undefined;
  /** This process shares udpPort with its siblings behind the host's dispatcher (supervised). */
  udpDispatched: boolean;
  udpPorts: [number, number];
  /**
   * The ICE-TCP port (RELAY_TCP_PORT), undefined for none. A relay on its own listens on it; one
   * of RELAY_PROCESSES (processIndex > 0) is handed its connections by the supervisor.
   */
  tcpPort: number | undefined;
  /** This process among RELAY_PROCESSES (1-based), 0 for a relay on its own. */
  processIndex: number;
  capacity: number;
  drainSeconds: number;
  heartbeatSeconds: number;
  statsSeconds: number;
  connectTimeoutSeconds: number;
  iceLite: boolean;
  /** `auto`, or a fixed downlink Opus complexity. */
  opusComplexity: "auto" | number;
  edgeUrl: string | undefined;
  /** What the relay's key comes from: the deployment secret (derived at start) or the key itself. */
  credential: RelayCredential;
  inference: InferenceConfig;
  relayVad: "silero" | "energy" | "off";
  echoSuppression: boolean;
  networkResilience: boolean;
  /** Earlier frames per downlink RED packet while the client reports loss; 0: no RED. */
  redDistance: number;
  bargeInMinSpeechMs: number;
  logLevel: string;
  /** With RELAY_PROCESSES > 1, what each relay process is given; empty when the relay runs in-process. */
  processes: RelayProcessSlot[];
}

/** Where and to whom GET /metrics is served. */
export interface MetricsConfig {
  /** Required as `Authorization: Bearer …` when set; unset, the API port refuses /metrics. */
  token: string | undefined;
  /** The metrics-only listener, if any. */
  port: number | undefined;
  host: string;
  maxAgeSeconds: number;
}

export type RelayCredential = { kind: "secret"; secret: string } | { kind: "key"; key: string };

/** The Realtime upstream each call's bridge connects to. */
export interface InferenceConfig {
  url: string;
  /** Sent as `Authorization: Bearer …`; the built-in agent needs none. */
  apiKey: string | undefined;
  headers: Record<string, string>;
  connectTimeoutMs: number;
  /** Reconnect attempts after a retryable failure, before the call ends. */
  maxRetries: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /**
   * How often an open upstream is pinged. An upstream that sends nothing (no pong, no event)
   * for a whole interval after a ping has stalled: the socket is dropped and the retry loop runs.
   */
  pingIntervalMs: number;
  /** A model session this old is replaced by a primed one at the next quiet point (rollover). */
  modelSessionMaxMs: number;
  /** Estimated tokens of conversation a new model session is primed with (conversation-replay.ts). */
  replayTokenBudget: number;
}

/** One of RELAY_PROCESSES relay processes: the variables that differ between them. */
export interface RelayProcessSlot {
  /** 1-based. */
  index: number;
  relayId: string;
  httpPort: number;
  /** RELAY_METRICS_PORT + index - 1, if a metrics port was given. */
  metricsPort: number | undefined;
  /** RELAY_PUBLIC_URL with this process's port, if one was given (else the default follows the port). */
  publicUrl: string | undefined;
  /** RELAY_UDP_PORT, the host's one port (behind the dispatcher); else the slice of RELAY_UDP_PORTS. */
  udpPort: number | undefined;
  udpPorts: [number, number];
}

/** A bad or missing setting: names the variable, as the edge's ConfigError does. */
export class ConfigError extends Error {
  readonly variable: string;

  constructor(variable: string, problem: string) {
    super(`Invalid relay configuration: ${variable}: ${problem}`);
    this.name = "ConfigError";
    this.variable = variable;
  }
}

/** Parses the environment once at start-up; throws a ConfigError naming the first bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): RelayConfig {
  // Empty strings count as unset, as shells and compose files produce them.
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const parsed = RelayEnv.safeParse(present);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(String(issue.path[0]), issue.message);
  }
  const e = parsed.data;
  if (e.RELAY_UDP_PORT !== undefined && present.RELAY_UDP_PORTS !== undefined)
    throw new ConfigError("RELAY_UDP_PORT", "set either it or RELAY_UDP_PORTS (per-call ports), not both");
  const credential = relayCredential(e.EARSHOT_RELAY_SECRET, e.EARSHOT_RELAY_KEY, e.RELAY_PROCESSES);
  const tls = loadTls(e.RELAY_TLS_CERT, e.RELAY_TLS_KEY);
  return {
    relayId: e.RELAY_ID,
    region: e.RELAY_REGION,
    lat: e.RELAY_LAT,
    lon: e.RELAY_LON,
    publicUrl: e.RELAY_PUBLIC_URL ?? `${tls ? "https" : "http"}://127.0.0.1:${e.RELAY_HTTP_PORT}`,
    httpPort: e.RELAY_HTTP_PORT,
    httpHost: e.RELAY_HTTP_HOST,
    httpMaxConnections: e.RELAY_HTTP_MAX_CONNECTIONS,
    metrics: {
      token: e.RELAY_METRICS_TOKEN,
      port: e.RELAY_METRICS_PORT,
      host: e.RELAY_METRICS_HOST,
      maxAgeSeconds: e.RELAY_METRICS_MAX_AGE_SECONDS,
    },
    tls,
    publicIp: e.RELAY_PUBLIC_IP,
    mediaIp: e.RELAY_MEDIA_IP,
    udpPort: e.RELAY_UDP_PORT,
    udpDispatched: e.RELAY_UDP_DISPATCHED === "1",
    udpPorts: e.RELAY_UDP_PORTS,
    tcpPort: e.RELAY_TCP_PORT,
    processIndex: e.RELAY_PROCESS_INDEX,
    capacity: e.RELAY_CAPACITY,
    drainSeconds: e.RELAY_DRAIN_SECONDS,
    heartbeatSeconds: e.RELAY_HEARTBEAT_SECONDS,
    statsSeconds: e.RELAY_STATS_SECONDS,
    connectTimeoutSeconds: e.RELAY_CONNECT_TIMEOUT_SECONDS,
    iceLite: e.RELAY_ICE_LITE === "1",
    opusComplexity: e.RELAY_OPUS_COMPLEXITY,
    edgeUrl: e.EARSHOT_EDGE_URL,
    credential,
    inference: {
      url: e.INFERENCE_URL,
      apiKey: e.INFERENCE_API_KEY,
      headers: e.INFERENCE_HEADERS ?? {},
      connectTimeoutMs: e.INFERENCE_CONNECT_TIMEOUT_MS,
      maxRetries: e.INFERENCE_MAX_RETRIES,
      retryBaseMs: e.INFERENCE_RETRY_BASE_MS,
      retryMaxMs: 4000,
      pingIntervalMs: e.INFERENCE_PING_INTERVAL_MS,
      modelSessionMaxMs: e.RELAY_MODEL_SESSION_MAX_SECONDS * 1000,
      replayTokenBudget: e.RELAY_REPLAY_TOKEN_BUDGET,
    },
    relayVad: e.RELAY_VAD,
    echoSuppression: e.RELAY_ECHO_SUPPRESSION === "1",
    networkResilience: e.RELAY_NETWORK_RESILIENCE === "1",
    redDistance: e.RELAY_NETWORK_RESILIENCE === "1" ? e.RELAY_RED_DISTANCE : 0,
    bargeInMinSpeechMs: e.RELAY_BARGE_IN_MIN_SPEECH_MS,
    logLevel: e.LOG_LEVEL,
    processes:
      e.RELAY_PROCESSES > 1
        ? relayProcesses(e.RELAY_PROCESSES, {
            relayId: e.RELAY_ID,
            httpPort: e.RELAY_HTTP_PORT,
            metricsPort: e.RELAY_METRICS_PORT,
            publicUrl: e.RELAY_PUBLIC_URL,
            udpPort: e.RELAY_UDP_PORT,
            udpPorts: e.RELAY_UDP_PORTS,
            capacity: e.RELAY_CAPACITY,
          })
        : [],
  };
}

/**
 * Lays `count` relays out on one host. Each must look like a separate relay to the edge and to
 * clients: its own id (`<RELAY_ID>-<i>`), HTTP port (RELAY_HTTP_PORT + i - 1, the public URL's
 * port shifted alike). With RELAY_UDP_PORT they all share that one UDP port (the supervisor adds
 * the dispatcher); else each takes a disjoint slice of the UDP range: werift binds one UDP port per
 * call (one host candidate, bundled, rtcp-mux), so a slice must hold RELAY_CAPACITY ports.
 */
export function relayProcesses(
  count: number,
  host: {
    relayId: string;
    httpPort: number;
    metricsPort?: number | undefined;
    publicUrl: string | undefined;
    udpPort?: number | undefined;
    udpPorts: [number, number];
    capacity: number;
  },
): RelayProcessSlot[] {
  const lastId = `${host.relayId}-${count}`;
  if (!RELAY_ID.test(lastId))
    throw new ConfigError(
      "RELAY_ID",
      `${lastId} (for RELAY_PROCESSES=${count}) is longer than 64 characters`,
    );
  if (host.httpPort === 0)
    throw new ConfigError(
      "RELAY_HTTP_PORT",
      "must be a fixed port with RELAY_PROCESSES > 1 (process i listens on it + i - 1)",
    );
  if (host.httpPort + count - 1 > 65535)
    throw new ConfigError("RELAY_HTTP_PORT", `${host.httpPort} + RELAY_PROCESSES=${count} - 1 is past 65535`);
  const metricsPort = host.metricsPort;
  if (metricsPort !== undefined) {
    if (metricsPort === 0)
      throw new ConfigError(
        "RELAY_METRICS_PORT",
        "must be a fixed port with RELAY_PROCESSES > 1 (process i listens on it + i - 1)",
      );
    if (metricsPort + count - 1 > 65535)
      throw new ConfigError(
        "RELAY_METRICS_PORT",
        `${metricsPort} + RELAY_PROCESSES=${count} - 1 is past 65535`,
      );
    if (metricsPort < host.httpPort + count && host.httpPort < metricsPort + count)
      throw new ConfigError(
        "RELAY_METRICS_PORT",
        `${metricsPort}-${metricsPort + count - 1} overlaps the HTTP ports ${host.httpPort}-${host.httpPort + count - 1}`,
      );
  }
  const publicPort = host.publicUrl === undefined ? undefined : explicitPort(host.publicUrl);
  if (host.publicUrl !== undefined && publicPort === undefined)
    throw new ConfigError(
      "RELAY_PUBLIC_URL",
      `needs an explicit port with RELAY_PROCESSES > 1: each process is reached on its own port (that port + i - 1)`,
    );
  if (publicPort !== undefined && publicPort.port + count - 1 > 65535)
    throw new ConfigError(
      "RELAY_PUBLIC_URL",
      `port ${publicPort.port} + RELAY_PROCESSES=${count} - 1 is past 65535`,
    );
  const udpPort = host.udpPort;
  if (udpPort === 0)
    throw new ConfigError(
      "RELAY_UDP_PORT",
      "must be a fixed port with RELAY_PROCESSES > 1 (every process and the dispatcher share it)",
    );
  const [lo, hi] = host.udpPorts;
  const perProcess = Math.floor((hi - lo + 1) / count);
  const needed = Math.max(2, host.capacity);
  if (udpPort === undefined && perProcess < needed)
    throw new ConfigError(
      "RELAY_UDP_PORTS",
      `${lo}-${hi} split across RELAY_PROCESSES=${count} gives ${perProcess} ports per process; each needs ` +
        `${needed} (one per call, RELAY_CAPACITY=${host.capacity}, at least 2). Widen the range to ` +
        `${needed * count} ports or run fewer processes.`,
    );
  return Array.from({ length: count }, (_, i) => {
    const first = lo + i * perProcess;
    return {
      index: i + 1,
      relayId: `${host.relayId}-${i + 1}`,
      httpPort: host.httpPort + i,
      metricsPort: metricsPort === undefined ? undefined : metricsPort + i,
      publicUrl: publicPort && `${publicPort.before}${publicPort.port + i}${publicPort.after}`,
      udpPort,
      udpPorts: [first, first + perProcess - 1],
    };
  });
}

/** The port written in a URL, and the text either side of it. `new URL` would hide a default port (:443). */
function explicitPort(url: string): { before: string; port: number; after: string } | undefined {
  const match = /^(https?:\/\/(?:[^@/?#]*@)?(?:\[[^\]]*\]|[^:/?#]*):)(\d+)(.*)$/s.exec(url);
  return match ? { before: match[1]!, port: Number(match[2]), after: match[3]! } : undefined;
}

/** One of the secret or the relay's own key; the key only for a single relay (it is one id's). */
function relayCredential(
  secret: string | undefined,
  key: string | undefined,
  processes: number,
): RelayCredential {
  if (secret !== undefined && key !== undefined)
    throw new ConfigError("EARSHOT_RELAY_KEY", "set either it or EARSHOT_RELAY_SECRET, not both");
  if (key !== undefined) {
    if (processes > 1)
      throw new ConfigError(
        "EARSHOT_RELAY_KEY",
        "is one relay id's key; with RELAY_PROCESSES > 1 each process is its own relay id (use EARSHOT_RELAY_SECRET, or run each with its own key)",
      );
    return { kind: "key", key };
  }
  if (secret === undefined)
    throw new ConfigError("EARSHOT_RELAY_SECRET", "required (or EARSHOT_RELAY_KEY, this relay's own key)");
  return { kind: "secret", secret };
}

/** Both files or neither; each must be readable PEM. Read once: rotate a certificate by restarting. */
function loadTls(certPath: string | undefined, keyPath: string | undefined): RelayConfig["tls"] {
  if (certPath === undefined && keyPath === undefined) return undefined;
  if (certPath === undefined) throw new ConfigError("RELAY_TLS_CERT", "required with RELAY_TLS_KEY");
  if (keyPath === undefined) throw new ConfigError("RELAY_TLS_KEY", "required with RELAY_TLS_CERT");
  const read = (variable: string, path: string, marker: RegExp): Buffer => {
    let pem: Buffer;
    try {
      pem = readFileSync(path);
    } catch (error) {
      throw new ConfigError(
        variable,
        `cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? "error"})`,
      );
    }
    if (!marker.test(pem.toString("latin1"))) {
      throw new ConfigError(variable, `${path} is not a PEM file of the expected kind`);
    }
    return pem;
  };
  return {
    cert: read("RELAY_TLS_CERT", certPath, /-----BEGIN CERTIFICATE-----/),
    key: read("RELAY_TLS_KEY", keyPath, /-----BEGIN (RSA |EC )?PRIVATE KEY-----/),
  };
}
