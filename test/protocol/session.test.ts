// The session schema on its own: OpenAI's documented shapes pass, wrong ones are named the way
// OpenAI names them, and every limit of Earshot's own holds at the limit and fails just past it.
// The same examples go through the mint (test/workers/client-secrets.test.ts) and through
// session.update on a real relay (test/relay/inference/session-schema.test.ts).
import { describe, expect, it } from "vitest";
import { paramProblem } from "../../protocol/param-problem.ts";
import { parseClientEvent } from "../../protocol/realtime.ts";
import { MAX_INSTRUCTIONS_CHARS, MAX_NAME_CHARS, MAX_TOOLS, SessionConfig } from "../../protocol/session.ts";
import { INVALID_SESSIONS, VALID_SESSIONS } from "./session-examples.ts";

function problemOf(session: unknown) {
  const parsed = SessionConfig.safeParse(session);
  return parsed.success ? null : paramProblem(parsed.error, session, "session");
}

describe("the GA session schema", () => {
  it.each(Object.entries(VALID_SESSIONS))("accepts %s, unchanged", (_name, session) => {
    const parsed = SessionConfig.safeParse(session);
    expect(parsed.success ? null : paramProblem(parsed.error, session, "session")).toBeNull();
    // Passed through: nothing dropped, nothing added.
    expect(parsed.data).toEqual(session);
  });

  it.each(INVALID_SESSIONS)("refuses $name, naming $param", ({ session, code, param }) => {
    expect(problemOf(session)).toMatchObject({ code, param });
  });

  it("says problems in OpenAI's words", () => {
    expect(problemOf({ type: "realtime", temprature: 0.8 })).toEqual({
      code: "unknown_parameter",
      message: "Unknown parameter: 'session.temprature'.",
      param: "session.temprature",
    });
    expect(problemOf({ instructions: 42 })?.message).toBe(
      "Invalid type for 'session.instructions': expected a string, but got an integer instead.",
    );
    expect(problemOf({ audio: { input: { turn_detection: { type: "fast_vad" } } } })?.message).toBe(
      "Invalid value for 'session.audio.input.turn_detection.type': 'fast_vad'. Supported values are: 'server_vad' and 'semantic_vad'.",
    );
    expect(problemOf({ tools: [{ type: "function" }] })?.message).toBe(
      "Missing required parameter: 'session.tools[0].name'.",
    );
  });

  it("a session.update event reports the same problem, as an error event would carry it", () => {
    const parsed = parseClientEvent(
      JSON.stringify({
        type: "session.update",
        event_id: "evt_1",
        session: { type: "realtime", audio: { input: { turn_detection: { type: "fast_vad" } } } },
      }),
    );
    expect(parsed).toMatchObject({
      kind: "invalid",
      code: "invalid_value",
      param: "session.audio.input.turn_detection.type",
      eventId: "evt_1",
    });
  });

  // Limits of Earshot's own and OpenAI's documented ranges: at the limit, and just past it.
  const limits: { name: string; at: unknown; past: unknown; param: string }[] = [
    {
      name: "instructions",
      at: { instructions: "x".repeat(MAX_INSTRUCTIONS_CHARS) },
      past: { instructions: "x".repeat(MAX_INSTRUCTIONS_CHARS + 1) },
      param: "session.instructions",
    },
    {
      name: "tools",
      at: { tools: Array.from({ length: MAX_TOOLS }, (_, i) => ({ type: "function", name: `f${i}` })) },
      past: { tools: Array.from({ length: MAX_TOOLS + 1 }, (_, i) => ({ type: "function", name: `f${i}` })) },
      param: "session.tools",
    },
    {
      name: "model name",
      at: { model: "m".repeat(MAX_NAME_CHARS) },
      past: { model: "m".repeat(MAX_NAME_CHARS + 1) },
      param: "session.model",
    },
    {
      name: "function name (OpenAI: 64)",
      at: { tools: [{ type: "function", name: "f".repeat(64) }] },
      past: { tools: [{ type: "function", name: "f".repeat(65) }] },
      param: "session.tools[0].name",
    },
    {
      name: "voice name",
      at: { audio: { output: { voice: "v".repeat(64) } } },
      past: { audio: { output: { voice: "v".repeat(65) } } },
      param: "session.audio.output.voice",
    },
    {
      name: "speed, top (OpenAI: 1.5)",
      at: { audio: { output: { speed: 1.5 } } },
      past: { audio: { output: { speed: 1.51 } } },
      param: "session.audio.output.speed",
    },
    {
      name: "speed, bottom (OpenAI: 0.25)",
      at: { audio: { output: { speed: 0.25 } } },
      past: { audio: { output: { speed: 0.24 } } },
      param: "session.audio.output.speed",
    },
    {
      name: "max_output_tokens (OpenAI: 1 to 4096)",
      at: { max_output_tokens: 4096 },
      past: { max_output_tokens: 4097 },
      param: "session.max_output_tokens",
    },
    {
      name: "max_output_tokens, bottom",
      at: { max_output_tokens: 1 },
      past: { max_output_tokens: 0 },
      param: "session.max_output_tokens",
    },
    {
      name: "VAD threshold",
      at: { audio: { input: { turn_detection: { type: "server_vad", threshold: 1 } } } },
      past: { audio: { input: { turn_detection: { type: "server_vad", threshold: 1.01 } } } },
      param: "session.audio.input.turn_detection.threshold",
    },
    {
      name: "prefix padding",
      at: { audio: { input: { turn_detection: { type: "server_vad", prefix_padding_ms: 5000 } } } },
      past: { audio: { input: { turn_detection: { type: "server_vad", prefix_padding_ms: 5001 } } } },
      param: "session.audio.input.turn_detection.prefix_padding_ms",
    },
    {
      name: "silence duration",
      at: { audio: { input: { turn_detection: { type: "server_vad", silence_duration_ms: 10_000 } } } },
      past: { audio: { input: { turn_detection: { type: "server_vad", silence_duration_ms: 10_001 } } } },
      param: "session.audio.input.turn_detection.silence_duration_ms",
    },
    {
      name: "retention ratio",
      at: { truncation: { type: "retention_ratio", retention_ratio: 1 } },
      past: { truncation: { type: "retention_ratio", retention_ratio: 1.1 } },
      param: "session.truncation.retention_ratio",
    },
  ];
  it.each(limits)("$name: accepted at the limit, refused just past it", ({ at, past, param }) => {
    expect(problemOf(at)).toBeNull();
    expect(problemOf(past)).toMatchObject({ code: "invalid_value", param });
  });
});
