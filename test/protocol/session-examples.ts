// OpenAI's GA session objects as its documentation and openai-node show them (the reference's
// examples, the doc comments of `resources/realtime/*.d.ts`, the generated tests' "required and
// optional params"), and wrong ones with the parameter OpenAI names. Fed to the mint (workerd)
// and to `session.update` through a relay, so both accept and refuse the same things.

/** Valid sessions, each one documented shape. */
export const VALID_SESSIONS: Record<string, Record<string, unknown>> = {
  "the client_secrets reference example": {
    type: "realtime",
    model: "gpt-realtime",
    instructions: "You are a friendly assistant.",
  },
  "every field, as openai-node's generated test fills them": {
    type: "realtime",
    audio: {
      input: {
        format: { rate: 24000, type: "audio/pcm" },
        noise_reduction: { type: "near_field" },
        transcription: { language: "language", model: "whisper-1", prompt: "prompt" },
        turn_detection: {
          type: "server_vad",
          create_response: true,
          idle_timeout_ms: 5000,
          interrupt_response: true,
          prefix_padding_ms: 0,
          silence_duration_ms: 0,
          threshold: 0,
        },
      },
      output: { format: { rate: 24000, type: "audio/pcm" }, speed: 0.25, voice: "alloy" },
    },
    include: ["item.input_audio_transcription.logprobs"],
    instructions: "instructions",
    max_output_tokens: "inf",
    model: "gpt-realtime",
    output_modalities: ["text"],
    prompt: { id: "id", variables: { foo: "string" }, version: "version" },
    tool_choice: "none",
    tools: [{ description: "description", name: "name", parameters: {}, type: "function" }],
    tracing: "auto",
    truncation: "auto",
  },
  "a custom voice by id": { type: "realtime", audio: { output: { voice: { id: "voice_1234" } } } },
  "noise reduction turned off (the session.update doc comment)": {
    type: "realtime",
    audio: { input: { noise_reduction: null } },
  },
  "noise reduction with its strength": {
    type: "realtime",
    audio: { input: { noise_reduction: { type: "far_field", strength: 0.6 } } },
  },
  "semantic VAD with its eagerness": {
    type: "realtime",
    audio: {
      input: {
        turn_detection: {
          type: "semantic_vad",
          eagerness: "low",
          create_response: true,
          interrupt_response: false,
        },
      },
    },
  },
  "push-to-talk: turn detection off": { type: "realtime", audio: { input: { turn_detection: null } } },
  "server VAD that never answers by itself": {
    type: "realtime",
    audio: {
      input: {
        turn_detection: {
          type: "server_vad",
          threshold: 0.6,
          prefix_padding_ms: 300,
          silence_duration_ms: 500,
          idle_timeout_ms: null,
          create_response: false,
          interrupt_response: false,
        },
      },
    },
  },
  "G.711 μ-law in, A-law out": {
    type: "realtime",
    audio: {
      input: { format: { type: "audio/pcmu" } },
      output: { format: { type: "audio/pcma" }, speed: 1.5 },
    },
  },
  "a transcription session": {
    type: "transcription",
    audio: {
      input: {
        format: { type: "audio/pcm", rate: 24000 },
        noise_reduction: { type: "near_field" },
        transcription: {
          model: "gpt-4o-transcribe",
          language: "en",
          prompt: "expect words related to technology",
        },
        turn_detection: {
          type: "server_vad",
          threshold: 0.5,
          prefix_padding_ms: 300,
          silence_duration_ms: 500,
        },
      },
    },
    include: ["item.input_audio_transcription.logprobs"],
  },
  "a gpt-realtime-whisper transcription session (no VAD)": {
    type: "transcription",
    audio: {
      input: {
        transcription: { model: "gpt-realtime-whisper", delay: "low", languages: ["en", "fr"] },
        turn_detection: null,
      },
    },
  },
  "function and MCP tools, a forced function": {
    type: "realtime",
    tools: [
      {
        type: "function",
        name: "get_weather",
        description: "Get the current weather for a city.",
        parameters: {
          type: "object",
          properties: { city: { type: "string" } },
          required: ["city"],
          additionalProperties: false,
        },
      },
      {
        type: "mcp",
        server_label: "dmcp",
        server_description: "A Dungeons and Dragons MCP server to assist with dice rolling.",
        server_url: "https://dmcp-server.deno.dev/sse",
        require_approval: "never",
        allowed_tools: ["roll"],
      },
      {
        type: "mcp",
        server_label: "google_calendar",
        connector_id: "connector_googlecalendar",
        authorization: "ya29.example-oauth-token",
        require_approval: { never: { tool_names: ["search_events"], read_only: true } },
        headers: null,
        allowed_callers: ["direct"],
        defer_loading: false,
      },
    ],
    tool_choice: { type: "function", name: "get_weather" },
  },
  "an MCP tool forced, any of its tools": {
    type: "realtime",
    tools: [{ type: "mcp", server_label: "deepwiki", server_url: "https://mcp.deepwiki.com/mcp" }],
    tool_choice: { type: "mcp", server_label: "deepwiki", name: null },
  },
  "tool_choice required, a prompt template with its version": {
    type: "realtime",
    tool_choice: "required",
    prompt: { id: "pmpt_68ac2fa5c8a081958b6b0bee0c9a1b2f", version: "89", variables: { city: "Paris" } },
  },
  "tracing configured, retention-ratio truncation": {
    type: "realtime",
    tracing: { workflow_name: "support-bot", group_id: "grp_123", metadata: { customer: "c_42" } },
    truncation: { type: "retention_ratio", retention_ratio: 0.8, token_limits: { post_instructions: 8000 } },
  },
  "tracing off, truncation disabled, a token cap": {
    type: "realtime",
    tracing: null,
    truncation: "disabled",
    max_output_tokens: 4096,
    output_modalities: ["audio"],
  },
  "a reasoning model": {
    type: "realtime",
    model: "gpt-realtime-2",
    reasoning: { effort: "low" },
    parallel_tool_calls: true,
  },
};

/** Wrong sessions and the parameter OpenAI names for each. */
export const INVALID_SESSIONS: { name: string; session: unknown; code: string; param: string }[] = [
  {
    name: "an unknown field",
    session: { type: "realtime", temprature: 0.8 },
    code: "unknown_parameter",
    param: "session.temprature",
  },
  {
    name: "a beta-era field",
    session: { type: "realtime", modalities: ["audio"] },
    code: "unknown_parameter",
    param: "session.modalities",
  },
  {
    name: "an unknown session type",
    session: { type: "conversation" },
    code: "invalid_value",
    param: "session.type",
  },
  {
    name: "a turn detection mode that does not exist",
    session: { type: "realtime", audio: { input: { turn_detection: { type: "fast_vad" } } } },
    code: "invalid_value",
    param: "session.audio.input.turn_detection.type",
  },
  {
    name: "eagerness on server VAD",
    session: {
      type: "realtime",
      audio: { input: { turn_detection: { type: "server_vad", eagerness: "high" } } },
    },
    code: "unknown_parameter",
    param: "session.audio.input.turn_detection.eagerness",
  },
  {
    name: "a threshold on semantic VAD",
    session: {
      type: "realtime",
      audio: { input: { turn_detection: { type: "semantic_vad", threshold: 0.5 } } },
    },
    code: "unknown_parameter",
    param: "session.audio.input.turn_detection.threshold",
  },
  {
    name: "a voice that is a number",
    session: { type: "realtime", audio: { output: { voice: 7 } } },
    code: "invalid_type",
    param: "session.audio.output.voice",
  },
  {
    name: "a custom voice without its id",
    session: { type: "realtime", audio: { output: { voice: { name: "mine" } } } },
    code: "missing_required_parameter",
    param: "session.audio.output.voice.id",
  },
  {
    name: "instructions that are not a string",
    session: { type: "realtime", instructions: 42 },
    code: "invalid_type",
    param: "session.instructions",
  },
  {
    name: "a voice in a transcription session",
    session: { type: "transcription", audio: { output: { voice: "alloy" } } },
    code: "unknown_parameter",
    param: "session.audio.output",
  },
  {
    name: "instructions in a transcription session",
    session: { type: "transcription", instructions: "Be brief." },
    code: "unknown_parameter",
    param: "session.instructions",
  },
  {
    name: "a PCM rate other than 24 kHz",
    session: { type: "realtime", audio: { input: { format: { type: "audio/pcm", rate: 16000 } } } },
    code: "invalid_value",
    param: "session.audio.input.format.rate",
  },
  {
    name: "a function tool without a name",
    session: { type: "realtime", tools: [{ type: "function", description: "no name" }] },
    code: "missing_required_parameter",
    param: "session.tools[0].name",
  },
  {
    name: "an MCP tool with no server",
    session: { type: "realtime", tools: [{ type: "mcp", server_label: "nowhere" }] },
    code: "missing_required_parameter",
    param: "session.tools[0].server_url",
  },
  {
    name: "a tool choice that is no mode",
    session: { type: "realtime", tool_choice: "sometimes" },
    code: "invalid_value",
    param: "session.tool_choice",
  },
  {
    name: "max_output_tokens neither a number nor inf",
    session: { type: "realtime", max_output_tokens: "lots" },
    code: "invalid_value",
    param: "session.max_output_tokens",
  },
  {
    name: "text and audio at once",
    session: { type: "realtime", output_modalities: ["audio", "text"] },
    code: "invalid_value",
    param: "session.output_modalities",
  },
  {
    name: "a retention ratio without its ratio",
    session: { type: "realtime", truncation: { type: "retention_ratio" } },
    code: "missing_required_parameter",
    param: "session.truncation.retention_ratio",
  },
  {
    name: "tracing that is neither auto nor an object",
    session: { type: "realtime", tracing: "on" },
    code: "invalid_value",
    param: "session.tracing",
  },
];
