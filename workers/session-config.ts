// The session config a secret or a call runs under: validated with the shared schema, given
// its defaults, size-capped, and hashed in canonical form (the hash binds secrets and tickets).
import { canonicalJson, sha256Hex } from "../protocol/encoding.ts";
import { DEFAULT_MODEL, SessionConfig, sessionKind } from "../protocol/session.ts";
import { ApiError, zodBadRequest } from "./errors.ts";

export const MAX_SESSION_BYTES = 48 * 1024;

export interface BoundSession {
  session: SessionConfig;
  sha256: string;
}

export async function bindSession(input: unknown, param = "session"): Promise<BoundSession> {
  const value = input ?? {};
  const parsed = SessionConfig.safeParse(value);
  if (!parsed.success) throw zodBadRequest(parsed.error, value, param);
  // A realtime session names its type and model, as OpenAI's echo of it does; a transcription
  // session has no model of its own (its transcription model sits in audio.input.transcription).
  const session: SessionConfig =
    sessionKind(parsed.data) === "transcription"
      ? parsed.data
      : { ...parsed.data, type: "realtime", model: parsed.data.model ?? DEFAULT_MODEL };
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

/** The `object` OpenAI gives a minted session of this kind. */
export function sessionObjectName(session: SessionConfig): string {
  return sessionKind(session) === "transcription" ? "realtime.transcription_session" : "realtime.session";
}
