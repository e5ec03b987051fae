// The session config a secret or a call runs under: validated with the shared schema, given
// its defaults, size-capped, and hashed in canonical form (the hash binds secrets and tickets).
import { canonicalJson, sha256Hex } from "../protocol/encoding.ts";
import { DEFAULT_MODEL, SessionConfig } from "../protocol/session.ts";
import { ApiError, zodBadRequest } from "./errors.ts";

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
