// The inference bridge's configuration, resolved once at relay start from the environment.
// INFERENCE_URL unset means the built-in agent on ws://127.0.0.1:8791 (DESIGN.md).
import { z } from "zod";

export interface InferenceConfig {
  url: string;
  /** Sent as `Authorization: Bearer …`; the built-in agent needs none. */
  apiKey: string | undefined;
  /** Extra upgrade headers (e.g. `OpenAI-Beta`, a gateway's routing header). */
  headers: Record<string, string>;
  connectTimeoutMs: number;
  /** Reconnect attempts after a retryable failure, before the call ends. */
  maxRetries: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /**
   * How often an open upstream is pinged. An upstream that sends nothing (no pong, no event)
   * for a whole interval after a ping has stalled: the socket is dropped and the retry loop runs.
   */
  pingIntervalMs: number;
  /** The relay's own uplink VAD for barge-in: Silero, an energy fallback, or off. */
  relayVad: "silero" | "energy" | "off";
  /** Silence uplink audio that is only the assistant's own echo, so no VAD hears it. */
  echoSuppression: boolean;
}

export const DEFAULT_AGENT_URL = "ws://127.0.0.1:8791/v1/realtime";

const headerMap = z
  .string()
  .transform((text, ctx) => {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      ctx.addIssue({ code: "custom", message: 'must be a JSON object like {"OpenAI-Beta":"…"}' });
      return z.NEVER;
    }
  })
  .pipe(z.record(z.string().regex(/^[A-Za-z0-9-]{1,64}$/), z.string().max(1024)));

const InferenceEnv = z.object({
  INFERENCE_URL: z.url({ protocol: /^wss?$/ }).default(DEFAULT_AGENT_URL),
  INFERENCE_API_KEY: z.string().min(1).optional(),
  INFERENCE_HEADERS: headerMap.optional(),
  INFERENCE_CONNECT_TIMEOUT_MS: z.coerce.number().int().min(100).max(60_000).default(5000),
  INFERENCE_MAX_RETRIES: z.coerce.number().int().min(0).max(10).default(3),
  INFERENCE_RETRY_BASE_MS: z.coerce.number().int().min(10).max(10_000).default(250),
  INFERENCE_PING_INTERVAL_MS: z.coerce.number().int().min(100).max(60_000).default(5000),
  RELAY_VAD: z.enum(["silero", "energy", "off"]).default("silero"),
  RELAY_ECHO_SUPPRESSION: z.enum(["0", "1"]).default("1"),
});

/** Throws an Error naming the bad variable. Empty strings count as unset. */
export function inferenceConfigFromEnv(env: Record<string, string | undefined>): InferenceConfig {
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const result = InferenceEnv.safeParse(present);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new Error(`Invalid ${String(issue.path[0])}: ${issue.message}`);
  }
  const e = result.data;
  return {
    url: e.INFERENCE_URL,
    apiKey: e.INFERENCE_API_KEY,
    headers: e.INFERENCE_HEADERS ?? {},
    connectTimeoutMs: e.INFERENCE_CONNECT_TIMEOUT_MS,
    maxRetries: e.INFERENCE_MAX_RETRIES,
    retryBaseMs: e.INFERENCE_RETRY_BASE_MS,
    retryMaxMs: 4000,
    pingIntervalMs: e.INFERENCE_PING_INTERVAL_MS,
    relayVad: e.RELAY_VAD,
    echoSuppression: e.RELAY_ECHO_SUPPRESSION === "1",
  };
}
