// The relay's HTTP API for the edge (node:http): create a call from an offer and a ticket,
// ICE-restart it, end it; health and Prometheus metrics. It owns the calls, the shared pacer,
// the edge client and the drain.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createTlsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { CLOCK_SKEW_SECONDS, verifyTicket } from "../../protocol/ticket.ts";
import { SIGNATURE_HEADER, verifyRequest } from "../../protocol/signed-request.ts";
import {
  CallId,
  CreateCallRequest,
  MAX_OFFER_BYTES,
  TICKET_HEADER,
  type CreateCallResponse,
  type EndReason,
  type Heartbeat,
  type RelayCallEvent,
} from "../../protocol/relay-api.ts";
import type { CallBridge, CallBridgeFactory } from "../bridge.ts";
import { Call, CallSetupError } from "../call/call.ts";
import type { RelayConfig } from "../config.ts";
import { EdgeClient } from "./edge-client.ts";
import { HttpError } from "./http-error.ts";
import type { Logger } from "../log.ts";
import { EncoderGovernor } from "../media/encoder-governor.ts";
import { Pacer } from "../media/pacer.ts";
import { RelayMetrics } from "../metrics.ts";
import { NonceCache } from "./nonce-cache.ts";

/** Body caps: an offer plus a session config; an sdpfrag. */
export const MAX_CREATE_BODY_BYTES = MAX_OFFER_BYTES + 96 * 1024;
export const MAX_PATCH_BODY_BYTES = 8 * 1024;

/** The default bridge until inference is plugged in: audio in is dropped, nothing comes out. */
export const discardingBridge: CallBridgeFactory = (): CallBridge => ({
  onUplinkFrame() {},
  onClientMessage() {},
  onChannelOpen() {},
  onPlayoutStarted() {},
  onPlayoutStopped() {},
  close() {},
});

export interface RelayServerOptions {
  config: RelayConfig;
  log: Logger;
  bridgeFactory?: CallBridgeFactory;
}

export class RelayServer {
  readonly metrics = new RelayMetrics();
  readonly pacer: Pacer;
  readonly encoderGovernor: EncoderGovernor;
  readonly edge: EdgeClient;
  readonly calls = new Map<string, Call>();
  #config: RelayConfig;
  #log: Logger;
  #bridgeFactory: CallBridgeFactory;
  #http: Server;
  #nonces = new NonceCache();
  #draining = false;
  #statsTimer: NodeJS.Timeout | undefined;
  #drainTimer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;
  /** The heartbeat that tells the edge this relay is draining; close() lets it arrive. */
  #drainNotice: Promise<unknown> = Promise.resolve();
  /** Calls being set up (counted against capacity before they are in `calls`). */
  #pending = 0;

  constructor(options: RelayServerOptions) {
    this.#config = options.config;
    this.#log = options.log;
    this.#bridgeFactory = options.bridgeFactory ?? discardingBridge;
    const complexity = this.#config.opusComplexity;
    this.encoderGovernor = new EncoderGovernor({
      ...(complexity === "auto" ? {} : { ladder: [complexity] }),
      onChange: (level) => {
        this.metrics.opusComplexity.set(level);
        this.#log.warn({ complexity: level, calls: this.calls.size }, "downlink Opus complexity changed");
      },
    });
    this.metrics.opusComplexity.set(this.encoderGovernor.complexity);
    this.pacer = new Pacer({
      onTickLateness: (ms) => {
        if (ms > 20) this.metrics.lateFrames.inc();
      },
    });
    this.edge = new EdgeClient({
      edgeUrl: this.#config.edgeUrl,
      secret: this.#config.relaySecret,
      log: this.#log.child({ component: "edge-client" }),
      heartbeatSeconds: this.#config.heartbeatSeconds,
      heartbeat: () => this.heartbeat(),
    });
    const limits = { requestTimeout: 10_000, headersTimeout: 5_000 };
    const handler = (req: IncomingMessage, res: ServerResponse) => void this.#handle(req, res);
    // RELAY_TLS_CERT/KEY: the edge reaches relays over the internet, so production serves HTTPS.
    const tls = this.#config.tls;
    this.#http = tls
      ? createTlsServer({ ...limits, cert: tls.cert, key: tls.key }, handler)
      : createServer(limits, handler);
    this.#http.keepAliveTimeout = 5_000;
  }

  get draining(): boolean {
    return this.#draining;
  }

  get port(): number {
    return (this.#http.address() as AddressInfo).port;
  }

  heartbeat(): Heartbeat {
    const c = this.#config;
    return {
      relay_id: c.relayId,
      region: c.region,
      lat: c.lat,
      lon: c.lon,
      public_url: c.publicUrl,
      capacity: c.capacity,
      active_calls: this.calls.size,
      draining: this.#draining,
      interval_seconds: c.heartbeatSeconds,
    };
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.#http.once("error", reject);
      this.#http.listen(this.#config.httpPort, this.#config.httpHost, () => {
        this.#http.off("error", reject);
        resolve();
      });
    });
    this.#statsTimer = setInterval(() => this.#reportStats(), this.#config.statsSeconds * 1000);
    this.encoderGovernor.start();
    this.edge.start();
    this.#log.info(
      {
        url: `${this.#config.tls ? "https" : "http"}://${this.#config.httpHost}:${this.port}`,
        relay_id: this.#config.relayId,
      },
      "relay listening",
    );
    return this.port;
  }

  /**
   * Stops taking calls, tells the edge, lets calls finish until the deadline, then ends the
   * rest with `relay_draining`. Resolves when no call is left.
   */
  drain(deadlineSeconds = this.#config.drainSeconds): Promise<void> {
    if (!this.#draining) {
      this.#draining = true;
      this.#log.info({ active_calls: this.calls.size, deadline_s: deadlineSeconds }, "draining");
      this.#drainNotice = this.edge.sendHeartbeat();
    }
    return new Promise((resolve) => {
      const check = () => {
        if (this.calls.size === 0 && this.#pending === 0) {
          if (this.#drainTimer) clearTimeout(this.#drainTimer);
          this.#drainTimer = undefined;
          resolve();
          return true;
        }
        return false;
      };
      if (check()) return;
      this.#drainTimer ??= setTimeout(() => {
        this.#log.info({ active_calls: this.calls.size }, "drain deadline: ending calls");
        for (const call of this.calls.values())
          void call.end("relay_draining", "The relay is shutting down.");
      }, deadlineSeconds * 1000);
      const onEnded = () => {
        if (check()) this.#drainWaiters.delete(onEnded);
      };
      this.#drainWaiters.add(onEnded);
    });
  }

  #drainWaiters = new Set<() => void>();

  /** Ends every call, stops the server and all timers. Safe to call twice. */
  close(reason: EndReason = "relay_draining"): Promise<void> {
    this.#closing ??= (async () => {
      this.#draining = true;
      if (this.#statsTimer) clearInterval(this.#statsTimer);
      if (this.#drainTimer) clearTimeout(this.#drainTimer);
      await Promise.all([...this.calls.values()].map((call) => call.end(reason)));
      this.pacer.stop();
      this.encoderGovernor.stop();
      // Without this, a relay with no calls exits before the edge hears it is draining, and the
      // edge keeps sending it calls until its heartbeats go stale. Bounded by the request timeout.
      await this.#drainNotice;
      await this.edge.close(1000);
      await new Promise<void>((resolve) => {
        this.#http.close(() => resolve());
        this.#http.closeAllConnections();
      });
      this.metrics.close();
      this.#log.info("relay closed");
    })();
    return this.#closing;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? "/", "http://relay");
      const path = url.pathname;
      if (path === "/calls") {
        if (req.method !== "POST") throw methodNotAllowed("POST");
        return await this.#createCall(req, res);
      }
      const match = /^\/calls\/([^/]+)$/.exec(path);
      if (match) {
        if (req.method === "PATCH")
          return await this.#patchCall(req, res, decodeURIComponent(match[1]!), path);
        if (req.method === "DELETE")
          return await this.#deleteCall(req, res, decodeURIComponent(match[1]!), path);
        throw methodNotAllowed("PATCH, DELETE");
      }
      if (path === "/healthz") {
        if (req.method !== "GET") throw methodNotAllowed("GET");
        return sendJson(res, 200, {
          status: this.#draining ? "draining" : "ok",
          relay_id: this.#config.relayId,
          active_calls: this.calls.size,
          capacity: this.#config.capacity,
        });
      }
      if (path === "/metrics") {
        if (req.method !== "GET") throw methodNotAllowed("GET");
        this.metrics.activeCalls.set(this.calls.size);
        res.writeHead(200, { "content-type": this.metrics.registry.contentType });
        res.end(await this.metrics.render());
        return;
      }
      throw new HttpError(404, "not_found", `No route for ${req.method} ${path}.`);
    } catch (error) {
      if (error instanceof HttpError) {
        if (error.code) this.metrics.callsRefused.inc({ code: error.code });
        return sendJson(res, error.status, error.body(), error.headers);
      }
      this.#log.error({ err: error }, "request failed");
      sendJson(
        res,
        500,
        new HttpError(500, "internal_error", "The relay failed to handle the request.").body(),
      );
    }
  }

  async #createCall(req: IncomingMessage, res: ServerResponse): Promise<void> {
    requireContentType(req, "application/json");
    const text = await readBody(req, MAX_CREATE_BODY_BYTES);
    if (this.#draining) throw unavailable("relay_draining", "The relay is draining and takes no new calls.");
    if (this.calls.size + this.#pending >= this.#config.capacity) {
      throw unavailable("relay_at_capacity", `The relay is at capacity (${this.#config.capacity} calls).`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new HttpError(400, "invalid_json", "The body is not valid JSON.");
    }
    const parsed = CreateCallRequest.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const param = issue.path.join(".") || null;
      throw new HttpError(400, "invalid_request", `Invalid ${param ?? "body"}: ${issue.message}`, { param });
    }
    const body = parsed.data;
    // Verify before allocating anything: a refused ticket costs one HMAC and nothing else.
    const ticket = req.headers[TICKET_HEADER.toLowerCase()];
    const verdict = await verifyTicket(
      this.#config.relaySecret,
      typeof ticket === "string" ? ticket : undefined,
      {
        callId: body.call_id,
        relayId: this.#config.relayId,
        offerSdp: body.offer_sdp,
        session: body.session,
      },
    );
    if (!verdict.ok) {
      const status = verdict.code === "ticket_missing" ? 401 : 403;
      throw new HttpError(status, verdict.code, verdict.message, {
        type: "authentication_error",
        param: TICKET_HEADER,
      });
    }
    const remembered = this.#nonces.remember(verdict.claims.nonce, verdict.claims.exp + CLOCK_SKEW_SECONDS);
    if (remembered === "replayed") {
      throw new HttpError(403, "ticket_replayed", "The ticket has been used already.", {
        type: "authentication_error",
        param: TICKET_HEADER,
      });
    }
    if (remembered === "full") throw unavailable("relay_busy", "Too many tickets in flight; retry shortly.");
    if (this.calls.has(body.call_id)) throw new HttpError(409, "call_exists", "A call with this id exists.");
    // Re-check: other requests may have been admitted while the ticket was being verified.
    if (this.#draining) throw unavailable("relay_draining", "The relay is draining and takes no new calls.");
    if (this.calls.size + this.#pending >= this.#config.capacity) {
      throw unavailable("relay_at_capacity", `The relay is at capacity (${this.#config.capacity} calls).`);
    }

    this.#pending++;
    const call = new Call({
      callId: body.call_id,
      session: body.session,
      network: {
        mediaIp: this.#config.mediaIp,
        publicIp: this.#config.publicIp,
        udpPorts: this.#config.udpPorts,
        iceLite: this.#config.iceLite,
      },
      bridgeFactory: this.#bridgeFactory,
      pacer: this.pacer,
      encoderGovernor: this.encoderGovernor,
      metrics: this.metrics,
      log: this.#log,
      connectTimeoutMs: this.#config.connectTimeoutSeconds * 1000,
    });
    let answerSdp: string;
    try {
      answerSdp = await call.answer(body.offer_sdp);
    } catch (error) {
      await call.end("relay_error");
      if (error instanceof CallSetupError)
        throw new HttpError(400, "invalid_offer", error.message, { param: "offer_sdp" });
      throw error;
    } finally {
      this.#pending--;
    }
    this.#adopt(call);
    const response: CreateCallResponse = { call_id: call.id, answer_sdp: answerSdp };
    sendJson(res, 201, response, { location: `/calls/${call.id}` });
  }

  #adopt(call: Call): void {
    this.calls.set(call.id, call);
    this.metrics.callsTotal.inc();
    this.metrics.activeCalls.set(this.calls.size);
    const report = (event: RelayCallEvent) => this.edge.event(event);
    const base = () => ({ call_id: call.id, relay_id: this.#config.relayId, at: Date.now() });
    call.on("connected", () => report({ ...base(), type: "connected" }));
    call.on("first_audio", () => report({ ...base(), type: "first_audio" }));
    call.once("ended", (reason, message) => {
      this.calls.delete(call.id);
      this.metrics.activeCalls.set(this.calls.size);
      report({ ...base(), type: "ended", reason, ...(message ? { message: message.slice(0, 512) } : {}) });
      for (const waiter of [...this.#drainWaiters]) waiter();
    });
  }

  async #verifySigned(req: IncomingMessage, path: string, body: string): Promise<void> {
    const header = req.headers[SIGNATURE_HEADER.toLowerCase()];
    const verdict = await verifyRequest(
      this.#config.relaySecret,
      typeof header === "string" ? header : undefined,
      req.method ?? "",
      path,
      body,
    );
    if (!verdict.ok) {
      throw new HttpError(401, "bad_signature", verdict.message, {
        type: "authentication_error",
        param: SIGNATURE_HEADER,
      });
    }
  }

  #callFor(id: string): Call {
    if (!CallId.safeParse(id).success)
      throw new HttpError(400, "invalid_call_id", "The call id is malformed.", { param: "call_id" });
    const call = this.calls.get(id);
    if (!call)
      throw new HttpError(404, "call_not_found", "No such call on this relay.", { param: "call_id" });
    return call;
  }

  async #patchCall(req: IncomingMessage, res: ServerResponse, id: string, path: string): Promise<void> {
    requireContentType(req, "application/trickle-ice-sdpfrag");
    const body = await readBody(req, MAX_PATCH_BODY_BYTES);
    await this.#verifySigned(req, path, body);
    const call = this.#callFor(id);
    let fragment: string;
    try {
      fragment = await call.restartIce(body);
    } catch (error) {
      if (error instanceof CallSetupError)
        throw new HttpError(400, "invalid_sdpfrag", error.message, { param: "body" });
      throw error;
    }
    res.writeHead(200, { "content-type": "application/trickle-ice-sdpfrag" });
    res.end(fragment);
  }

  async #deleteCall(req: IncomingMessage, res: ServerResponse, id: string, path: string): Promise<void> {
    const body = await readBody(req, 1024);
    await this.#verifySigned(req, path, body);
    const call = this.#callFor(id);
    await call.end("hangup");
    res.writeHead(204).end();
  }

  #reportStats(): void {
    let jitter = 0;
    let n = 0;
    for (const call of this.calls.values()) {
      if (call.state !== "connected") continue;
      const stats = call.stats();
      jitter += stats.jitter_ms;
      n++;
      this.edge.event({
        call_id: call.id,
        relay_id: this.#config.relayId,
        at: Date.now(),
        type: "stats",
        stats,
      });
    }
    this.metrics.jitter.set(n ? jitter / n : 0);
  }
}

function methodNotAllowed(allow: string): HttpError {
  return new HttpError(405, "method_not_allowed", `Use ${allow}.`, { headers: { allow } });
}

function unavailable(code: string, message: string): HttpError {
  return new HttpError(503, code, message, { type: "server_error", headers: { "retry-after": "1" } });
}

function requireContentType(req: IncomingMessage, type: string): void {
  const actual = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
  if (actual !== type) {
    throw new HttpError(415, "unsupported_media_type", `Content-Type must be ${type}.`, {
      param: "content-type",
    });
  }
}

/** Reads the body as UTF-8, refusing more than `limit` bytes (413) without buffering it. */
async function readBody(req: IncomingMessage, limit: number): Promise<string> {
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > limit) {
    req.resume();
    throw new HttpError(413, "body_too_large", `The body is larger than ${limit} bytes.`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      req.resume();
      throw new HttpError(413, "body_too_large", `The body is larger than ${limit} bytes.`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) return;
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}
