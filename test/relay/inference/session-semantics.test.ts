// session.created carries the call's session (issue 14, part 3). The relay tells the model the
// minted session itself; the client's first event must be a session.created describing that
// session as the model applied it, and a session.updated must only ever answer the client's own
// session.update (the Agents SDK's connect() resolves on the first session.updated it sees).
// Against the built-in agent and against an upstream that answers as OpenAI's server does.
import { OpenAIRealtimeWebSocket } from "@openai/agents-realtime";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AgentServer } from "../../../agent/agent-server.ts";
import type { SessionConfig } from "../../../protocol/session.ts";
import { InferenceBridge, MAX_PENDING_UPSTREAM_EVENTS } from "../../../relay/inference/inference-bridge.ts";
import { mergeSession } from "../../../relay/inference/model-session.ts";
import { FRAME_SAMPLES } from "../../../relay/media/audio-format.ts";
import { waitFor } from "../../support/loopback.ts";
import { testConfig } from "../../support/relays.ts";
import { testCall, testMetrics, type TestCall } from "./bridge-fixtures.ts";
import { ScriptedOpenAI, type ScriptedOptions } from "./scripted-openai.ts";

const MINTED: SessionConfig = {
  type: "realtime",
  model: "gpt-realtime",
  instructions: "You are Earshot's test assistant. Be brief.",
  audio: {
    input: { format: { type: "audio/pcmu" }, turn_detection: { type: "semantic_vad", eagerness: "high" } },
    output: { format: { type: "audio/pcmu" }, voice: { id: "voice_1234" } },
  },
};

/** The session.update the Agents SDK sends on connect, built by the SDK itself. */
function agentsSdkUpdate(instructions: string) {
  const transport = new OpenAIRealtimeWebSocket({ apiKey: "unused" } as never);
  const session = transport.buildSessionPayload({
    model: "gpt-realtime",
    instructions,
    voice: "marin",
    tools: [
      {
        type: "function",
        name: "get_weather",
        description: "Weather for a city.",
        parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
      } as never,
    ],
  } as never);
  return { type: "session.update", session };
}

let agent: AgentServer;
const cleanups: (() => void | Promise<void>)[] = [];
beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, speed: 4 });
});
afterAll(() => agent.close());
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function scripted(options: ScriptedOptions = {}): Promise<ScriptedOpenAI> {
  const upstream = await ScriptedOpenAI.start(options);
  cleanups.push(() => upstream.close());
  return upstream;
}

function start(
  url: string,
  session: SessionConfig = MINTED,
  options: { sessionConfirmTimeoutMs?: number; openChannel?: boolean } = {},
): { call: TestCall; bridge: InferenceBridge } {
  const call = testCall();
  call.ctx.session = session;
  const bridge = new InferenceBridge(call.ctx, {
    config: { ...testConfig({ INFERENCE_URL: url }).inference, retryBaseMs: 20, retryMaxMs: 100 },
    ...(options.sessionConfirmTimeoutMs ? { sessionConfirmTimeoutMs: options.sessionConfirmTimeoutMs } : {}),
  });
  call.downlink.bridge = bridge;
  if (options.openChannel !== false) {
    call.channel.open = true;
    bridge.onChannelOpen();
  }
  cleanups.push(() => {
    bridge.close();
    call.close();
  });
  return { call, bridge };
}

const send = (bridge: InferenceBridge, event: object) => bridge.onClientMessage(JSON.stringify(event));
const types = (call: TestCall) => call.channel.events.map((e) => e.type);

async function uplinkDrops(reason: string): Promise<number> {
  const metric = await testMetrics.registry
    .getSingleMetric("earshot_relay_inference_audio_dropped_total")!
    .get();
  return metric.values
    .filter((v) => v.labels.direction === "uplink" && v.labels.reason === reason)
    .reduce((n, v) => n + v.value, 0);
}

describe("against an upstream that answers as OpenAI's server does", () => {
  it("the first event is session.created: the minted session as the model applied it, in the formats the client asked for", async () => {
    const upstream = await scripted();
    const { call } = start(upstream.url);
    const created = await call.channel.waitFor("session.created");
    expect(call.channel.events[0]).toBe(created);
    // The model was told the minted session first, with the relay's PCM in and out.
    const told = upstream.connections[0]!.received[0]!;
    expect(told).toMatchObject({
      type: "session.update",
      session: {
        instructions: MINTED.instructions,
        audio: {
          input: { format: { type: "audio/pcm", rate: 24000 } },
          output: { format: { type: "audio/pcm", rate: 24000 }, voice: { id: "voice_1234" } },
        },
      },
    });
    expect(String(told.event_id)).toMatch(/^event_relay_/);
    // The client sees the minted session merged into OpenAI's defaults, not the defaults alone.
    expect(created.session).toMatchObject({
      type: "realtime",
      object: "realtime.session",
      id: "sess_scripted1",
      instructions: MINTED.instructions,
      model: "gpt-realtime",
      tool_choice: "auto",
      audio: {
        input: {
          format: { type: "audio/pcmu" },
          turn_detection: { type: "semantic_vad", eagerness: "high" },
          noise_reduction: null,
        },
        output: { format: { type: "audio/pcmu" }, voice: { id: "voice_1234" }, speed: 1 },
      },
    });
    // Nothing the client did not ask for.
    await new Promise((r) => setTimeout(r, 100));
    expect(types(call)).toEqual(["session.created"]);
  });

  it("the Agents SDK's session.update, sent before the model confirmed the call's session, gets the first session.updated; its events wait, its audio is dropped", async () => {
    const upstream = await scripted({ answerAfterMs: 300 });
    const dropsBefore = await uplinkDrops("session_not_ready");
    const { call, bridge } = start(upstream.url);
    await waitFor(() => upstream.connections[0]?.received.length === 1, 5000, "the relay's update");
    // The SDK's connect(): its session.update on channel open, then straight to the microphone.
    send(bridge, agentsSdkUpdate("Speak like a pirate."));
    send(bridge, { type: "response.create", event_id: "evt_hello" });
    for (let i = 0; i < 10; i++) bridge.onUplinkFrame(new Int16Array(FRAME_SAMPLES).fill(1000));
    const updated = await call.channel.waitFor("session.updated");
    // The first session.updated answers the SDK, with the SDK's config.
    expect(types(call).slice(0, 2)).toEqual(["session.created", "session.updated"]);
    expect(updated.session).toMatchObject({
      instructions: "Speak like a pirate.",
      tools: [{ type: "function", name: "get_weather" }],
      audio: { output: { voice: "marin" } },
    });
    expect(call.channel.ofType("session.created")[0]!.session).toMatchObject({
      instructions: MINTED.instructions,
    });
    await call.channel.waitFor("response.created");
    // The model heard the relay's update first, then the client's events in order, and none of
    // the audio sent while it still ran its defaults.
    expect(upstream.connections[0]!.received.map((e) => e.type)).toEqual([
      "session.update",
      "session.update",
      "response.create",
    ]);
    expect(await uplinkDrops("session_not_ready")).toBe(dropsBefore + 10);
    // Audio flows once the session is the call's.
    for (let i = 0; i < 2; i++) bridge.onUplinkFrame(new Int16Array(FRAME_SAMPLES).fill(1000));
    await waitFor(() => upstream.received("input_audio_buffer.append").length === 1, 5000, "audio");
  });

  it("a session the model refuses: session.created says what it runs instead, then an OpenAI-shaped error; the call goes on", async () => {
    const upstream = await scripted({
      refuse: (session) =>
        (session.audio as { output?: { voice?: unknown } } | undefined)?.output?.voice === "no-such-voice"
          ? {
              code: "invalid_value",
              message: "Invalid value: 'no-such-voice'. Supported values are: 'alloy', 'marin' and 'cedar'.",
              param: "session.audio.output.voice",
            }
          : null,
    });
    const { call, bridge } = start(upstream.url, {
      ...MINTED,
      audio: { output: { voice: "no-such-voice" } },
    });
    const error = await call.channel.waitFor("error");
    expect(types(call)).toEqual(["session.created", "error"]);
    expect(call.channel.events[0]!.session).toMatchObject({
      instructions: "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI.",
      audio: { output: { voice: "marin" } },
    });
    expect(error.error).toEqual({
      type: "invalid_request_error",
      code: "invalid_value",
      message: expect.stringContaining("no-such-voice") as string,
      param: "session.audio.output.voice",
      // The relay's own event id never reaches the client.
      event_id: null,
    });
    send(bridge, { type: "response.create" });
    await call.channel.waitFor("response.created");
  });

  it(`holds ${MAX_PENDING_UPSTREAM_EVENTS} client events while the model is being configured, refuses one more, then delivers them in order`, async () => {
    const upstream = await scripted({ answerAfterMs: 300 });
    const { call, bridge } = start(upstream.url);
    const item = (i: number) => ({
      type: "conversation.item.create",
      event_id: `evt_${i}`,
      item: { type: "message", role: "user", content: [{ type: "input_text", text: `${i}` }] },
    });
    for (let i = 0; i < MAX_PENDING_UPSTREAM_EVENTS; i++) send(bridge, item(i));
    expect(call.channel.ofType("error")).toEqual([]);
    send(bridge, item(MAX_PENDING_UPSTREAM_EVENTS));
    // The refusal reaches the client after its session.created, which stays its first event.
    await call.channel.waitFor("error");
    expect(types(call)).toEqual(["session.created", "error"]);
    expect(call.channel.ofType("error").map((e) => e.error)).toEqual([
      expect.objectContaining({ type: "server_error", code: "upstream_not_ready" }),
    ]);
    await waitFor(
      () => upstream.received("conversation.item.create").length === MAX_PENDING_UPSTREAM_EVENTS,
      5000,
      "the held events upstream",
    );
    expect(upstream.received("conversation.item.create").map((e) => e.event_id)).toEqual(
      Array.from({ length: MAX_PENDING_UPSTREAM_EVENTS }, (_, i) => `evt_${i}`),
    );
  });

  it("a model that never confirms: the call goes on under the session as minted after the timeout", async () => {
    const upstream = await scripted({ answerAfterMs: "never" });
    const startedAt = performance.now();
    const { call, bridge } = start(upstream.url, MINTED, { sessionConfirmTimeoutMs: 300 });
    const created = await call.channel.waitFor("session.created");
    expect(created.at - startedAt).toBeGreaterThanOrEqual(290);
    expect(created.session).toMatchObject({
      instructions: MINTED.instructions,
      audio: { output: { format: { type: "audio/pcmu" }, voice: { id: "voice_1234" } } },
    });
    send(bridge, { type: "response.create" });
    await call.channel.waitFor("response.created");
  });

  it("a late confirmation after the timeout is not taken for the answer to the client's update", async () => {
    const upstream = await scripted({ answerAfterMs: 400 });
    const { call, bridge } = start(upstream.url, MINTED, { sessionConfirmTimeoutMs: 100 });
    await call.channel.waitFor("session.created");
    send(bridge, {
      type: "session.update",
      event_id: "evt_mine",
      session: { type: "realtime", instructions: "Mine." },
    });
    const updated = await call.channel.waitFor("session.updated");
    expect(updated.session).toMatchObject({ instructions: "Mine." });
    await new Promise((r) => setTimeout(r, 200));
    expect(call.channel.ofType("session.updated")).toHaveLength(1);
  });

  it("a client update the model refuses is answered with its event_id and not carried to a new model session", async () => {
    const upstream = await scripted({
      refuse: (session) =>
        session.instructions === "forbidden"
          ? { code: "invalid_value", message: "Not those instructions.", param: "session.instructions" }
          : null,
    });
    const { call, bridge } = start(upstream.url);
    await call.channel.waitFor("session.created");
    send(bridge, {
      type: "session.update",
      event_id: "evt_ok",
      session: { type: "realtime", instructions: "Kept." },
    });
    send(bridge, {
      type: "session.update",
      event_id: "evt_bad",
      session: { type: "realtime", instructions: "forbidden" },
    });
    const error = await call.channel.waitFor("error");
    expect(error.error).toMatchObject({
      code: "invalid_value",
      param: "session.instructions",
      event_id: "evt_bad",
    });
    expect(call.channel.ofType("session.updated")).toHaveLength(1);

    upstream.dropAll();
    const reconnected = await call.channel.waitFor("earshot.inference.reconnected");
    // The new model session was told the call's session as confirmed: the kept update, not the refused one.
    expect(upstream.connections[1]!.received[0]!.session).toMatchObject({ instructions: "Kept." });
    expect(reconnected.session).toMatchObject({
      instructions: "Kept.",
      audio: { output: { format: { type: "audio/pcmu" } } },
    });
    // No second session.created, no session.updated the client did not ask for.
    expect(call.channel.ofType("session.created")).toHaveLength(1);
    expect(call.channel.ofType("session.updated")).toHaveLength(1);
    expect(bridge.session.instructions).toBe("Kept.");
  });

  it("a client update the lost model session never answered is sent to the new one, and answered once", async () => {
    const upstream = await scripted({ ignoreClientUpdates: true });
    const { call, bridge } = start(upstream.url);
    await call.channel.waitFor("session.created");
    send(bridge, {
      type: "session.update",
      event_id: "evt_late",
      session: { type: "realtime", instructions: "Late." },
    });
    await waitFor(
      () => upstream.received("session.update").length === 2,
      5000,
      "the client's update upstream",
    );
    upstream.options.ignoreClientUpdates = false;
    upstream.dropAll();
    const updated = await call.channel.waitFor("session.updated");
    expect(updated.session).toMatchObject({ instructions: "Late." });
    expect(upstream.received("session.update", upstream.connections[1]).map((e) => e.event_id)).toEqual([
      expect.stringMatching(/^event_relay_/),
      "evt_late",
    ]);
    await new Promise((r) => setTimeout(r, 100));
    expect(call.channel.ofType("session.updated")).toHaveLength(1);
    expect(call.channel.ofType("earshot.inference.reconnected")).toHaveLength(1);
  });

  it("a transcription session stays one: no realtime type forced, no output audio", async () => {
    const upstream = await scripted();
    const transcription: SessionConfig = {
      type: "transcription",
      audio: {
        input: {
          format: { type: "audio/pcma" },
          transcription: { model: "gpt-4o-transcribe", language: "en" },
          turn_detection: null,
        },
      },
    };
    const { call } = start(upstream.url, transcription);
    const created = await call.channel.waitFor("session.created");
    const told = upstream.connections[0]!.received[0]!.session!;
    expect(told).toEqual({
      type: "transcription",
      audio: {
        input: {
          format: { type: "audio/pcm", rate: 24000 },
          transcription: { model: "gpt-4o-transcribe", language: "en" },
          turn_detection: null,
        },
      },
    });
    expect(created.session).toMatchObject({
      type: "transcription",
      audio: { input: { format: { type: "audio/pcma" }, turn_detection: null } },
    });
  });
});

describe("server events the relay does not act on", () => {
  it("reach the client as the model sent them, byte for byte, in order (rate limits, text, function calls, transcription, vendor events)", async () => {
    const upstream = await scripted();
    const { call } = start(upstream.url);
    await call.channel.waitFor("session.created");
    const sent = [
      {
        type: "rate_limits.updated",
        event_id: "event_a",
        rate_limits: [{ name: "tokens", limit: 100, remaining: 99, reset_seconds: 1.5 }],
      },
      {
        type: "response.output_text.delta",
        event_id: "event_b",
        response_id: "resp_1",
        item_id: "item_1",
        output_index: 0,
        content_index: 0,
        delta: "Hi",
      },
      {
        type: "response.function_call_arguments.done",
        event_id: "event_c",
        response_id: "resp_1",
        item_id: "item_2",
        output_index: 1,
        call_id: "call_1",
        name: "get_weather",
        arguments: '{"city":"Oslo"}',
      },
      {
        type: "conversation.item.input_audio_transcription.completed",
        event_id: "event_d",
        item_id: "item_0",
        content_index: 0,
        transcript: "hello",
      },
      {
        type: "input_audio_buffer.timeout_triggered",
        event_id: "event_e",
        audio_start_ms: 0,
        audio_end_ms: 5000,
        item_id: "item_3",
      },
      { type: "vendor.something_new", event_id: "event_f", detail: { nested: [1, 2, 3] } },
    ];
    const texts = sent.map((event) => JSON.stringify(event));
    for (const text of texts) upstream.connections[0]!.socket.send(text);
    await call.channel.waitFor("vendor.something_new");
    expect(call.channel.texts.slice(-texts.length)).toEqual(texts);
  });
});

describe("against the built-in agent", () => {
  it("session.created is the minted session; the SDK's own update is the first session.updated", async () => {
    const { call, bridge } = start(agent.url, MINTED, { openChannel: false });
    // Held until the channel opens, as on a real call; the SDK sends on open.
    await waitFor(() => agent.connections > 0, 5000, "upstream");
    call.channel.open = true;
    bridge.onChannelOpen();
    send(bridge, agentsSdkUpdate("Speak like a pirate."));
    const updated = await call.channel.waitFor("session.updated");
    expect(types(call).slice(0, 2)).toEqual(["session.created", "session.updated"]);
    expect(call.channel.events[0]!.session).toMatchObject({
      instructions: MINTED.instructions,
      audio: { output: { voice: { id: "voice_1234" }, format: { type: "audio/pcmu" } } },
    });
    expect(updated.session).toMatchObject({
      instructions: "Speak like a pirate.",
      audio: { output: { voice: "marin" } },
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(call.channel.ofType("session.updated")).toHaveLength(1);
  });

  it("an invalid session.update is refused by the relay with the param, before it reaches the model", async () => {
    const { call, bridge } = start(agent.url);
    await call.channel.waitFor("session.created");
    send(bridge, {
      type: "session.update",
      event_id: "evt_td",
      session: { type: "realtime", audio: { input: { turn_detection: { type: "fast_vad" } } } },
    });
    const error = await call.channel.waitFor("error");
    expect(error.error).toMatchObject({
      type: "invalid_request_error",
      code: "invalid_value",
      param: "session.audio.input.turn_detection.type",
      event_id: "evt_td",
    });
    expect(call.channel.ofType("session.updated")).toEqual([]);
  });
});

describe("OpenAI's update semantics, as the relay keeps the call's session", () => {
  it("merges the session and its audio field by field; replaces turn detection, tools and formats whole; keeps null", () => {
    const base: SessionConfig = {
      type: "realtime",
      instructions: "A",
      tools: [{ type: "function", name: "one" }],
      audio: {
        input: {
          format: { type: "audio/pcmu" },
          turn_detection: { type: "server_vad", threshold: 0.7, silence_duration_ms: 800 },
        },
        output: { voice: "cedar", speed: 1.2 },
      },
    };
    const merged = mergeSession(base, {
      type: "realtime",
      tools: [],
      audio: { input: { turn_detection: { type: "semantic_vad", eagerness: "low" }, noise_reduction: null } },
    });
    expect(merged).toEqual({
      type: "realtime",
      instructions: "A",
      tools: [],
      audio: {
        input: {
          format: { type: "audio/pcmu" },
          // Whole: a semantic_vad with a server_vad threshold left over would be invalid.
          turn_detection: { type: "semantic_vad", eagerness: "low" },
          noise_reduction: null,
        },
        output: { voice: "cedar", speed: 1.2 },
      },
    });
    expect(mergeSession(merged, { audio: { input: { turn_detection: null } } }).audio?.input).toEqual({
      format: { type: "audio/pcmu" },
      turn_detection: null,
      noise_reduction: null,
    });
  });
});
