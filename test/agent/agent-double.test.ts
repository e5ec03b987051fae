// The built-in agent as a test double for apps (issue 14 part 5): over a real WebSocket it
// behaves as OpenAI's Realtime API documents for tools, text-only sessions, turn detection
// settings, item retrieval and transcription (which it cannot do, and says so with OpenAI's
// failure event).
import { createRequire } from "node:module";
import Ajv from "ajv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentServer } from "../../agent/agent-server.ts";
import { SEMANTIC_VAD_SILENCE_MS } from "../../agent/session-settings.ts";
import { concat, dbfs, sine, voicedMs } from "../support/audio.ts";
import { RealtimeTestClient, type ServerEventRecord } from "./realtime-client.ts";

let agent: AgentServer;
let slow: AgentServer;
const clients: RealtimeTestClient[] = [];

beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, speed: 20 });
  // Real-time pace: a reply is still playing when the user talks over it.
  slow = await AgentServer.start({ port: 0, speed: 1 });
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await agent.close();
  await slow.close();
});

async function connect(server = agent, query = ""): Promise<RealtimeTestClient> {
  const client = await RealtimeTestClient.connect(server.url + query);
  clients.push(client);
  await client.waitFor("session.created");
  return client;
}

async function update(client: RealtimeTestClient, session: object): Promise<ServerEventRecord> {
  const from = client.events.length;
  client.send({ type: "session.update", session: { type: "realtime", ...session } });
  return client.waitFor("session.updated", undefined, { from });
}

/** 200 ms of silence, a tone, then `trailingMs` of silence (ends the turn at the default 500 ms). */
function utterance(frequency: number, seconds: number, trailingMs = 800): Int16Array {
  return concat([
    new Int16Array(4800),
    sine(frequency, seconds * 1000, 8000),
    new Int16Array(trailingMs * 24),
  ]);
}

/** Sends an event the agent answers at once; every event it sent before that is in the log. */
async function flush(client: RealtimeTestClient): Promise<void> {
  const from = client.events.length;
  client.send({ type: "input_audio_buffer.clear" });
  await client.waitFor("input_audio_buffer.cleared", undefined, { from });
}

const since = (client: RealtimeTestClient, from: number, type: string) =>
  client.events.slice(from).filter((e) => e.type === type);

const WEATHER = {
  type: "function",
  name: "get_weather",
  description: "Get the current weather in a city.",
  parameters: {
    type: "object",
    properties: {
      location: { type: "string", description: "City and country, e.g. Paris, France" },
      unit: { type: "string", enum: ["celsius", "fahrenheit"] },
      days: { type: "integer", minimum: 1, maximum: 7 },
    },
    required: ["location", "unit"],
    additionalProperties: false,
  },
};
const BOOK = {
  type: "function",
  name: "book_table",
  description: "Book a table.",
  parameters: {
    type: "object",
    properties: {
      party: { type: "object", properties: { size: { type: "integer", minimum: 2 } }, required: ["size"] },
      times: { type: "array", items: { type: "string", format: "time" }, minItems: 2 },
    },
    required: ["party", "times"],
  },
};

describe("built-in agent: session.created", () => {
  it("describes the agent's defaults as OpenAI's session object", async () => {
    const client = await RealtimeTestClient.connect(agent.url);
    clients.push(client);
    const created = await client.waitFor("session.created");
    expect(client.events[0]).toBe(created);
    expect(created.session).toMatchObject({
      type: "realtime",
      object: "realtime.session",
      id: expect.stringMatching(/^sess_/),
      model: "earshot-agent",
      output_modalities: ["audio"],
      instructions: expect.any(String),
      tools: [],
      tool_choice: "auto",
      max_output_tokens: "inf",
      tracing: null,
      expires_at: expect.any(Number),
      audio: {
        input: {
          format: { type: "audio/pcm", rate: 24000 },
          transcription: null,
          noise_reduction: null,
          turn_detection: {
            type: "server_vad",
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            idle_timeout_ms: null,
            create_response: true,
            interrupt_response: true,
          },
        },
        output: { format: { type: "audio/pcm", rate: 24000 }, voice: "espeak", speed: 1 },
      },
    });
    // session.updated shows the effective configuration in full, defaults filled in.
    const updated = await update(client, { audio: { input: { turn_detection: { type: "semantic_vad" } } } });
    expect(
      (updated.session as { audio: { input: { turn_detection: object } } }).audio.input.turn_detection,
    ).toEqual({
      type: "semantic_vad",
      eagerness: "auto",
      create_response: true,
      interrupt_response: true,
    });
  });
});

describe("built-in agent: function tools", () => {
  it("calls the session's tool with schema-valid arguments (GA events), then speaks a reply that uses its output", async () => {
    const client = await connect();
    await update(client, { tools: [WEATHER], tool_choice: "auto" });
    const from = client.events.length;
    client.appendAudio(utterance(300, 0.6));
    const done = await client.waitFor("response.done", undefined, { from });
    const types = client.events
      .slice(from)
      .map((e) => e.type)
      .filter((t) => t.startsWith("response."));
    expect(types[0]).toBe("response.created");
    expect(types[1]).toBe("response.output_item.added");
    expect(types.slice(2, -3).every((t) => t === "response.function_call_arguments.delta")).toBe(true);
    expect(types.slice(2, -3).length).toBeGreaterThan(0);
    expect(types.slice(-3)).toEqual([
      "response.function_call_arguments.done",
      "response.output_item.done",
      "response.done",
    ]);
    const added = since(client, from, "response.output_item.added")[0]!;
    expect(added.item).toMatchObject({ type: "function_call", name: "get_weather", status: "in_progress" });
    const argsDone = since(client, from, "response.function_call_arguments.done")[0]!;
    const deltas = since(client, from, "response.function_call_arguments.delta")
      .map((e) => e.delta)
      .join("");
    expect(deltas).toBe(argsDone.arguments);
    const args = JSON.parse(argsDone.arguments as string) as unknown;
    const validate = new Ajv().compile(WEATHER.parameters);
    expect(validate(args), JSON.stringify(validate.errors)).toBe(true);
    expect(args).toEqual({ location: "example", unit: "celsius", days: 1 });
    expect(done.response).toMatchObject({
      status: "completed",
      output: [
        { type: "function_call", status: "completed", name: "get_weather", call_id: argsDone.call_id },
      ],
      usage: { total_tokens: expect.any(Number), output_tokens: expect.any(Number) },
    });
    expect((done.response as { usage: { output_tokens: number } }).usage.output_tokens).toBeGreaterThan(0);
    // No audio in a tool call.
    expect(since(client, from, "response.output_audio.delta")).toEqual([]);

    // The app runs the tool and asks for a response: the agent speaks, quoting the output.
    const after = client.events.length;
    client.send({
      type: "conversation.item.create",
      item: { type: "function_call_output", call_id: argsDone.call_id, output: '{"temperature_c": 21}' },
    });
    client.send({ type: "response.create" });
    const created = await client.waitFor("response.created", undefined, { from: after });
    const spoken = await client.waitFor("response.done", undefined, { from: after });
    expect((spoken.response as { status: string }).status).toBe("completed");
    const transcript = await client.waitFor("response.output_audio_transcript.done", undefined, {
      from: after,
    });
    expect(transcript.transcript).toBe('The get_weather tool returned: {"temperature_c": 21}');
    const reply = client.responseAudio((created.response as { id: string }).id);
    expect(reply.length / 24).toBeGreaterThan(1500);
    expect(voicedMs(reply)).toBeGreaterThan(0.5 * (reply.length / 24));
    expect(dbfs(reply)).toBeGreaterThan(-30);
  });

  it('tool_choice "none" never calls a tool; "required" always does, in turn through the tools; a named function is called', async () => {
    const client = await connect();
    await update(client, { tools: [WEATHER, BOOK], tool_choice: "none" });
    let from = client.events.length;
    client.appendAudio(utterance(300, 0.4));
    let done = await client.waitFor("response.done", undefined, { from });
    expect((done.response as { output: { type: string }[] }).output[0]!.type).toBe("message");

    await update(client, { tool_choice: "required" });
    const calls: ServerEventRecord[] = [];
    for (let n = 0; n < 3; n++) {
      from = client.events.length;
      client.send({ type: "response.create" });
      done = await client.waitFor("response.done", undefined, { from });
      const call = since(client, from, "response.function_call_arguments.done")[0]!;
      calls.push(call);
      // Even with the output in the conversation, "required" calls again.
      client.send({
        type: "conversation.item.create",
        item: { type: "function_call_output", call_id: call.call_id, output: "ok" },
      });
    }
    expect(calls.map((c) => c.name)).toEqual(["get_weather", "book_table", "get_weather"]);
    const booking = JSON.parse(calls[1]!.arguments as string) as unknown;
    const validate = new Ajv({ format: "full" }).compile(BOOK.parameters);
    expect(validate(booking), JSON.stringify(validate.errors)).toBe(true);

    await update(client, { tool_choice: { type: "function", name: "get_weather" } });
    from = client.events.length;
    client.send({ type: "response.create" });
    await client.waitFor("response.done", undefined, { from });
    expect(since(client, from, "response.function_call_arguments.done")[0]!.name).toBe("get_weather");
  });

  it("refuses a tool_choice naming no tool, a bad tool and an output for an unknown call, naming the param", async () => {
    const client = await connect();
    client.send({
      type: "session.update",
      session: { type: "realtime", tools: [WEATHER], tool_choice: { type: "function", name: "nope" } },
    });
    const first = await client.waitFor("error");
    expect(first.error).toMatchObject({ type: "invalid_request_error", param: "session.tool_choice" });
    client.send({
      type: "session.update",
      session: { type: "realtime", tools: [{ type: "function", name: "" }] },
    });
    await client.waitFor("error", (e) => (e.error as { param: string }).param === "session.tools[0].name");
    client.send({
      type: "conversation.item.create",
      item: { type: "function_call_output", call_id: "call_unknown", output: "x" },
    });
    await client.waitFor("error", (e) => (e.error as { param: string }).param === "item.call_id");
    client.send({ type: "response.create", response: { output_modalities: ["video"] } });
    await client.waitFor(
      "error",
      (e) => (e.error as { param: string }).param === "response.output_modalities.0",
    );
    // The session is unchanged: no tools, so a plain reply.
    client.send({ type: "response.create" });
    const done = await client.waitFor("response.done");
    expect((done.response as { output: { type: string }[] }).output[0]!.type).toBe("message");
  });
  it("quotes a tool's output up to 300 characters and cuts one past it; a tool name of 64 characters is the most", async () => {
    const client = await connect();
    const name = "t".repeat(64);
    await update(client, { tools: [{ ...WEATHER, name }], tool_choice: "auto", output_modalities: ["text"] });
    const replies: string[] = [];
    for (const length of [300, 301]) {
      let from = client.events.length;
      client.send({ type: "response.create" });
      await client.waitFor("response.done", undefined, { from });
      const call = since(client, from, "response.function_call_arguments.done")[0]!;
      expect(call.name).toBe(name);
      from = client.events.length;
      client.send({
        type: "conversation.item.create",
        item: { type: "function_call_output", call_id: call.call_id, output: "o".repeat(length) },
      });
      client.send({ type: "response.create" });
      await client.waitFor("response.done", undefined, { from });
      replies.push(since(client, from, "response.output_text.done")[0]!.text as string);
    }
    expect(replies[0]).toBe(`The ${name} tool returned: ${"o".repeat(300)}`);
    expect(replies[1]).toBe(`The ${name} tool returned: ${"o".repeat(300)}…`);
    client.send({
      type: "session.update",
      session: { type: "realtime", tools: [{ ...WEATHER, name: `${name}t` }] },
    });
    await client.waitFor("error", (e) => (e.error as { param: string }).param === "session.tools[0].name");
  });
});

describe("built-in agent: MCP tools (it reaches no MCP server)", () => {
  it("lists each server once as an mcp_list_tools item whose listing fails, and answers without calling it", async () => {
    const client = await connect();
    const mcp = { type: "mcp", server_label: "deepwiki", server_url: "https://mcp.deepwiki.com/mcp" };
    await update(client, { tools: [mcp] });
    const failed = await client.waitFor("mcp_list_tools.failed");
    const added = await client.waitFor(
      "conversation.item.added",
      (e) => (e.item as { type: string }).type === "mcp_list_tools",
    );
    expect(added.item).toMatchObject({ type: "mcp_list_tools", server_label: "deepwiki", tools: [] });
    expect(failed.item_id).toBe((added.item as { id: string }).id);
    const inProgress = client.ofType("mcp_list_tools.in_progress");
    expect(inProgress.map((e) => e.item_id)).toEqual([failed.item_id]);
    // The same server again is not listed again.
    await update(client, { tools: [mcp], instructions: "x" });
    await flush(client);
    expect(client.ofType("mcp_list_tools.failed")).toHaveLength(1);
    const from = client.events.length;
    client.send({ type: "response.create" });
    const done = await client.waitFor("response.done", undefined, { from });
    expect((done.response as { output: { type: string }[] }).output[0]!.type).toBe("message");
  });
});

describe("built-in agent: output_modalities", () => {
  it('["text"] replies with output_text and no audio; a response can ask for text in an audio session', async () => {
    const client = await connect();
    await update(client, { output_modalities: ["text"] });
    let from = client.events.length;
    client.send({
      type: "conversation.item.create",
      item: {
        type: "message",
        role: "user",
        content: [{ type: "input_text", text: "What is two plus two?" }],
      },
    });
    client.send({ type: "response.create" });
    let done = await client.waitFor("response.done", undefined, { from });
    const textDone = since(client, from, "response.output_text.done")[0]!;
    expect(textDone.text).toBe("You wrote: What is two plus two?");
    expect(
      since(client, from, "response.output_text.delta")
        .map((e) => e.delta)
        .join(""),
    ).toBe(textDone.text);
    expect(since(client, from, "response.output_audio.delta")).toEqual([]);
    expect(since(client, from, "response.output_audio_transcript.delta")).toEqual([]);
    expect(since(client, from, "response.content_part.added")[0]!.part).toEqual({ type: "text", text: "" });
    expect(done.response).toMatchObject({
      status: "completed",
      output_modalities: ["text"],
      output: [
        { type: "message", role: "assistant", content: [{ type: "output_text", text: textDone.text }] },
      ],
    });

    await update(client, { output_modalities: ["audio"] });
    from = client.events.length;
    client.send({ type: "response.create", response: { output_modalities: ["text"] } });
    done = await client.waitFor("response.done", undefined, { from });
    expect(since(client, from, "response.output_text.done")).toHaveLength(1);
    expect(since(client, from, "response.output_audio.delta")).toEqual([]);
  });
});

describe("built-in agent: out-of-band responses", () => {
  it('conversation "none" with its own input: answers the input, adds nothing to the conversation', async () => {
    const client = await connect();
    const from = client.events.length;
    client.send({
      type: "response.create",
      response: {
        conversation: "none",
        output_modalities: ["text"],
        metadata: { topic: "classification" },
        input: [
          { type: "message", role: "user", content: [{ type: "input_text", text: "Classify this call" }] },
        ],
      },
    });
    const done = await client.waitFor("response.done", undefined, { from });
    expect(done.response).toMatchObject({
      status: "completed",
      conversation_id: null,
      metadata: { topic: "classification" },
      output: [{ content: [{ type: "output_text", text: "You wrote: Classify this call" }] }],
    });
    expect(since(client, from, "conversation.item.added")).toEqual([]);
    expect(since(client, from, "conversation.item.done")).toEqual([]);
    const itemId = (done.response as { output: { id: string }[] }).output[0]!.id;
    client.send({ type: "conversation.item.retrieve", item_id: itemId });
    await client.waitFor(
      "error",
      (e) => (e.error as { code: string }).code === "item_retrieve_invalid_item_id",
      {
        from,
      },
    );
  });
});

describe("built-in agent: max_output_tokens", () => {
  const HELLO = "Hello! I am Earshot's built-in agent. Say something and I will answer.";

  it("a text reply at the limit completes; one token less ends incomplete, cut at the limit", async () => {
    const client = await connect();
    const needed = Math.ceil(HELLO.length / 4);
    const results: ServerEventRecord[] = [];
    for (const max of [needed, needed - 1]) {
      await update(client, { output_modalities: ["text"], max_output_tokens: max });
      const from = client.events.length;
      client.send({ type: "response.create" });
      results.push(await client.waitFor("response.done", undefined, { from }));
    }
    expect(results[0]!.response).toMatchObject({
      status: "completed",
      output: [{ content: [{ text: HELLO }] }],
      usage: { output_tokens: needed },
    });
    expect(results[1]!.response).toMatchObject({
      status: "incomplete",
      status_details: { type: "incomplete", reason: "max_output_tokens" },
      output: [{ status: "incomplete", content: [{ text: HELLO.slice(0, (needed - 1) * 4) }] }],
    });
  });

  it("a spoken reply is cut short to the tokens allowed (response.create's max_output_tokens)", async () => {
    const client = await connect();
    let from = client.events.length;
    client.send({ type: "response.create" });
    const full = await client.waitFor("response.done", undefined, { from });
    const fullMs = client.responseAudio((full.response as { id: string }).id).length / 24;
    from = client.events.length;
    client.send({ type: "response.create", response: { max_output_tokens: 20 } });
    const cut = await client.waitFor("response.done", undefined, { from });
    const cutMs = client.responseAudio((cut.response as { id: string }).id).length / 24;
    expect(cut.response).toMatchObject({
      status: "incomplete",
      status_details: { reason: "max_output_tokens" },
    });
    const fullTokens = (full.response as { usage: { output_tokens: number } }).usage.output_tokens;
    // The audio kept is the allowed share of the whole reply.
    expect(cutMs / fullMs).toBeCloseTo(20 / fullTokens, 1);
    const transcript = since(client, from, "response.output_audio_transcript.done")[0]!.transcript as string;
    expect(HELLO.startsWith(transcript)).toBe(true);
    expect(transcript.length).toBeLessThan(HELLO.length);
  });
});

describe("built-in agent: audio.output.speed", () => {
  it("speaks faster at speed 1.5 and slower at 0.5, changed between replies", async () => {
    const client = await connect();
    const lengths: Record<string, number> = {};
    for (const speed of [1, 1.5, 0.5]) {
      await update(client, { audio: { output: { speed } } });
      const from = client.events.length;
      client.send({ type: "response.create" });
      const created = await client.waitFor("response.created", undefined, { from });
      await client.waitFor("response.done", undefined, { from });
      lengths[speed] = voicedMs(client.responseAudio((created.response as { id: string }).id));
    }
    // eSpeak's rate scales the speech, not the pauses: roughly, not exactly, 1/speed.
    expect(lengths["1.5"]! / lengths["1"]!).toBeGreaterThan(0.55);
    expect(lengths["1.5"]! / lengths["1"]!).toBeLessThan(0.8);
    expect(lengths["0.5"]! / lengths["1"]!).toBeGreaterThan(1.6);
  }, 20_000);
});

describe("built-in agent: turn detection settings", () => {
  it("turn_detection null: no speech events, no automatic response; the client commits and asks", async () => {
    const client = await connect();
    await update(client, { audio: { input: { turn_detection: null } } });
    const from = client.events.length;
    client.appendAudio(utterance(440, 0.6));
    client.send({ type: "input_audio_buffer.commit" });
    const committed = await client.waitFor("input_audio_buffer.committed", undefined, { from });
    await flush(client);
    expect(since(client, from, "input_audio_buffer.speech_started")).toEqual([]);
    expect(since(client, from, "response.created")).toEqual([]);
    client.send({ type: "response.create" });
    const done = await client.waitFor("response.done", undefined, { from });
    expect((done.response as { status: string }).status).toBe("completed");
    expect(committed.item_id).toEqual(expect.stringMatching(/^item_/));
  });

  it("create_response false: speech events and a committed buffer, no response", async () => {
    const client = await connect();
    await update(client, {
      audio: { input: { turn_detection: { type: "server_vad", create_response: false } } },
    });
    const from = client.events.length;
    client.appendAudio(utterance(440, 0.6));
    await client.waitFor("input_audio_buffer.speech_started", undefined, { from });
    await client.waitFor("input_audio_buffer.speech_stopped", undefined, { from });
    await client.waitFor("input_audio_buffer.committed", undefined, { from });
    await flush(client);
    expect(since(client, from, "response.created")).toEqual([]);
  });

  it("interrupt_response false: speaking over a reply does not cancel it; true (the default) does", async () => {
    for (const interrupt of [false, true]) {
      const client = await connect(slow);
      await update(client, {
        audio: { input: { turn_detection: { type: "server_vad", interrupt_response: interrupt } } },
      });
      const from = client.events.length;
      client.send({ type: "response.create" });
      const first = await client.waitFor("response.output_audio.delta", undefined, { from });
      client.appendAudio(utterance(440, 0.5));
      const started = await client.waitFor("input_audio_buffer.speech_started", undefined, { from });
      const done = await client.waitFor(
        "response.done",
        (e) => (e.response as { id: string }).id === first.response_id,
        {
          from,
          timeoutMs: 20_000,
        },
      );
      const afterSpeech = client.events
        .slice(client.events.indexOf(started))
        .filter((e) => e.type === "response.output_audio.delta" && e.response_id === first.response_id);
      if (interrupt) {
        expect(done.response).toMatchObject({
          status: "cancelled",
          status_details: { reason: "turn_detected" },
        });
      } else {
        expect((done.response as { status: string }).status).toBe("completed");
        // The reply kept coming after the user spoke: seconds of it at real-time pace.
        expect(afterSpeech.length).toBeGreaterThan(10);
      }
    }
  }, 40_000);

  it("semantic_vad: eagerness sets how long the agent waits after speech stops (high < auto < low)", async () => {
    const waits: Record<string, number> = {};
    for (const eagerness of ["high", "auto", "low"] as const) {
      const client = await connect();
      await update(client, {
        audio: { input: { turn_detection: { type: "semantic_vad", eagerness, create_response: false } } },
      });
      const from = client.events.length;
      // The tone ends at 800 ms; 3 s of silence follow.
      client.appendAudio(utterance(440, 0.6, 3000));
      const stopped = await client.waitFor("input_audio_buffer.speech_stopped", undefined, { from });
      waits[eagerness] = (stopped.audio_end_ms as number) - 800;
    }
    for (const [eagerness, wait] of Object.entries(waits)) {
      const expected = SEMANTIC_VAD_SILENCE_MS[eagerness as keyof typeof SEMANTIC_VAD_SILENCE_MS];
      expect(wait, eagerness).toBeGreaterThanOrEqual(expected - 20);
      expect(wait, eagerness).toBeLessThanOrEqual(expected + 60);
    }
    expect(waits.high).toBeLessThan(waits.auto!);
    expect(waits.auto).toBeLessThan(waits.low!);
  });

  it("idle_timeout_ms: that long after the reply has played, timeout_triggered and a response; not before", async () => {
    const client = await connect();
    const idleMs = 600;
    await update(client, {
      audio: { input: { turn_detection: { type: "server_vad", idle_timeout_ms: idleMs } } },
    });
    const from = client.events.length;
    client.send({ type: "response.create" });
    const created = await client.waitFor("response.created", undefined, { from });
    const firstDelta = await client.waitFor("response.output_audio.delta", undefined, { from });
    const firstAt = performance.now();
    await client.waitFor("response.done", undefined, { from });
    const replyMs = client.responseAudio((created.response as { id: string }).id).length / 24;
    const timeout = await client.waitFor("input_audio_buffer.timeout_triggered", undefined, {
      from,
      timeoutMs: replyMs + idleMs + 5000,
    });
    const firedAfter = performance.now() - firstAt;
    // Played from the first delta in real time, then idle_timeout_ms of silence.
    // The client hears the first delta a little after the agent sent it (same process, busy loop).
    expect(firedAfter).toBeGreaterThanOrEqual(replyMs + idleMs - 100);
    expect(firedAfter).toBeLessThan(replyMs + idleMs + 1500);
    expect(timeout).toMatchObject({
      audio_start_ms: 0,
      audio_end_ms: 0,
      item_id: expect.stringMatching(/^item_/),
    });
    expect(firstDelta.response_id).toBe((created.response as { id: string }).id);
    const prompt = await client.waitFor("response.output_audio_transcript.done", undefined, {
      from: client.events.indexOf(timeout),
    });
    expect(prompt.transcript).toBe("Are you still there?");
  }, 30_000);

  it("changes mid-call with session.update: off, then server_vad without responses, then with", async () => {
    const client = await connect();
    await update(client, { audio: { input: { turn_detection: null } } });
    let from = client.events.length;
    client.appendAudio(utterance(440, 0.4));
    await flush(client);
    expect(since(client, from, "input_audio_buffer.speech_started")).toEqual([]);

    await update(client, {
      audio: { input: { turn_detection: { type: "server_vad", create_response: false } } },
    });
    from = client.events.length;
    client.appendAudio(utterance(440, 0.4));
    await client.waitFor("input_audio_buffer.committed", undefined, { from });
    await flush(client);
    expect(since(client, from, "response.created")).toEqual([]);

    await update(client, { audio: { input: { turn_detection: { type: "server_vad" } } } });
    from = client.events.length;
    client.appendAudio(utterance(440, 0.4));
    await client.waitFor("response.done", undefined, { from });
  });
});

describe("built-in agent: client events answered as OpenAI does", () => {
  it("conversation.item.retrieve returns the item with its audio, or OpenAI's error for an unknown id", async () => {
    const client = await connect();
    client.appendAudio(utterance(440, 0.5));
    const committed = await client.waitFor("input_audio_buffer.committed");
    const created = await client.waitFor("response.created");
    await client.waitFor("response.done");
    client.send({ type: "conversation.item.retrieve", event_id: "evt_user", item_id: committed.item_id });
    const user = await client.waitFor("conversation.item.retrieved");
    const userContent = (user.item as { role: string; content: { type: string; audio: string }[] })
      .content[0]!;
    expect(user.item).toMatchObject({ id: committed.item_id, role: "user", type: "message" });
    expect(userContent.type).toBe("input_audio");
    // The committed utterance: the tone plus the 200 ms before it (prefix padding, clamped).
    const userMs = Buffer.from(userContent.audio, "base64").length / 48;
    expect(userMs).toBeGreaterThanOrEqual(680);
    expect(userMs).toBeLessThanOrEqual(760);

    const reply = client.responseAudio((created.response as { id: string }).id);
    const assistantId = client.ofType("response.output_item.done").at(-1)!.item as { id: string };
    client.send({ type: "conversation.item.retrieve", item_id: assistantId.id });
    const assistant = await client.waitFor(
      "conversation.item.retrieved",
      (e) => (e.item as { id: string }).id === assistantId.id,
    );
    const part = (assistant.item as { content: { type: string; audio: string; transcript: string }[] })
      .content[0]!;
    expect(part.type).toBe("output_audio");
    expect(part.transcript).toMatch(/I heard you speak/);
    expect(Buffer.from(part.audio, "base64").length / 2).toBe(reply.length);

    client.send({ type: "conversation.item.retrieve", event_id: "evt_missing", item_id: "item_missing" });
    const error = await client.waitFor("error");
    expect(error.error).toMatchObject({
      type: "invalid_request_error",
      code: "item_retrieve_invalid_item_id",
      param: "item_id",
      event_id: "evt_missing",
      message: "Item with item_id not found: item_missing",
    });
    client.send({ type: "conversation.item.retrieve" });
    await client.waitFor("error", (e) => (e.error as { param: string }).param === "item_id");
  });

  it("echo mode echoes spoken turns only: a typed message after speech gets a spoken answer quoting it", async () => {
    const client = await connect(agent, "?reply=echo");
    client.appendAudio(utterance(440, 0.5));
    const echoed = await client.waitFor("response.done");
    expect(
      client
        .ofType("response.output_audio_transcript.done")
        .filter((e) => e.response_id === (echoed.response as { id: string }).id),
    ).toEqual([]);
    const from = client.events.length;
    client.send({
      type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text: "hello there" }] },
    });
    client.send({ type: "response.create" });
    const transcript = await client.waitFor("response.output_audio_transcript.done", undefined, { from });
    expect(transcript.transcript).toBe("You wrote: hello there");
  });

  it("clear, delete, cancel, output_audio_buffer.clear and session.update each get their answer", async () => {
    const client = await connect(slow);
    client.send({ type: "input_audio_buffer.clear" });
    await client.waitFor("input_audio_buffer.cleared");
    client.send({
      type: "conversation.item.create",
      item: {
        id: "item_note",
        type: "message",
        role: "system",
        content: [{ type: "input_text", text: "be brief" }],
      },
    });
    const added = await client.waitFor("conversation.item.added");
    expect(added.item).toMatchObject({ id: "item_note", object: "realtime.item", status: "completed" });
    await client.waitFor("conversation.item.done");
    client.send({ type: "conversation.item.delete", item_id: "item_note" });
    await client.waitFor("conversation.item.deleted", (e) => e.item_id === "item_note");
    client.send({ type: "conversation.item.retrieve", item_id: "item_note" });
    await client.waitFor(
      "error",
      (e) => (e.error as { code: string }).code === "item_retrieve_invalid_item_id",
    );
    client.send({ type: "response.create" });
    await client.waitFor("response.output_audio.delta");
    client.send({ type: "response.cancel" });
    const done = await client.waitFor("response.done");
    expect(done.response).toMatchObject({
      status: "cancelled",
      status_details: { reason: "client_cancelled" },
    });
    // The open part and item are closed with what was said so far, as OpenAI does.
    const closing = client.events.slice(client.events.findIndex((e) => e.type === "response.created"));
    const tail = closing.map((e) => e.type).filter((t) => !t.endsWith(".delta"));
    expect(tail.slice(-5)).toEqual([
      "response.output_audio.done",
      "response.output_audio_transcript.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.done",
    ]);
    const partial = closing
      .filter((e) => e.type === "response.output_audio_transcript.delta")
      .map((e) => e.delta)
      .join("");
    expect(client.ofType("response.output_audio_transcript.done")[0]!.transcript).toBe(partial);
    expect((done.response as { output: object[] }).output[0]).toMatchObject({
      status: "incomplete",
      content: [{ type: "output_audio", transcript: partial }],
    });
    // Once the assistant has spoken, the voice is fixed; the same voice is no change.
    client.send({
      type: "session.update",
      session: { type: "realtime", audio: { output: { voice: "marin" } } },
    });
    const voiceError = await client.waitFor(
      "error",
      (e) => (e.error as { code: string }).code === "cannot_update_voice",
    );
    expect((voiceError.error as { param: string }).param).toBe("session.audio.output.voice");
    await update(client, { audio: { output: { voice: "espeak" } } });
    client.send({ type: "output_audio_buffer.clear" });
    await client.waitFor("error", (e) => (e.error as { code: string }).code === "unsupported_event");
    const updated = await update(client, { instructions: "Be terse." });
    expect(updated.session).toMatchObject({ instructions: "Be terse.", object: "realtime.session" });
  });
});

describe("built-in agent: transcription (it has no speech recogniser)", () => {
  const failedFor = (client: RealtimeTestClient, itemId: unknown) =>
    client.waitFor("conversation.item.input_audio_transcription.failed", (e) => e.item_id === itemId);
  const expectUnavailable = (failed: ServerEventRecord) =>
    expect(failed).toMatchObject({
      content_index: 0,
      error: {
        type: "invalid_request_error",
        code: "transcription_unavailable",
        message: expect.stringMatching(/not available in Earshot's built-in agent/),
        param: "session.audio.input.transcription",
      },
    });

  it("audio.input.transcription: each committed item gets the failure event, never a transcript", async () => {
    const client = await connect();
    await update(client, {
      audio: { input: { transcription: { model: "gpt-4o-transcribe", language: "en" } } },
    });
    client.appendAudio(utterance(440, 0.5));
    const committed = await client.waitFor("input_audio_buffer.committed");
    expectUnavailable(await failedFor(client, committed.item_id));
    await client.waitFor("response.done");
    expect(client.ofType("conversation.item.input_audio_transcription.completed")).toEqual([]);
    expect(client.ofType("conversation.item.input_audio_transcription.delta")).toEqual([]);
  });

  it("a transcription session (?intent=transcription or session.update) commits turns, fails each transcription, never responds", async () => {
    for (const how of ["intent", "update"] as const) {
      const client = await connect(agent, how === "intent" ? "?intent=transcription" : "");
      if (how === "update") {
        client.send({
          type: "session.update",
          session: {
            type: "transcription",
            audio: { input: { transcription: { model: "gpt-4o-transcribe" } } },
          },
        });
        const updated = await client.waitFor("session.updated");
        expect(updated.session).toMatchObject({
          type: "transcription",
          object: "realtime.transcription_session",
        });
        expect((updated.session as { audio: object }).audio).not.toHaveProperty("output");
      } else {
        expect(client.events[0]!.session).toMatchObject({
          type: "transcription",
          object: "realtime.transcription_session",
        });
      }
      const from = client.events.length;
      client.appendAudio(utterance(440, 0.5));
      const committed = await client.waitFor("input_audio_buffer.committed", undefined, { from });
      expectUnavailable(await failedFor(client, committed.item_id));
      await flush(client);
      expect(since(client, from, "response.created")).toEqual([]);
      client.send({ type: "response.create" });
      await client.waitFor("error", (e) => (e.error as { param: string }).param === "type", { from });
    }
  });
});

describe("built-in agent: event shapes", () => {
  it("every event of a type OpenAI's Agents SDK knows parses with the SDK's own schema for it", () => {
    // The SDK's zod schemas for server events (not in its public exports; read from its build).
    const { realtimeServerEventSchema } = createRequire(import.meta.url)(
      "../../node_modules/@openai/agents-realtime/dist/openaiRealtimeEvents.js",
    ) as {
      realtimeServerEventSchema: {
        options: { shape: { type: { value: string } } }[];
        safeParse(value: unknown): { success: boolean; error?: { issues: unknown[] } };
      };
    };
    const known = new Set(realtimeServerEventSchema.options.map((o) => o.shape.type.value));
    const checked = new Set<string>();
    const failures: string[] = [];
    for (const event of clients.flatMap((c) => c.events)) {
      if (!known.has(event.type)) continue;
      checked.add(event.type);
      const result = realtimeServerEventSchema.safeParse(event);
      if (!result.success) failures.push(`${event.type}: ${JSON.stringify(result.error!.issues[0])}`);
    }
    expect(failures).toEqual([]);
    // The events this file's tests are about were among those checked.
    for (const type of [
      "session.created",
      "session.updated",
      "response.function_call_arguments.done",
      "response.output_text.done",
      "response.output_audio.delta",
      "conversation.item.retrieved",
      "conversation.item.input_audio_transcription.failed",
      "mcp_list_tools.failed",
      "response.done",
    ])
      expect(checked).toContain(type);
  });
});
