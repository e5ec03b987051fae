// What a built-in agent session is configured to do, read from OpenAI's GA session object: its
// defaults (shaped as OpenAI's `session.created` shows them), the turn detection it runs, the
// function tools it may call and whether transcription was asked for.
import { z } from "zod";
import type { SessionConfig } from "../protocol/session.ts";
import { PCM_SAMPLE_RATE } from "../relay/media/audio-format.ts";

export const AGENT_MODEL = "earshot-agent";
export const AGENT_VOICE = "espeak";
const DEFAULT_INSTRUCTIONS =
  "You are Earshot's built-in agent, a test double for the OpenAI Realtime API. You speak with eSpeak, call the session's tools with arguments generated from their schemas, and do not understand speech.";
/** OpenAI's client secrets and sessions last this long unless told otherwise. */
const SESSION_LIFETIME_S = 60 * 60;

export const DEFAULT_SERVER_VAD = {
  type: "server_vad" as const,
  threshold: 0.5,
  prefix_padding_ms: 300,
  silence_duration_ms: 500,
  idle_timeout_ms: null,
  create_response: true,
  interrupt_response: true,
};
const DEFAULT_SEMANTIC_VAD = {
  type: "semantic_vad" as const,
  eagerness: "auto" as const,
  create_response: true,
  interrupt_response: true,
};

/**
 * Semantic VAD's eagerness as the silence that ends a turn. OpenAI scores whether the words so
 * far are a finished thought and waits up to 8 s (low), 4 s (medium, auto) or 2 s (high) when
 * they are not; the built-in agent hears no words, so it waits a fixed share of that: long
 * enough to tell the settings apart in a test, short enough that a demo does not stall.
 */
export const SEMANTIC_VAD_SILENCE_MS = { low: 2000, medium: 1000, auto: 1000, high: 400 } as const;
export type Eagerness = keyof typeof SEMANTIC_VAD_SILENCE_MS;

/** How the agent's own detector and response logic behave for the session's turn detection. */
export interface TurnPolicy {
  type: "server_vad" | "semantic_vad";
  threshold: number;
  prefixPaddingMs: number;
  silenceDurationMs: number;
  createResponse: boolean;
  interruptResponse: boolean;
  /** server_vad only (as OpenAI): silence after the reply's playback that prompts a response. */
  idleTimeoutMs: number | null;
}

type TurnDetectionIn = Record<string, unknown> | null | undefined;

/** The session's turn detection with OpenAI's defaults filled in, as session.updated shows it. */
export function effectiveTurnDetection(td: TurnDetectionIn): Record<string, unknown> | null {
  if (td === null) return null;
  if (td?.type === "semantic_vad") return { ...DEFAULT_SEMANTIC_VAD, ...td };
  return { ...DEFAULT_SERVER_VAD, ...td };
}

export function turnPolicy(td: TurnDetectionIn): TurnPolicy | null {
  const full = effectiveTurnDetection(td);
  if (!full) return null;
  const bool = (key: string, fallback: boolean) => (typeof full[key] === "boolean" ? full[key] : fallback);
  const num = (key: string, fallback: number) => (typeof full[key] === "number" ? full[key] : fallback);
  if (full.type === "semantic_vad") {
    const eagerness = (
      typeof full.eagerness === "string" && full.eagerness in SEMANTIC_VAD_SILENCE_MS
        ? full.eagerness
        : "auto"
    ) as Eagerness;
    return {
      type: "semantic_vad",
      threshold: DEFAULT_SERVER_VAD.threshold,
      prefixPaddingMs: DEFAULT_SERVER_VAD.prefix_padding_ms,
      silenceDurationMs: SEMANTIC_VAD_SILENCE_MS[eagerness],
      createResponse: bool("create_response", true),
      interruptResponse: bool("interrupt_response", true),
      idleTimeoutMs: null,
    };
  }
  const idle = full.idle_timeout_ms;
  return {
    type: "server_vad",
    threshold: num("threshold", DEFAULT_SERVER_VAD.threshold),
    prefixPaddingMs: num("prefix_padding_ms", DEFAULT_SERVER_VAD.prefix_padding_ms),
    silenceDurationMs: num("silence_duration_ms", DEFAULT_SERVER_VAD.silence_duration_ms),
    createResponse: bool("create_response", true),
    interruptResponse: bool("interrupt_response", true),
    idleTimeoutMs: typeof idle === "number" && idle > 0 ? idle : null,
  };
}

/** The session a new connection starts with (`?intent=transcription` starts a transcription one). */
export function defaultSession(type: "realtime" | "transcription"): SessionConfig {
  const format = { type: "audio/pcm" as const, rate: PCM_SAMPLE_RATE };
  if (type === "transcription") {
    return {
      type: "transcription",
      audio: {
        input: { format, transcription: null, noise_reduction: null, turn_detection: DEFAULT_SERVER_VAD },
      },
      include: null,
    } as unknown as SessionConfig;
  }
  return {
    type: "realtime",
    model: AGENT_MODEL,
    output_modalities: ["audio"],
    instructions: DEFAULT_INSTRUCTIONS,
    tools: [],
    tool_choice: "auto",
    max_output_tokens: "inf",
    tracing: null,
    truncation: "auto",
    prompt: null,
    include: null,
    audio: {
      input: { format, transcription: null, noise_reduction: null, turn_detection: DEFAULT_SERVER_VAD },
      output: { format, voice: AGENT_VOICE, speed: 1 },
    },
  } as SessionConfig;
}

/** OpenAI's `session` object for session.created/updated: the effective configuration in full. */
export function sessionObject(
  session: SessionConfig,
  id: string,
  createdAt: number,
): Record<string, unknown> {
  const audio = (session.audio ?? {}) as Record<string, Record<string, unknown> | undefined>;
  const input = {
    ...audio.input,
    turn_detection: effectiveTurnDetection(audio.input?.turn_detection as TurnDetectionIn),
  };
  if (sessionType(session) === "transcription") {
    // OpenAI's transcription session has no model, voice, tools or output: only its input.
    return {
      type: "transcription",
      object: "realtime.transcription_session",
      id,
      expires_at: createdAt + SESSION_LIFETIME_S,
      audio: { input },
      include: (session as { include?: unknown }).include ?? null,
    };
  }
  return {
    ...session,
    type: "realtime",
    object: "realtime.session",
    id,
    expires_at: createdAt + SESSION_LIFETIME_S,
    audio: { ...audio, input },
  };
}

export function sessionType(session: SessionConfig): "realtime" | "transcription" {
  return (session as { type?: unknown }).type === "transcription" ? "transcription" : "realtime";
}

/**
 * Whether input transcription was asked for: `audio.input.transcription` (GA), the beta
 * `input_audio_transcription`, or a transcription session (which is nothing but that).
 */
export function transcriptionRequested(session: SessionConfig): boolean {
  if (sessionType(session) === "transcription") return true;
  const ga = (session.audio?.input as { transcription?: unknown } | undefined)?.transcription;
  const beta = (session as { input_audio_transcription?: unknown }).input_audio_transcription;
  return (ga !== undefined && ga !== null) || (beta !== undefined && beta !== null);
}

// ─── Tools ─────────────────────────────────────────────────────────────────────────────────────

export const FunctionTool = z.looseObject({
  type: z.literal("function"),
  name: z.string().min(1).max(64),
  description: z.string().optional(),
  parameters: z.unknown().optional(),
});
export type FunctionTool = z.infer<typeof FunctionTool>;

export const ToolChoice = z.union([
  z.enum(["auto", "none", "required"]),
  z.looseObject({ type: z.literal("function"), name: z.string().min(1) }),
  z.looseObject({ type: z.literal("mcp") }),
]);
export type ToolChoice = z.infer<typeof ToolChoice>;

/** The function tools among `tools` (MCP tools are OpenAI's to run; the agent has none). */
export function functionTools(tools: unknown): FunctionTool[] {
  if (!Array.isArray(tools)) return [];
  const out: FunctionTool[] = [];
  for (const tool of tools) {
    const parsed = FunctionTool.safeParse(tool);
    if (parsed.success) out.push(parsed.data);
  }
  return out;
}

/** Checks `tools` and `tool_choice` of a session or response; the problem and its param, or null. */
export function toolProblem(
  config: { tools?: unknown; tool_choice?: unknown },
  prefix: string,
): { message: string; param: string } | null {
  if (config.tools !== undefined) {
    if (!Array.isArray(config.tools)) return { message: "tools must be an array.", param: `${prefix}.tools` };
    for (const [i, tool] of config.tools.entries()) {
      if ((tool as { type?: unknown })?.type !== "function") continue;
      const parsed = FunctionTool.safeParse(tool);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        return {
          message: `Invalid function tool: ${issue.message}.`,
          param: [`${prefix}.tools[${i}]`, ...issue.path].join("."),
        };
      }
    }
  }
  if (config.tool_choice !== undefined && !ToolChoice.safeParse(config.tool_choice).success) {
    return {
      message: `tool_choice must be "auto", "none", "required" or {"type": "function", "name": …}.`,
      param: `${prefix}.tool_choice`,
    };
  }
  return null;
}

/**
 * The function the next response calls, or null to answer instead. `required` and a named
 * function always call; `auto` calls unless the conversation's last item is a tool's output
 * (then the reply uses it), so an app's tool loop ends as it does with a real model. Which
 * function: the named one, else the session's function tools in turn (the first call uses the
 * first tool, the next the second, …), so an app can exercise every tool without a model.
 */
export function toolToCall(
  tools: FunctionTool[],
  choice: ToolChoice,
  lastItemType: string | undefined,
  callsSoFar: number,
): FunctionTool | null {
  if (tools.length === 0 || choice === "none") return null;
  if (typeof choice === "object") {
    if (choice.type !== "function") return null;
    return tools.find((t) => t.name === choice.name) ?? null;
  }
  if (choice === "auto" && lastItemType === "function_call_output") return null;
  return tools[callsSoFar % tools.length]!;
}
