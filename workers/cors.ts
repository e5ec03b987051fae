// CORS for the calls endpoints, so a page on another origin can place a call with its client
// secret. client_secrets stays server-only: it never answers a preflight and sends no CORS
// headers, so a browser cannot read it (OpenAI's clients mint on the app's server, with its
// API key). EARSHOT_CORS_ORIGINS narrows the allowed origins.
import type { EdgeConfig } from "./config.ts";
import { forbidden } from "./errors.ts";

const ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS";
const EXPOSE_HEADERS = "Location, Retry-After, Content-Type";
const MAX_AGE_SECONDS = "600";

/**
 * Request headers a page may send, by name and by prefix. OpenAI's browser clients send more
 * than the edge reads: `@openai/agents-realtime` adds X-OpenAI-Agents-SDK to its SDP POST, and
 * the `openai` package sends X-Stainless-* (Lang, Package-Version, OS, Arch, Runtime,
 * Runtime-Version, Retry-Count, Timeout, Helper-Method, Poll-Helper, …), OpenAI-Organization,
 * OpenAI-Project, OpenAI-Beta and Idempotency-Key. Their prefixes rather than today's names, so
 * the next SDK version's header does not break every app; but not any header a page asks for:
 * the preflight is what stops a foreign page from making a browser send a header the edge
 * trusts (Earshot-Geo under EARSHOT_DEV, say), and reflecting whatever is requested would hand
 * that to every origin for every header a route starts to read later.
 */
const ALLOWED_HEADERS: ReadonlySet<string> = new Set([
  "authorization",
  "content-type",
  "if-match",
  "idempotency-key",
]);
const ALLOWED_HEADER_PREFIXES = ["x-stainless-", "openai-", "x-openai-"] as const;
/**
 * Most headers one preflight may ask for. The `openai` package asks for about a dozen; past the
 * cap the answer names only ALLOWED_HEADERS, so the browser refuses the request rather than
 * the edge echoing an unbounded list.
 */
export const MAX_REQUESTED_HEADERS = 64;
/** Longest header name echoed back: far above any SDK's, so an answer stays small. */
export const MAX_HEADER_NAME_LENGTH = 128;
/** An HTTP field name (RFC 9110 token), lower-cased as browsers send it. */
const HEADER_NAME = new RegExp(`^[!#$%&'*+.^_\`|~0-9a-z-]{1,${MAX_HEADER_NAME_LENGTH}}$`);
const BASE_ALLOW_HEADERS = [...ALLOWED_HEADERS].join(", ");

export function isCorsPath(pathname: string): boolean {
  return pathname === "/v1/realtime/calls" || pathname.startsWith("/v1/realtime/calls/");
}

function allowedOrigin(config: EdgeConfig, origin: string): string | undefined {
  if (config.corsOrigins === "*") return "*";
  return config.corsOrigins.has(origin) ? origin : undefined;
}

function isAllowedHeader(name: string): boolean {
  return (
    ALLOWED_HEADERS.has(name) ||
    (HEADER_NAME.test(name) && ALLOWED_HEADER_PREFIXES.some((prefix) => name.startsWith(prefix)))
  );
}

/**
 * The preflight's Access-Control-Allow-Headers: the fixed names, plus each requested header
 * under an allowed prefix. A header outside them is left out, so Chromium's console names it
 * ("… is not allowed by Access-Control-Allow-Headers").
 */
export function allowHeaders(requested: string | null): string {
  if (requested === null) return BASE_ALLOW_HEADERS;
  const names = requested
    .split(",")
    .map((name) => name.trim().toLowerCase())
    .filter((name) => name !== "");
  if (names.length > MAX_REQUESTED_HEADERS) return BASE_ALLOW_HEADERS;
  const extra = names.filter((name) => !ALLOWED_HEADERS.has(name) && isAllowedHeader(name));
  return [BASE_ALLOW_HEADERS, ...new Set(extra)].join(", ");
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
  const headers = new Headers({
    "Access-Control-Allow-Methods": ALLOW_METHODS,
    "Access-Control-Allow-Headers": allowHeaders(request.headers.get("access-control-request-headers")),
    "Access-Control-Max-Age": MAX_AGE_SECONDS,
    // The answer depends on the headers asked for; withCors adds Origin when it matters.
    Vary: "Access-Control-Request-Headers",
  });
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
