// The session config a secret or a call runs under: validated with the shared schema, given
// its defaults, size-capped, and hashed in canonical form (the hash binds secrets and tickets).
import type { z } from "zod";
import { canonicalJson, sha256Hex } from "../protocol/encoding.ts";
import { DEFAULT_MODEL, SessionConfig } from "../protocol/session.ts";
import { ApiError, badRequest } from "./errors.ts";

export const MAX_SESSION_BYTES = 48 * 1024;

export interface BoundSession {
  session: SessionConfig;
  sha256: string;
}

export async function bindSession(input: unknown, param = "session"): Promise<BoundSession> {
  const parsed = SessionConfig.safeParse(input ?? {});
  if (!parsed.success) throw zodBadRequest(parsed.error, param);
  const session: SessionConfig = {
    ...parsed.data,
    type: "realtime",
    model: parsed.data.model ?? DEFAULT_MODEL,
  };
  const canonical = canonicalJson(session);
  if (new TextEncoder().encode(canonical).byteLength > MAX_SESSION_BYTES) {
    throw new ApiError(
      413,
      "session_too_large",
      `The session config is larger than ${MAX_SESSION_BYTES} bytes.`,
      {
        param,
      },
    );
  }
  return { session, sha256: await sha256Hex(canonical) };
}

/** The first problem zod found, as a 400 naming the offending field. */
export function zodBadRequest(error: z.ZodError, prefix?: string): ApiError {
  const issue = error.issues[0];
  const path = [...(prefix ? [prefix] : []), ...(issue?.path ?? []).map(String)].join(".");
  return badRequest(
    "invalid_value",
    issue ? `${path || "body"}: ${issue.message}` : "Invalid body.",
    path || undefined,
  );
}
