// CORS for the calls endpoints, so a page on another origin can place a call with its client
// secret. client_secrets stays server-only: it never answers a preflight and sends no CORS
// headers, so a browser cannot read it. EARSHOT_CORS_ORIGINS narrows the allowed origins.
import type { EdgeConfig } from "./config.ts";
import { forbidden } from "./errors.ts";

const ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS = "Authorization, Content-Type, If-Match";
const EXPOSE_HEADERS = "Location, Retry-After, Content-Type";
const MAX_AGE_SECONDS = "600";

export function isCorsPath(pathname: string): boolean {
  return pathname === "/v1/realtime/calls" || pathname.startsWith("/v1/realtime/calls/");
}

function allowedOrigin(config: EdgeConfig, origin: string): string | undefined {
  if (config.corsOrigins === "*") return "*";
  return config.corsOrigins.has(origin) ? origin : undefined;
}

/** Refuses a browser request from an origin outside EARSHOT_CORS_ORIGINS before any work. */
export function checkOrigin(config: EdgeConfig, request: Request): void {
  const origin = request.headers.get("origin");
  if (origin !== null && !allowedOrigin(config, origin)) {
    throw forbidden("origin_not_allowed", "This origin may not use the calls endpoints.");
  }
}

export function preflight(config: EdgeConfig, request: Request): Response {
  checkOrigin(config, request);
  const origin = request.headers.get("origin");
  const headers = new Headers({
    "Access-Control-Allow-Methods": ALLOW_METHODS,
    "Access-Control-Allow-Headers": ALLOW_HEADERS,
    "Access-Control-Max-Age": MAX_AGE_SECONDS,
  });
  if (origin !== null) headers.set("Access-Control-Allow-Origin", allowedOrigin(config, origin)!);
  if (config.corsOrigins !== "*") headers.set("Vary", "Origin");
  return new Response(null, { status: 204, headers });
}

export function withCors(config: EdgeConfig, request: Request, response: Response): Response {
  const origin = request.headers.get("origin");
  const allowed = origin === null ? undefined : allowedOrigin(config, origin);
  if (!allowed) return response;
  const out = new Response(response.body, response);
  out.headers.set("Access-Control-Allow-Origin", allowed);
  out.headers.set("Access-Control-Expose-Headers", EXPOSE_HEADERS);
  if (allowed !== "*") out.headers.append("Vary", "Origin");
  return out;
}
