// Expected failures are thrown as ApiError (itty-router's StatusError shape: an Error with a
// `status`) and turned into OpenAI's error envelope in one place, `errorResponse`. Anything
// else is a bug: it is logged here and the client gets a generic 500, never a stack.
import type { z } from "zod";
import { paramProblem } from "../protocol/param-problem.ts";
import type { ErrorBody } from "../protocol/relay-api.ts";
import { ConfigError } from "./config.ts";
import { log } from "./log.ts";

export type ErrorType =
  "invalid_request_error" | "authentication_error" | "permission_error" | "rate_limit_error" | "server_error";

/** What an ApiError carries, as plain data so it can cross a Durable Object RPC boundary. */
export interface ApiErrorData {
  status: number;
  type: ErrorType;
  code: string;
  message: string;
  param: string | null;
  /** Response headers the error needs (Retry-After), if any. */
  headers?: Record<string, string>;
}

const typeForStatus = (status: number): ErrorType =>
  status === 401
    ? "authentication_error"
    : status === 403
      ? "permission_error"
      : status === 429
        ? "rate_limit_error"
        : status >= 500
          ? "server_error"
          : "invalid_request_error";

export class ApiError extends Error {
  readonly status: number;
  readonly type: ErrorType;
  readonly code: string;
  readonly param: string | null;
  readonly headers: Record<string, string>;

  constructor(
    status: number,
    code: string,
    message: string,
    options: { param?: string; type?: ErrorType; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.type = options.type ?? typeForStatus(status);
    this.param = options.param ?? null;
    this.headers = options.headers ?? {};
  }

  static from(data: ApiErrorData): ApiError {
    return new ApiError(data.status, data.code, data.message, {
      type: data.type,
      ...(data.param === null ? {} : { param: data.param }),
      ...(data.headers ? { headers: data.headers } : {}),
    });
  }

  toData(): ApiErrorData {
    return {
      status: this.status,
      type: this.type,
      code: this.code,
      message: this.message,
      param: this.param,
      ...(Object.keys(this.headers).length > 0 ? { headers: this.headers } : {}),
    };
  }
}

export const badRequest = (code: string, message: string, param?: string) =>
  new ApiError(400, code, message, param === undefined ? {} : { param });
export const unauthorized = (code: string, message: string) =>
  new ApiError(401, code, message, { headers: { "WWW-Authenticate": 'Bearer realm="earshot"' } });
export const forbidden = (code: string, message: string) => new ApiError(403, code, message);
export const notFound = (message = "Not found.") => new ApiError(404, "not_found", message);
export const conflict = (code: string, message: string) => new ApiError(409, code, message);

/**
 * The first problem zod found in `input`, as a 400 in OpenAI's words naming the offending field
 * (`unknown_parameter`, `missing_required_parameter`, `invalid_type`, `invalid_value`).
 */
export function zodBadRequest(error: z.ZodError, input: unknown, prefix?: string): ApiError {
  const problem = paramProblem(error, input, prefix);
  return badRequest(problem.code, problem.message, problem.param ?? undefined);
}

export function errorEnvelope(error: ApiError): ErrorBody {
  return { error: { type: error.type, code: error.code, message: error.message, param: error.param } };
}

export function errorResponse(error: unknown, request?: Request): Response {
  let apiError: ApiError;
  if (error instanceof ApiError) {
    apiError = error;
  } else {
    const path = request ? new URL(request.url).pathname : undefined;
    if (error instanceof ConfigError) {
      log.error("edge misconfigured", { variable: error.variable, problem: error.message, path });
      apiError = new ApiError(500, "misconfigured", "The edge is misconfigured; the operator has been told.");
    } else {
      log.error("unhandled error", { error, path });
      apiError = new ApiError(500, "internal_error", "Something went wrong on the edge.");
    }
  }
  return Response.json(errorEnvelope(apiError), { status: apiError.status, headers: apiError.headers });
}
