// The Earshot edge Worker: routes, the one place errors become responses, and the Durable
// Object classes it hosts.
import { AutoRouter } from "itty-router/AutoRouter";
import type { IRequest } from "itty-router";
import { edgeConfig } from "./config.ts";
import { checkOrigin, isCorsPath, preflight, withCors } from "./cors.ts";
import { checkDevHost } from "./dev-host.ts";
import { unrouted } from "./allowed-methods.ts";
import { errorResponse } from "./errors.ts";
import { ipBucket } from "./client-ip.ts";
import { enforceRateLimit } from "./rate-limiter.ts";
import { createCall, getCall, hangupCall, patchCall, resumeCall } from "./routes/calls.ts";
import { createClientSecret, createDevClientSecret } from "./routes/client-secrets.ts";
import { callControl } from "./routes/call-control.ts";
import { getCallLog, listCalls } from "./routes/call-records.ts";
import { getIceServers, ICE_SERVERS_PATH } from "./routes/ice-servers.ts";
import { attachSideband, REALTIME_WS_PATH } from "./routes/sideband.ts";
import {
  listRelays,
  relayCallEvent,
  relayEventBatch,
  relayHeartbeat,
  removeRelay,
} from "./routes/internal.ts";
import { timingOf, withServerTiming } from "./server-timing.ts";

export { CallIndex } from "./call-index.ts";
export { CallSession } from "./call-session.ts";
export { ClientSecretLedger } from "./client-secret-ledger.ts";
export { RateLimiter } from "./rate-limiter.ts";
export { RelayRegistry } from "./relay-registry.ts";

/** A browser fetches ICE servers with its client secret, as it places calls: same CORS rules. */
const corsApplies = (pathname: string) => isCorsPath(pathname) || pathname === ICE_SERVERS_PATH;

const answerPreflight = (request: IRequest, env: Env) => preflight(edgeConfig(env), request);

/** The API's paths; the rest is `/`, `/healthz` and 404s. */
const API_PATHS = ["/v1/", "/dev/", "/admin/", "/internal/"];
/**
 * Public paths, limited per client IP (/admin/ too, or its API key could be guessed at full
 * speed); /internal/ is signed by relays instead.
 */
const PUBLIC_PATHS = ["/v1/", "/dev/", "/admin/"];

/**
 * A dev edge's API answers only its own host names. Public routes are limited per client IP and
 * origin-checked where CORS applies.
 */
async function guard(request: IRequest, env: Env): Promise<void> {
  const { pathname } = new URL(request.url);
  const under = (prefixes: string[]) => prefixes.some((prefix) => pathname.startsWith(prefix));
  if (!under(API_PATHS)) return;
  const config = edgeConfig(env);
  checkDevHost(config, request);
  if (!under(PUBLIC_PATHS) || request.method === "OPTIONS") return;
  const timing = timingOf(request);
  if (corsApplies(pathname)) checkOrigin(config, request);
  await timing.time("ip", () => enforceRateLimit(env, ipBucket(config, request), config.ipRateLimit));
}

const router = AutoRouter({
  before: [guard],
  catch: (error: unknown, request: IRequest) => errorResponse(error, request),
  // A known path with the wrong method is a 405 with Allow, not a 404. itty calls `missing` as
  // the first `finally` step: (response, request, ...args). It returns the error rather than
  // throwing it: a throw there skips the later steps, and a page on another origin would see
  // a CORS failure instead of the 404 or 405.
  missing: (_response: unknown, request: IRequest) =>
    errorResponse(unrouted(router.routes, request), request),
  finally: [
    (response: Response, request: IRequest, env: Env) =>
      corsApplies(new URL(request.url).pathname) ? withCors(edgeConfig(env), request, response) : response,
    (response: Response, request: IRequest) => withServerTiming(request, response),
  ],
});

router
  .get(
    "/",
    () =>
      new Response("Earshot edge: see /v1/realtime/calls\n", { headers: { "Content-Type": "text/plain" } }),
  )
  // Liveness for `npm start` and the end-to-end stack; says nothing about relays or keys.
  .get("/healthz", () => Response.json({ status: "ok" }))
  .post("/v1/realtime/client_secrets", createClientSecret)
  .post("/dev/client_secret", createDevClientSecret)
  .options(ICE_SERVERS_PATH, answerPreflight)
  .get(ICE_SERVERS_PATH, getIceServers)
  .options("/v1/realtime/calls", answerPreflight)
  .options("/v1/realtime/calls/*", answerPreflight)
  .post("/v1/realtime/calls", createCall)
  .get("/v1/realtime/calls/:id", getCall)
  .get("/v1/realtime/calls/:id/log", getCallLog)
  .patch("/v1/realtime/calls/:id", patchCall)
  .delete("/v1/realtime/calls/:id", hangupCall)
  .post("/v1/realtime/calls/:id/hangup", hangupCall)
  .post("/v1/realtime/calls/:id/resume", resumeCall)
  .post("/v1/realtime/calls/:id/accept", callControl("accept"))
  .post("/v1/realtime/calls/:id/reject", callControl("reject"))
  .post("/v1/realtime/calls/:id/refer", callControl("refer"))
  // The sideband: an app server's WebSocket to a live call (OpenAI's `?call_id=`).
  .get(REALTIME_WS_PATH, attachSideband)
  .get("/admin/calls", listCalls)
  .get("/admin/relays", listRelays)
  .delete("/admin/relays/:relay_id", removeRelay)
  .post("/internal/relays/heartbeat", relayHeartbeat)
  .post("/internal/relays/:relay_id/events", relayEventBatch)
  .post("/internal/calls/:id/events", relayCallEvent);

export default {
  fetch: (request, env, ctx) => router.fetch(request, env, ctx) as Promise<Response>,
} satisfies ExportedHandler<Env>;
