// GET /metrics, the Prometheus exposition. The API port is on the internet for the edge, so it
// serves /metrics only to a bearer of RELAY_METRICS_TOKEN; RELAY_METRICS_PORT is a listener of
// its own (loopback by default) that serves nothing else, with no credentials unless the token is
// set. Either way a scrape reads the cached rendering (RelayMetrics.scrape): the relay's one
// thread also paces every call's audio, and a flood of scrapes must not delay it.
import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { MetricsConfig } from "../config.ts";
import type { Logger } from "../log.ts";
import type { RelayMetrics } from "../metrics.ts";
import { HttpError } from "./http-error.ts";
import { HTTP_LIMITS } from "./http-limits.ts";

/** Scrapers are few: Prometheus (perhaps a pair of them) and an operator's curl. */
const METRICS_MAX_CONNECTIONS = 32;

export class MetricsEndpoint {
  readonly #metrics: RelayMetrics;
  readonly #tokenDigest: Buffer | undefined;

  constructor(metrics: RelayMetrics, config: MetricsConfig) {
    this.#metrics = metrics;
    this.#tokenDigest = config.token === undefined ? undefined : digest(config.token);
  }

  /**
   * Answers GET /metrics. `listener`: "api" needs the token, and without one configured there are
   * no metrics there; "metrics" (RELAY_METRICS_PORT) needs the token only if one is configured.
   */
  async serve(req: IncomingMessage, res: ServerResponse, listener: "api" | "metrics"): Promise<void> {
    const refusal = this.#refusal(req, listener);
    if (refusal) {
      sendError(res, refusal);
      return;
    }
    const text = await this.#metrics.scrape();
    if (res.destroyed) return;
    res.writeHead(200, { "content-type": this.#metrics.registry.contentType, "cache-control": "no-store" });
    res.end(text);
  }

  #refusal(req: IncomingMessage, listener: "api" | "metrics"): HttpError | undefined {
    if (req.method !== "GET")
      return new HttpError(405, "method_not_allowed", "Use GET.", { headers: { allow: "GET" } });
    if (this.#tokenDigest === undefined) {
      if (listener === "metrics") return undefined;
      return new HttpError(
        404,
        "not_found",
        "Metrics are served here only with RELAY_METRICS_TOKEN set (or on RELAY_METRICS_PORT).",
      );
    }
    const header = req.headers.authorization ?? "";
    const token = /^Bearer (\S+)$/i.exec(header)?.[1];
    if (token !== undefined && timingSafeEqual(digest(token), this.#tokenDigest)) return undefined;
    return new HttpError(
      401,
      "metrics_unauthorized",
      "GET /metrics needs Authorization: Bearer <RELAY_METRICS_TOKEN>.",
      {
        type: "authentication_error",
        param: "authorization",
        headers: { "www-authenticate": 'Bearer realm="earshot-relay-metrics"' },
      },
    );
  }
}

/** RELAY_METRICS_PORT: /metrics and nothing else, on its own port. */
export class MetricsListener {
  readonly #http: Server;
  readonly #config: MetricsConfig;
  readonly #log: Logger;

  constructor(endpoint: MetricsEndpoint, options: { config: MetricsConfig; log: Logger }) {
    this.#config = options.config;
    this.#log = options.log;
    const { keepAliveTimeout, ...limits } = HTTP_LIMITS;
    this.#http = createServer(limits, (req, res) => {
      const path = new URL(req.url ?? "/", "http://relay").pathname;
      if (path !== "/metrics") {
        sendError(res, new HttpError(404, "not_found", "This port serves GET /metrics only."));
        return;
      }
      endpoint.serve(req, res, "metrics").catch((error: unknown) => {
        this.#log.error({ err: error }, "metrics scrape failed");
        sendError(res, new HttpError(500, "internal_error", "The relay failed to render its metrics."));
      });
    });
    this.#http.keepAliveTimeout = keepAliveTimeout;
    this.#http.maxConnections = METRICS_MAX_CONNECTIONS;
  }

  get port(): number {
    return (this.#http.address() as AddressInfo).port;
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.#http.once("error", reject);
      this.#http.listen(this.#config.port, this.#config.host, () => {
        this.#http.off("error", reject);
        resolve();
      });
    });
    this.#log.info({ url: `http://${this.#config.host}:${this.port}/metrics` }, "metrics listening");
    return this.port;
  }

  close(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#http.close(() => resolve());
      this.#http.closeAllConnections();
    });
  }
}

function digest(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}

function sendError(res: ServerResponse, error: HttpError): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(error.status, { "content-type": "application/json", ...error.headers });
  res.end(JSON.stringify(error.body()));
}
