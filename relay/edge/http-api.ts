// The relay's HTTP API for the edge (node:http): create a call from an offer and a ticket,
// ICE-restart it, end it, attach a sideband WebSocket to it (an upgrade the edge passes on, with
// a sideband ticket); health, and Prometheus metrics for a bearer of RELAY_METRICS_TOKEN
// (edge/metrics-endpoint.ts). Requests are authenticated here (tickets, signatures, nonces) with
// this relay's own key; what a call is and whether it may start is the Relay's.
import {
  createServer,
  STATUS_CODES,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createTlsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { WebSocketServer } from "ws";
import {
  MAX_SIDEBAND_MESSAGE_BYTES,
  MAX_SIDEBANDS_PER_CALL,
  REALTIME_SUBPROTOCOL,
} from "../../protocol/sideband.ts";
import { CLOCK_SKEW_SECONDS, verifySidebandTicket, verifyTicket } from "../../protocol/ticket.ts";
import { SIGNATURE_HEADER, verifyRequest } from "../../protocol/signed-request.ts";
import {
  CallId,
  CreateCallRequest,
  MAX_OFFER_BYTES,
  TICKET_HEADER,
  ticketSubject,
  type CreateCallResponse,
} from "../../protocol/relay-api.ts";
import type { RelayConfig } from "../config.ts";
import type { Logger } from "../log.ts";
import { CallRefused, type Relay } from "../relay.ts";
import { ConnectionCap } from "./connection-cap.ts";
import { HttpError } from "./http-error.ts";
import { HTTP_LIMITS } from "./http-limits.ts";
import { MetricsEndpoint } from "./metrics-endpoint.ts";
import { NonceCache } from "./nonce-cache.ts";
import { SidebandSocket } from "../sideband/sideband-socket.ts";

/** Body caps: an offer plus a session config; an sdpfrag. */
/** The offer, the session, and a resumed call's conversation (MAX_RESUME_ITEMS, its text bounded by the edge's log). */
export const MAX_CREATE_BODY_BYTES = MAX_OFFER_BYTES + 96 * 1024 + 1024 * 1024;
export const MAX_PATCH_BODY_BYTES = 8 * 1024;

/** A request whose client went away before its body was read: nothing to answer, nothing broken. */
class RequestAborted extends Error {}

export class RelayHttpApi {
  readonly #relay: Relay;
  readonly #config: RelayConfig;
  readonly #log: Logger;
  readonly #http: Server;
  readonly #connections: ConnectionCap;
  readonly #metrics: MetricsEndpoint;
  readonly #key: string;
  /** Ticket nonces, and the nonces of the edge's signed PATCH and DELETE: each accepted once. */
  readonly #nonces = new NonceCache();
  /** Sideband upgrades; ws closes a frame over the cap with 1009 before buffering it whole. */
  readonly #sidebandServer = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_SIDEBAND_MESSAGE_BYTES,
    perMessageDeflate: false,
    // Browsers offer "realtime" (their key rides in another subprotocol, which the edge removes).
    handleProtocols: (offered) => (offered.has(REALTIME_SUBPROTOCOL) ? REALTIME_SUBPROTOCOL : false),
  });

  /** `key`: this relay's own key (protocol/relay-key.ts). */
  constructor(
    relay: Relay,
    options: { config: RelayConfig; log: Logger; metrics: MetricsEndpoint; key: string },
  ) {
    this.#relay = relay;
    this.#config = options.config;
    this.#key = options.key;
    this.#log = options.log;
    this.#metrics = options.metrics;
    const { keepAliveTimeout, ...limits } = HTTP_LIMITS;
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.#connections.track(req, res);
      void this.#handle(req, res);
    };
    // RELAY_TLS_CERT/KEY: the edge reaches relays over the internet, so production serves HTTPS.
    const tls = this.#config.tls;
    this.#http = tls
      ? createTlsServer({ ...limits, cert: tls.cert, key: tls.key }, handler)
      : createServer(limits, handler);
    this.#http.keepAliveTimeout = keepAliveTimeout;
    this.#connections = new ConnectionCap(this.#http, this.#config.httpMaxConnections, () =>
      relay.metrics.httpConnectionsShed.inc(),
    );
    this.#http.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
      void this.#upgrade(req, socket, head);
    });
  }

  get port(): number {
    return (this.#http.address() as AddressInfo).port;
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.#http.once("error", reject);
      this.#http.listen(this.#config.httpPort, this.#config.httpHost, () => {
        this.#http.off("error", reject);
        resolve();
      });
    });
    this.#log.info(
      {
        url: `${this.#config.tls ? "https" : "http"}://${this.#config.httpHost}:${this.port}`,
        relay_id: this.#config.relayId,
      },
      "relay listening",
    );
    return this.port;
  }

  close(): Promise<void> {
    this.#sidebandServer.close();
    return new Promise<void>((resolve) => {
      this.#http.close(() => resolve());
      this.#http.closeAllConnections();
    });
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const relay = this.#relay;
    try {
      const url = new URL(req.url ?? "/", "http://relay");
      const path = url.pathname;
      if (path === "/calls") {
        if (req.method !== "POST") throw methodNotAllowed("POST");
        return await this.#createCall(req, res);
      }
      const match = /^\/calls\/([^/]+)$/.exec(path);
      if (match) {
        if (req.method === "PATCH") return await this.#patchCall(req, res, callIdOf(match[1]!), path);
        if (req.method === "DELETE") return await this.#deleteCall(req, res, callIdOf(match[1]!), path);
        throw methodNotAllowed("PATCH, DELETE");
      }
      if (path === "/healthz") {
        if (req.method !== "GET") throw methodNotAllowed("GET");
        return sendJson(res, 200, {
          status: relay.draining ? "draining" : "ok",
          relay_id: this.#config.relayId,
          boot_id: relay.bootId,
          active_calls: relay.calls.size,
          capacity: this.#config.capacity,
        });
      }
      if (path === "/metrics") return await this.#metrics.serve(req, res, "api");
      throw new HttpError(404, "not_found", `No route for ${req.method} ${path}.`);
    } catch (error) {
      if (error instanceof RequestAborted) {
        this.#log.debug({ method: req.method, path: req.url }, "request aborted by the client");
        res.destroy();
        return;
      }
      const known = error instanceof CallRefused ? refusal(error) : error;
      if (known instanceof HttpError) {
        if (known.code) relay.metrics.callsRefused.inc({ code: known.code });
        return sendJson(res, known.status, known.body(), known.headers);
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
    this.#relay.checkAdmission();
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
    const verdict = await verifyTicket(this.#key, typeof ticket === "string" ? ticket : undefined, {
      callId: body.call_id,
      relayId: this.#config.relayId,
      bootId: this.#relay.bootId,
      offerSdp: body.offer_sdp,
      session: ticketSubject(body),
    });
    if (!verdict.ok) {
      const status = verdict.code === "ticket_missing" ? 401 : 403;
      throw new HttpError(status, verdict.code, verdict.message, {
        type: "authentication_error",
        param: TICKET_HEADER,
      });
    }
    const remembered = this.#nonces.remember(
      `ticket:${verdict.claims.nonce}`,
      verdict.claims.exp + CLOCK_SKEW_SECONDS,
    );
    if (remembered === "replayed") {
      throw new HttpError(403, "ticket_replayed", "The ticket has been used already.", {
        type: "authentication_error",
        param: TICKET_HEADER,
      });
    }
    if (remembered === "full") throw unavailable("relay_busy", "Too many tickets in flight; retry shortly.");
    const deadline = verdict.claims.call_deadline;
    const answerSdp = await this.#relay.createCall(body.call_id, body.session, body.offer_sdp, {
      ...(deadline === undefined ? {} : { deadlineMs: deadline * 1000 }),
      ...(body.resume ? { resume: body.resume } : {}),
    });
    const response: CreateCallResponse = { call_id: body.call_id, answer_sdp: answerSdp };
    sendJson(res, 201, response, { location: `/calls/${body.call_id}` });
  }

  /**
   * `GET /calls/{id}/sideband` with `Upgrade: websocket` and a sideband ticket: the edge passing
   * on an app server's WebSocket. Refusals are HTTP answers in the error envelope, before the
   * upgrade, so the edge can tell its client why.
   */
  async #upgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const relay = this.#relay;
    socket.on("error", () => {}); // a client gone mid-upgrade is not the relay's problem
    try {
      const path = new URL(req.url ?? "/", "http://relay").pathname;
      const match = /^\/calls\/([^/]+)\/sideband$/.exec(path);
      if (!match) throw new HttpError(404, "not_found", `No WebSocket route for ${path}.`);
      if (req.method !== "GET") throw methodNotAllowed("GET");
      const callId = callIdOf(match[1]!);
      const ticket = req.headers[TICKET_HEADER.toLowerCase()];
      const verdict = await verifySidebandTicket(this.#key, typeof ticket === "string" ? ticket : undefined, {
        callId,
        relayId: this.#config.relayId,
        bootId: relay.bootId,
      });
      if (!verdict.ok) {
        throw new HttpError(verdict.code === "ticket_missing" ? 401 : 403, verdict.code, verdict.message, {
          type: "authentication_error",
          param: TICKET_HEADER,
        });
      }
      const remembered = this.#nonces.remember(
        `sideband:${verdict.claims.nonce}`,
        verdict.claims.exp + CLOCK_SKEW_SECONDS,
      );
      if (remembered === "replayed") {
        throw new HttpError(403, "ticket_replayed", "The ticket has been used already.", {
          type: "authentication_error",
          param: TICKET_HEADER,
        });
      }
      if (remembered === "full")
        throw unavailable("relay_busy", "Too many tickets in flight; retry shortly.");
      const call = relay.calls.get(callId);
      if (!call || call.state === "ended") {
        throw new HttpError(404, "call_not_found", "The call is not live on this relay.", {
          param: "call_id",
        });
      }
      if (call.sidebands >= MAX_SIDEBANDS_PER_CALL) throw tooManySidebands();
      this.#connections.hold(socket);
      this.#sidebandServer.handleUpgrade(req, socket, head, (ws) => {
        const sideband = new SidebandSocket(ws, {
          keyId: verdict.claims.key_id,
          log: this.#log.child({ call_id: callId, key_id: verdict.claims.key_id }),
          metrics: relay.metrics,
        });
        // The call may have ended, or filled, while the handshake was written.
        const outcome = call.attachSideband(sideband);
        if (outcome === "attached") {
          relay.metrics.sidebandsAttached.inc();
          this.#log.info({ call_id: callId, key_id: verdict.claims.key_id }, "sideband attached");
          return;
        }
        relay.metrics.sidebandsRefused.inc({ code: outcome });
        sideband.close(outcome === "full" ? 1013 : 1011, `sideband refused: ${outcome}`);
      });
    } catch (error) {
      const known =
        error instanceof HttpError
          ? error
          : (this.#log.error({ err: error }, "sideband upgrade failed"),
            new HttpError(500, "internal_error", "The relay failed to handle the request."));
      if (known.code) relay.metrics.sidebandsRefused.inc({ code: known.code });
      refuseUpgrade(socket, known);
    }
  }

  async #verifySigned(req: IncomingMessage, path: string, body: string): Promise<void> {
    const header = req.headers[SIGNATURE_HEADER.toLowerCase()];
    const verdict = await verifyRequest(
      this.#key,
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
    const remembered = this.#nonces.remember(`signature:${verdict.nonce}`, verdict.expires);
    if (remembered === "replayed") {
      throw new HttpError(401, "signature_replayed", "The signature has been used already.", {
        type: "authentication_error",
        param: SIGNATURE_HEADER,
      });
    }
    if (remembered === "full") throw unavailable("relay_busy", "Too many requests in flight; retry shortly.");
  }

  async #patchCall(req: IncomingMessage, res: ServerResponse, id: string, path: string): Promise<void> {
    requireContentType(req, "application/trickle-ice-sdpfrag");
    const body = await readBody(req, MAX_PATCH_BODY_BYTES);
    await this.#verifySigned(req, path, body);
    const fragment = await this.#relay.restartIce(id, body);
    res.writeHead(200, { "content-type": "application/trickle-ice-sdpfrag" });
    res.end(fragment);
  }

  async #deleteCall(req: IncomingMessage, res: ServerResponse, id: string, path: string): Promise<void> {
    const body = await readBody(req, 1024);
    await this.#verifySigned(req, path, body);
    await this.#relay.endCall(id);
    res.writeHead(204).end();
  }
}

/** The call id in a path segment; a malformed id or percent-escape is the client's error. */
function callIdOf(segment: string): string {
  let id: string;
  try {
    id = decodeURIComponent(segment);
  } catch {
    id = "";
  }
  if (!CallId.safeParse(id).success)
    throw new HttpError(400, "invalid_call_id", "The call id is malformed.", { param: "call_id" });
  return id;
}

/** The Relay's refusals as HTTP answers. */
function refusal(error: CallRefused): HttpError {
  switch (error.code) {
    case "relay_draining":
    case "relay_at_capacity":
      return unavailable(error.code, error.message);
    case "call_exists":
      return new HttpError(409, error.code, error.message);
    case "call_not_found":
      return new HttpError(404, error.code, error.message, { param: "call_id" });
    case "invalid_offer":
      return new HttpError(400, error.code, error.message, { param: "offer_sdp" });
    case "invalid_sdpfrag":
      return new HttpError(400, error.code, error.message, { param: "body" });
  }
}

function tooManySidebands(): HttpError {
  return new HttpError(
    409,
    "too_many_sidebands",
    `The call already has ${MAX_SIDEBANDS_PER_CALL} sidebands attached; close one first.`,
    { param: "call_id" },
  );
}

/** An HTTP answer on a socket that asked to upgrade, then the end of it. */
function refuseUpgrade(socket: Socket, error: HttpError): void {
  if (!socket.writable) return void socket.destroy();
  const body = JSON.stringify(error.body());
  const headers = {
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(body)),
    connection: "close",
    ...error.headers,
  };
  socket.end(
    `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? ""}\r\n` +
      Object.entries(headers)
        .map(([name, value]) => `${name}: ${value}\r\n`)
        .join("") +
      `\r\n${body}`,
  );
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
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) {
        req.resume();
        throw new HttpError(413, "body_too_large", `The body is larger than ${limit} bytes.`);
      }
      chunks.push(chunk);
    }
  } catch (error) {
    if (req.readableAborted || (error as NodeJS.ErrnoException).code === "ECONNRESET")
      throw new RequestAborted();
    throw error;
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
