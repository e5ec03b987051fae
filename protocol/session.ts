// The Realtime session config a client secret is minted with and a call runs under: OpenAI's GA
// `session` object, a realtime session (RealtimeSessionCreateRequest) or a transcription session
// (RealtimeTranscriptionSessionCreateRequest), field for field as openai-node's
// `resources/realtime` types describe them. Every documented shape is accepted and passed to the
// model whether or not Earshot acts on it; an unknown field or a wrong type is refused, as OpenAI
// refuses it, with the parameter named (see param-problem.ts). The edge caps the whole in bytes.
//
// `type` may be left out and means "realtime" (beta-era clients omit it; OpenAI's own default).
//
// One flat TypeScript type, `SessionConfig`, serves both kinds: what differs between them
// (which fields a transcription session may carry, which turn-detection fields go with which
// mode) is checked here, so code that reads a session never has to narrow a union first.
import { z } from "zod";

export const DEFAULT_MODEL = "gpt-realtime";
/** OpenAI's PCM format runs at 24 kHz only. */
export const PCM_RATE = 24_000;

// Limits of Earshot's own (OpenAI documents none); the session as a whole is capped by the edge.
export const MAX_INSTRUCTIONS_CHARS = 32_768;
export const MAX_TOOLS = 128;
export const MAX_NAME_CHARS = 128;

const name = z.string().min(1).max(MAX_NAME_CHARS);
const text = z.string().max(MAX_INSTRUCTIONS_CHARS);

/** `audio/pcm` (24 kHz), `audio/pcmu` or `audio/pcma`; `{}` is PCM. */
export const AudioFormat = z
  .strictObject({
    type: z.enum(["audio/pcm", "audio/pcmu", "audio/pcma"]).optional(),
    rate: z.literal(PCM_RATE).optional(),
  })
  .superRefine((format, ctx) => {
    if (format.rate !== undefined && format.type !== undefined && format.type !== "audio/pcm") {
      ctx.addIssue({ code: "unrecognized_keys", keys: ["rate"], path: [], input: format });
    }
  });

export const NoiseReduction = z
  .strictObject({
    type: z.enum(["near_field", "far_field"]).optional(),
    strength: z.number().min(0).optional(),
  })
  .nullable();

export const AudioTranscription = z
  .strictObject({
    model: name.optional(),
    language: z.string().min(1).max(32).optional(),
    languages: z.array(z.string().min(1).max(32)).max(64).optional(),
    prompt: text.optional(),
    keywords: z.array(z.string().max(256)).max(1000).optional(),
    delay: z.enum(["minimal", "low", "medium", "high", "xhigh"]).optional(),
  })
  .nullable();

const SERVER_VAD_ONLY = ["threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"] as const;

/**
 * `server_vad` (threshold, padding, silence, idle timeout) or `semantic_vad` (eagerness), both
 * with `create_response` and `interrupt_response`; `null` turns detection off (push-to-talk).
 */
export const TurnDetection = z
  .strictObject({
    type: z.enum(["server_vad", "semantic_vad"]),
    threshold: z.number().min(0).max(1).optional(),
    prefix_padding_ms: z.number().int().min(0).max(5000).optional(),
    silence_duration_ms: z.number().int().min(0).max(10_000).optional(),
    idle_timeout_ms: z
      .number()
      .int()
      .min(0)
      .max(24 * 3600 * 1000)
      .nullable()
      .optional(),
    create_response: z.boolean().optional(),
    interrupt_response: z.boolean().optional(),
    eagerness: z.enum(["low", "medium", "high", "auto"]).optional(),
  })
  .superRefine((td, ctx) => {
    // OpenAI's two modes are separate objects: a field of the other mode is an unknown parameter.
    const foreign =
      td.type === "semantic_vad"
        ? SERVER_VAD_ONLY.filter((key) => td[key] !== undefined)
        : td.eagerness !== undefined
          ? ["eagerness"]
          : [];
    if (foreign.length > 0) ctx.addIssue({ code: "unrecognized_keys", keys: foreign, path: [], input: td });
  })
  .nullable();

const AudioInput = z.strictObject({
  format: AudioFormat.optional(),
  noise_reduction: NoiseReduction.optional(),
  transcription: AudioTranscription.optional(),
  turn_detection: TurnDetection.optional(),
});

/** A built-in voice by name, or a custom voice `{ "id": "voice_…" }`. */
export const Voice = z.union([
  z.string().min(1).max(64),
  z.strictObject({ id: z.string().min(1).max(MAX_NAME_CHARS) }),
]);

const AudioOutput = z.strictObject({
  format: AudioFormat.optional(),
  voice: Voice.optional(),
  // OpenAI: 0.25 to 1.5.
  speed: z.number().min(0.25).max(1.5).optional(),
});

const Include = z.array(z.literal("item.input_audio_transcription.logprobs")).max(1).nullable();

/** OpenAI's function names: letters, digits, `_` and `-`, at most 64. */
const functionName = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "letters, digits, _ and - only, 1 to 64");

const FunctionTool = z.strictObject({
  type: z.literal("function"),
  name: functionName,
  description: text.optional(),
  /** A JSON Schema object; the model reads it, Earshot passes it on. */
  parameters: z.record(z.string(), z.unknown()).optional(),
});

const ToolFilter = z.strictObject({
  read_only: z.boolean().optional(),
  tool_names: z.array(z.string().max(MAX_NAME_CHARS)).max(MAX_TOOLS).optional(),
});

const McpTool = z
  .strictObject({
    type: z.literal("mcp"),
    server_label: name,
    server_url: z.url({ protocol: /^https?$/ }).optional(),
    connector_id: z
      .enum([
        "connector_dropbox",
        "connector_gmail",
        "connector_googlecalendar",
        "connector_googledrive",
        "connector_microsoftteams",
        "connector_outlookcalendar",
        "connector_outlookemail",
        "connector_sharepoint",
      ])
      .optional(),
    tunnel_id: name.optional(),
    server_description: text.optional(),
    authorization: z.string().max(8192).optional(),
    headers: z.record(z.string(), z.string().max(8192)).nullable().optional(),
    allowed_tools: z
      .union([z.array(z.string().max(MAX_NAME_CHARS)).max(MAX_TOOLS), ToolFilter])
      .nullable()
      .optional(),
    allowed_callers: z
      .array(z.enum(["direct", "programmatic"]))
      .max(2)
      .nullable()
      .optional(),
    require_approval: z
      .union([
        z.enum(["always", "never"]),
        z.strictObject({ always: ToolFilter.optional(), never: ToolFilter.optional() }),
      ])
      .nullable()
      .optional(),
    defer_loading: z.boolean().optional(),
  })
  .superRefine((tool, ctx) => {
    if (tool.server_url === undefined && tool.connector_id === undefined && tool.tunnel_id === undefined) {
      ctx.addIssue({
        code: "invalid_type",
        expected: "string",
        path: ["server_url"],
        message: "One of server_url, connector_id or tunnel_id is required",
        input: undefined,
      });
    }
  });

export const Tool = z.discriminatedUnion("type", [FunctionTool, McpTool]);

export const ToolChoice = z.union([
  z.enum(["none", "auto", "required"]),
  z.discriminatedUnion("type", [
    z.strictObject({ type: z.literal("function"), name: functionName }),
    z.strictObject({ type: z.literal("mcp"), server_label: name, name: name.nullable().optional() }),
  ]),
]);

const PromptVariable = z.union([
  z.string(),
  z.looseObject({ type: z.enum(["input_text", "input_image", "input_file"]) }),
]);

export const Prompt = z
  .strictObject({
    id: name,
    version: z.string().max(MAX_NAME_CHARS).nullable().optional(),
    variables: z.record(z.string(), PromptVariable).nullable().optional(),
  })
  .nullable();

export const Tracing = z
  .union([
    z.literal("auto"),
    z.strictObject({
      workflow_name: z
        .string()
        .max(MAX_NAME_CHARS * 2)
        .optional(),
      group_id: z
        .string()
        .max(MAX_NAME_CHARS * 2)
        .optional(),
      metadata: z.unknown().optional(),
    }),
  ])
  .nullable();

export const Truncation = z.union([
  z.enum(["auto", "disabled"]),
  z.strictObject({
    type: z.literal("retention_ratio"),
    retention_ratio: z.number().min(0).max(1),
    token_limits: z.strictObject({ post_instructions: z.number().int().min(0).optional() }).optional(),
  }),
]);

const realtimeFields = {
  type: z.literal("realtime").optional(),
  model: name.optional(),
  instructions: text.optional(),
  // OpenAI: ["audio"] (with a transcript) or ["text"]; not both at once.
  output_modalities: z
    .array(z.enum(["audio", "text"]))
    .min(1)
    .max(1)
    .optional(),
  max_output_tokens: z.union([z.number().int().min(1).max(4096), z.literal("inf")]).optional(),
  audio: z.strictObject({ input: AudioInput.optional(), output: AudioOutput.optional() }).optional(),
  include: Include.optional(),
  tools: z.array(Tool).max(MAX_TOOLS).optional(),
  tool_choice: ToolChoice.optional(),
  parallel_tool_calls: z.boolean().optional(),
  prompt: Prompt.optional(),
  reasoning: z
    .strictObject({ effort: z.enum(["minimal", "low", "medium", "high", "xhigh"]).optional() })
    .optional(),
  tracing: Tracing.optional(),
  truncation: Truncation.optional(),
};

export const RealtimeSessionConfig = z.strictObject(realtimeFields);

/** Input only: a transcription session has no voice, no instructions and no tools. */
export const TranscriptionSessionConfig = z.strictObject({
  type: z.literal("transcription"),
  audio: z.strictObject({ input: AudioInput.optional() }).optional(),
  include: Include.optional(),
});

/** What a call runs under, either kind, flat (see the file header). */
export type SessionConfig = Omit<z.output<typeof RealtimeSessionConfig>, "type"> & {
  type?: "realtime" | "transcription";
};

export const SessionConfig: z.ZodType<SessionConfig> = z.discriminatedUnion("type", [
  RealtimeSessionConfig,
  TranscriptionSessionConfig,
]);

export type SessionKind = "realtime" | "transcription";
export const sessionKind = (session: SessionConfig): SessionKind => session.type ?? "realtime";
