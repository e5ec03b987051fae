// The edge's one config type, resolved from the Worker's bindings once per isolate (per env
// object) and validated with documented defaults. A bad value fails every request with a 500
// and a log line naming the variable, rather than running half-configured.
import {
  DEFAULT_TURN_TTL_SECONDS,
  MAX_TURN_TTL_SECONDS,
  MIN_TURN_SECRET_LENGTH,
  MIN_TURN_TTL_SECONDS,
  turnUrlProblem,
  type TurnConfig,
} from "./turn.ts";

export interface RateLimit {
  /** Requests allowed in a burst, refilled evenly over `periodSeconds`. */
  requests: number;
  periodSeconds: number;
}

export interface SigningKey {
  kid: string;
  secret: Uint8Array<ArrayBuffer>;
}

export interface EdgeConfig {
  /**
   * EARSHOT_DEV=1: dev-only routes, the geo override header, plain-http relay URLs, and only
   * loopback Host names (plus allowedHosts). It also means "not on Cloudflare", so
   * CF-Connecting-IP is not trusted (client-ip.ts).
   */
  dev: boolean;
  /** EARSHOT_ALLOWED_HOSTS, default none: host names a dev edge answers besides loopback ones. */
  allowedHosts: ReadonlySet<string>;
  /** EARSHOT_API_KEYS (secret): server API keys. Never logged. */
  apiKeys: readonly string[];
  /** EARSHOT_SIGNING_KEYS (secret): the first signs client secrets, all verify. */
  signingKeys: readonly SigningKey[];
  /** EARSHOT_RELAY_SECRET (secret): HMAC key for tickets, heartbeats and relay events. */
  relaySecret: string;
  /** EARSHOT_MAX_CALLS_PER_SECRET, default 10: calls one client secret may start; 0 = no cap. */
  maxCallsPerSecret: number;
  /** EARSHOT_RELAY_TIMEOUT_MS, default 10000: how long the edge waits for a relay's answer. */
  relayTimeoutMs: number;
  /** EARSHOT_CONNECT_TIMEOUT_SECONDS, default 10: a call that never connects fails then. */
  connectTimeoutSeconds: number;
  /** EARSHOT_MAX_UNCONNECTED_PER_SECRET, default 3: placed and not yet connected, per secret; 0 = no cap. */
  maxUnconnectedPerSecret: number;
  /** EARSHOT_MAX_UNCONNECTED_PER_IP, default 10: offers per client IP per connect timeout; 0 = no cap. */
  maxUnconnectedPerIp: number;
  /** EARSHOT_RELAY_SILENCE_SECONDS, default 15: a connected call whose relay is silent this long fails. */
  relaySilenceSeconds: number;
  /** EARSHOT_MAX_CALL_SECONDS, default 3600: the longest a call may last. */
  maxCallSeconds: number;
  /** EARSHOT_CALL_RETENTION_SECONDS, default 86400: how long an ended call keeps its live details (SDP answer, relay nonces). */
  callRetentionSeconds: number;
  /**
   * EARSHOT_CALL_RECORD_DAYS, default 30: how long a call's record (times, end, usage, setup)
   * and its conversation log are kept after it ends, here and in GET /admin/calls.
   */
  callRecordDays: number;
  /** EARSHOT_REGISTRY_CACHE_SECONDS, default 3: how often an isolate re-reads the relay registry. */
  registryCacheSeconds: number;
  /** EARSHOT_LOAD_PENALTY_KM, default 2000: distance added to a relay's score when it is full. */
  loadPenaltyKm: number;
  /** EARSHOT_CORS_ORIGINS, default "*": origins allowed to use the calls endpoints. */
  corsOrigins: "*" | ReadonlySet<string>;
  /** EARSHOT_RATE_LIMIT_API_KEY, default "600/60": requests per seconds, per API key. */
  apiKeyRateLimit: RateLimit;
  /** EARSHOT_RATE_LIMIT_IP, default "120/60": requests per seconds, per client IP. */
  ipRateLimit: RateLimit;
  /** EARSHOT_TURN_URLS + EARSHOT_TURN_SECRET (+ EARSHOT_TURN_TTL_SECONDS): unset means no TURN. */
  turn: TurnConfig | undefined;
}

export class ConfigError extends Error {
  readonly variable: string;

  constructor(variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = "ConfigError";
    this.variable = variable;
  }
}

const resolved = new WeakMap<object, EdgeConfig>();

export function edgeConfig(env: Env): EdgeConfig {
  let config = resolved.get(env);
  if (!config) {
    config = resolveConfig(env as unknown as Record<string, unknown>);
    resolved.set(env, config);
  }
  return config;
}

export function resolveConfig(vars: Record<string, unknown>): EdgeConfig {
  const text = (name: string): string | undefined => {
    const value = vars[name];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "string") throw new ConfigError(name, "must be a string");
    const trimmed = value.trim();
    return trimmed === "" ? undefined : trimmed;
  };
  const required = (name: string): string => {
    const value = text(name);
    if (value === undefined)
      throw new ConfigError(name, "is required (set it with `wrangler secret put` or .dev.vars)");
    return value;
  };
  const int = (name: string, fallback: number, min: number, max: number): number => {
    const value = text(name);
    if (value === undefined) return fallback;
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new ConfigError(name, `must be an integer from ${min} to ${max}, not "${value}"`);
    }
    return n;
  };
  const flag = (name: string): boolean => {
    const value = text(name) ?? "0";
    if (value !== "0" && value !== "1") throw new ConfigError(name, `must be "0" or "1", not "${value}"`);
    return value === "1";
  };
  const rate = (name: string, fallback: RateLimit): RateLimit => {
    const value = text(name);
    if (value === undefined) return fallback;
    const match = /^(\d+)\/(\d+)$/.exec(value);
    const requests = Number(match?.[1]);
    const periodSeconds = Number(match?.[2]);
    if (!match || requests < 1 || periodSeconds < 1 || periodSeconds > 86_400) {
      throw new ConfigError(name, `must be "requests/seconds" such as "120/60", not "${value}"`);
    }
    return { requests, periodSeconds };
  };

  const apiKeys = required("EARSHOT_API_KEYS")
    .split(",")
    .map((key) => key.trim())
    .filter((key) => key !== "");
  if (apiKeys.length === 0) throw new ConfigError("EARSHOT_API_KEYS", "names no key");
  if (apiKeys.some((key) => key.length < 12 || key.startsWith("ek_"))) {
    throw new ConfigError(
      "EARSHOT_API_KEYS",
      "each key must be at least 12 characters and not start with ek_",
    );
  }

  const signingKeys = required("EARSHOT_SIGNING_KEYS")
    .split(",")
    .map((pair) => pair.trim())
    .filter((pair) => pair !== "")
    .map((pair): SigningKey => {
      const colon = pair.indexOf(":");
      const kid = pair.slice(0, colon);
      const secret = pair.slice(colon + 1);
      if (colon < 1 || !/^[A-Za-z0-9._-]{1,32}$/.test(kid) || secret.length < 16) {
        throw new ConfigError(
          "EARSHOT_SIGNING_KEYS",
          "must be kid:secret pairs, a kid of letters, digits, . _ - and a secret of at least 16 characters",
        );
      }
      return { kid, secret: new TextEncoder().encode(secret) as Uint8Array<ArrayBuffer> };
    });
  if (signingKeys.length === 0) throw new ConfigError("EARSHOT_SIGNING_KEYS", "names no key");
  if (new Set(signingKeys.map((k) => k.kid)).size !== signingKeys.length) {
    throw new ConfigError("EARSHOT_SIGNING_KEYS", "names a key id twice");
  }

  const relaySecret = required("EARSHOT_RELAY_SECRET");
  if (relaySecret.length < 16)
    throw new ConfigError("EARSHOT_RELAY_SECRET", "must be at least 16 characters");

  const origins = text("EARSHOT_CORS_ORIGINS") ?? "*";
  let corsOrigins: EdgeConfig["corsOrigins"] = "*";
  if (origins !== "*") {
    const list = origins.split(",").map((o) => o.trim());
    for (const origin of list) {
      let parsed: URL | undefined;
      try {
        parsed = new URL(origin);
      } catch {
        parsed = undefined;
      }
      if (!parsed || parsed.origin !== origin) {
        throw new ConfigError(
          "EARSHOT_CORS_ORIGINS",
          `"${origin}" is not an origin such as https://app.example.com`,
        );
      }
    }
    corsOrigins = new Set(list);
  }

  return {
    dev: flag("EARSHOT_DEV"),
    allowedHosts: hostList(text("EARSHOT_ALLOWED_HOSTS")),
    apiKeys,
    signingKeys,
    relaySecret,
    maxCallsPerSecret: int("EARSHOT_MAX_CALLS_PER_SECRET", 10, 0, 1_000_000),
    relayTimeoutMs: int("EARSHOT_RELAY_TIMEOUT_MS", 10_000, 100, 60_000),
    connectTimeoutSeconds: int("EARSHOT_CONNECT_TIMEOUT_SECONDS", 10, 1, 3600),
    maxUnconnectedPerSecret: int("EARSHOT_MAX_UNCONNECTED_PER_SECRET", 3, 0, 10_000),
    maxUnconnectedPerIp: int("EARSHOT_MAX_UNCONNECTED_PER_IP", 10, 0, 100_000),
    relaySilenceSeconds: int("EARSHOT_RELAY_SILENCE_SECONDS", 15, 1, 3600),
    maxCallSeconds: int("EARSHOT_MAX_CALL_SECONDS", 3600, 10, 86_400),
    callRetentionSeconds: int("EARSHOT_CALL_RETENTION_SECONDS", 86_400, 60, 30 * 86_400),
    callRecordDays: int("EARSHOT_CALL_RECORD_DAYS", 30, 1, 3650),
    registryCacheSeconds: int("EARSHOT_REGISTRY_CACHE_SECONDS", 3, 1, 60),
    loadPenaltyKm: int("EARSHOT_LOAD_PENALTY_KM", 2000, 0, 40_000),
    corsOrigins,
    apiKeyRateLimit: rate("EARSHOT_RATE_LIMIT_API_KEY", { requests: 600, periodSeconds: 60 }),
    ipRateLimit: rate("EARSHOT_RATE_LIMIT_IP", { requests: 120, periodSeconds: 60 }),
    turn: turnConfig(text, int),
  };
}

/** Bare host names, as `URL.hostname` spells them (lower case, IPv6 in brackets), no port. */
function hostList(value: string | undefined): ReadonlySet<string> {
  const hosts = (value ?? "")
    .split(",")
    .map((host) => host.trim())
    .filter((host) => host !== "");
  for (const host of hosts) {
    let hostname: string | undefined;
    try {
      hostname = new URL(`http://${host}/`).hostname;
    } catch {
      hostname = undefined;
    }
    if (hostname !== host) {
      throw new ConfigError(
        "EARSHOT_ALLOWED_HOSTS",
        `"${host}" is not a lower-case host name without a port, such as devbox.lan or 192.168.1.20`,
      );
    }
  }
  return new Set(hosts);
}

/** TURN is optional, but half of it (URLs without a secret, or the reverse) is a mistake. */
function turnConfig(
  text: (name: string) => string | undefined,
  int: (name: string, fallback: number, min: number, max: number) => number,
): TurnConfig | undefined {
  const urlList = text("EARSHOT_TURN_URLS");
  const secret = text("EARSHOT_TURN_SECRET");
  const ttlSeconds = int(
    "EARSHOT_TURN_TTL_SECONDS",
    DEFAULT_TURN_TTL_SECONDS,
    MIN_TURN_TTL_SECONDS,
    MAX_TURN_TTL_SECONDS,
  );
  if (urlList === undefined && secret === undefined) return undefined;
  if (urlList === undefined)
    throw new ConfigError("EARSHOT_TURN_URLS", "is required when EARSHOT_TURN_SECRET is set");
  if (secret === undefined) {
    throw new ConfigError(
      "EARSHOT_TURN_SECRET",
      "is required when EARSHOT_TURN_URLS is set (set it with `wrangler secret put`)",
    );
  }
  if (secret.length < MIN_TURN_SECRET_LENGTH) {
    throw new ConfigError("EARSHOT_TURN_SECRET", `must be at least ${MIN_TURN_SECRET_LENGTH} characters`);
  }
  const urls = urlList
    .split(",")
    .map((url) => url.trim())
    .filter((url) => url !== "");
  if (urls.length === 0) throw new ConfigError("EARSHOT_TURN_URLS", "names no URL");
  for (const url of urls) {
    const problem = turnUrlProblem(url);
    if (problem) throw new ConfigError("EARSHOT_TURN_URLS", problem);
  }
  return { urls, secret, ttlSeconds };
}
