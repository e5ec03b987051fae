// Reading request bodies with a hard cap, so an oversized body is refused (413) before it is
// buffered, whatever Content-Length claims, and a deadline, so a client that trickles its body
// (or stops sending) gets a 408 instead of holding the request open for as long as it likes:
// workerd itself puts no limit on how slowly a body may arrive. JSON bodies are then parsed and
// validated against their schema, each failure a 400 naming what was wrong.
import type { z } from "zod";
import { ApiError, badRequest, zodBadRequest } from "./errors.ts";

/** The whole body must arrive within this long of the first read. */
export const BODY_DEADLINE_MS = 10_000;

export function tooLarge(limit: number, what = "request body"): ApiError {
  return new ApiError(413, "payload_too_large", `The ${what} is larger than ${limit} bytes.`);
}

export function bodyTimeout(deadlineMs: number, what = "request body"): ApiError {
  return new ApiError(408, "request_timeout", `The ${what} did not arrive within ${deadlineMs} ms.`);
}

/**
 * The request's body stream, or null. itty-router's request proxy throws on a null property
 * (it calls `.bind` on it), so a POST without a body would otherwise be a 500.
 */
function bodyOf(request: Request): ReadableStream<Uint8Array> | null {
  try {
    return request.body;
  } catch {
    return null;
  }
}

export async function readCapped(
  request: Request,
  limit: number,
  what?: string,
  deadlineMs = BODY_DEADLINE_MS,
): Promise<Uint8Array<ArrayBuffer>> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooLarge(limit, what);
  const body = bodyOf(request);
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let timer: ReturnType<typeof setTimeout> | null = null;
  const expired = new Promise<"expired">((resolve) => {
    timer = setTimeout(() => resolve("expired"), deadlineMs);
  });
  try {
    for (;;) {
      const next = await Promise.race([reader.read(), expired]);
      if (next === "expired") {
        void reader.cancel().catch(() => {});
        throw bodyTimeout(deadlineMs, what);
      }
      const { done, value } = next;
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        await reader.cancel();
        throw tooLarge(limit, what);
      }
      chunks.push(value);
    }
  } finally {
    clearTimeout(timer);
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** Decodes UTF-8 strictly: a body that is not text is bad input, not something to guess at. */
export function decodeText(bytes: Uint8Array, what: string, param?: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new ApiError(
      400,
      "invalid_encoding",
      `The ${what} is not valid UTF-8.`,
      param === undefined ? {} : { param },
    );
  }
}

/** The media type of a request, lower-cased, without parameters; "" when there is none. */
export function mediaType(request: Request): string {
  return (request.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
}

export function unsupportedMediaType(expected: string): ApiError {
  return new ApiError(415, "unsupported_media_type", `The Content-Type must be ${expected}.`);
}

/**
 * How deeply JSON from a client may nest arrays and objects. The deepest legitimate part of a
 * request is a session's tool schema (parameters → properties → field → items → …), a handful of
 * levels; 64 leaves room for far deeper ones. Somewhere between 1000 and 3000 levels the recursive
 * steps after parsing (canonical JSON, structured clone over RPC) ran out of stack and the client
 * saw a 500, with a stack trace logged per request.
 */
export const MAX_JSON_DEPTH = 64;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

/**
 * Whether `text` has more than `max` arrays and objects open at once, counting brackets outside
 * strings. A loop, not a recursion, so the check cannot run out of stack itself; text that is not
 * JSON may be counted wrongly, and JSON.parse then refuses it anyway.
 */
function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) {
      inString = true;
    } else if (c === OPEN_BRACKET || c === OPEN_BRACE) {
      if (++depth > max) return true;
    } else if (c === CLOSE_BRACKET || c === CLOSE_BRACE) {
      depth--;
    }
  }
  return false;
}

/**
 * JSON text as a value: 400 `json_too_deep` for text nested past MAX_JSON_DEPTH (checked before
 * parsing), 400 `invalid_json` for text that is not JSON.
 */
export function parseJson(text: string, what = "body", param?: string): unknown {
  if (nestsDeeperThan(text, MAX_JSON_DEPTH)) {
    throw badRequest(
      "json_too_deep",
      `The ${what} nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep.`,
      param,
    );
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    if (error instanceof SyntaxError)
      throw badRequest("invalid_json", `The ${what} is not valid JSON.`, param);
    throw error;
  }
}

export interface JsonBodyOptions {
  /** What an empty body stands for; such a body needs no Content-Type. Unset: an empty body is not JSON. */
  ifEmpty?: unknown;
  /** Runs on the body's text before it is parsed, e.g. to check a signature over exactly those bytes. */
  verify?: (text: string) => Promise<void>;
}

/**
 * A JSON request body of at most `limit` bytes, as a value `schema` accepts: 415 for another
 * Content-Type, 413 past the limit, 400 for text that is not JSON (or nests too deep) or a value
 * the schema refuses.
 */
export async function readJson<S extends z.ZodType>(
  request: Request,
  schema: S,
  limit: number,
  options: JsonBodyOptions = {},
): Promise<z.output<S>> {
  const mayBeEmpty = "ifEmpty" in options;
  const requireJson = () => {
    if (mediaType(request) !== "application/json") throw unsupportedMediaType("application/json");
  };
  if (!mayBeEmpty) requireJson();
  const bytes = await readCapped(request, limit);
  let value: unknown;
  if (mayBeEmpty && bytes.byteLength === 0) {
    value = options.ifEmpty;
  } else {
    if (mayBeEmpty) requireJson();
    const text = decodeText(bytes, "body");
    await options.verify?.(text);
    value = parseJson(text);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw zodBadRequest(parsed.error, value);
  return parsed.data;
}
