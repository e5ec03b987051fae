// OpenAI's own Agents SDK (@openai/agents-realtime, RealtimeSession over its WebSocket transport)
// against the built-in agent, as an app developer would run it offline: the SDK's tool runs with
// schema-valid arguments, and the agent's spoken reply uses its result.
import { OpenAIRealtimeWebSocket, RealtimeAgent, RealtimeSession, tool } from "@openai/agents-realtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { AgentServer } from "../../agent/agent-server.ts";
import { concat, dbfs, sine, voicedMs } from "../support/audio.ts";
import { waitFor } from "../support/loopback.ts";

let server: AgentServer;

beforeAll(async () => {
  server = await AgentServer.start({ port: 0, speed: 20 });
});
afterAll(async () => {
  await server.close();
});

interface SdkCall {
  session: RealtimeSession;
  calls: unknown[];
  audio: Buffer[];
  errors: unknown[];
  transportEvents: { type: string; [key: string]: unknown }[];
}

/** A RealtimeSession with one tool, connected to the agent over the SDK's WebSocket transport. */
async function connectSdk(): Promise<SdkCall> {
  const calls: unknown[] = [];
  const getWeather = tool({
    name: "get_weather",
    description: "The weather in a city.",
    parameters: z.object({ city: z.string().min(3), unit: z.enum(["celsius", "fahrenheit"]) }),
    execute: (args) => {
      calls.push(args);
      return Promise.resolve(`Sunny in ${args.city}, 21 degrees`);
    },
  });
  const agent = new RealtimeAgent({
    name: "weather",
    instructions: "Answer about the weather.",
    tools: [getWeather],
  });
  const session = new RealtimeSession(agent, {
    transport: new OpenAIRealtimeWebSocket({ url: server.url }),
    model: "gpt-realtime",
  });
  const sdk: SdkCall = { session, calls, audio: [], errors: [], transportEvents: [] };
  session.on("audio", (event) => sdk.audio.push(Buffer.from(event.data)));
  session.on("error", (event) => sdk.errors.push(event.error));
  session.on("transport_event", (event) =>
    sdk.transportEvents.push(event as SdkCall["transportEvents"][number]),
  );
  await session.connect({ apiKey: "sk-offline" });
  return sdk;
}

/** The SDK ran the tool once and the agent's reply, quoting its result, was heard in full. */
async function expectToolReplyHeard(sdk: SdkCall): Promise<void> {
  const replied = () =>
    sdk.session.history.some(
      (item) =>
        item.type === "message" &&
        item.role === "assistant" &&
        item.status === "completed" &&
        JSON.stringify(item.content).includes("tool returned"),
    );
  await waitFor(replied, 15_000, "the assistant's reply");
  expect(sdk.calls).toEqual([{ city: "example", unit: "celsius" }]);
  const reply = sdk.session.history.findLast((item) => item.type === "message" && item.role === "assistant");
  expect(JSON.stringify(reply)).toContain("The get_weather tool returned: Sunny in example, 21 degrees");
  const pcm = Buffer.concat(sdk.audio);
  const samples = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length >> 1);
  expect(voicedMs(samples)).toBeGreaterThan(1500);
  expect(dbfs(samples)).toBeGreaterThan(-30);
  expect(sdk.errors).toEqual([]);
}

describe("OpenAI's Agents SDK against the built-in agent", () => {
  it("a typed message: runs the app's tool with schema-valid arguments and speaks a reply that uses its result", async () => {
    const sdk = await connectSdk();
    try {
      sdk.session.sendMessage("What is the weather?");
      await expectToolReplyHeard(sdk);
    } finally {
      sdk.session.close();
    }
  });

  it("spoken audio under the SDK's defaults (semantic_vad, transcription on): a turn, a transcription failure, the tool, the reply", async () => {
    const sdk = await connectSdk();
    try {
      // 200 ms silence, 600 ms of tone, then silence past semantic_vad's 1 s wait.
      const speech = concat([new Int16Array(4800), sine(300, 600, 8000), new Int16Array(24 * 1500)]);
      for (let at = 0; at < speech.length; at += 960) {
        const chunk = speech.slice(at, at + 960);
        sdk.session.sendAudio(chunk.buffer);
      }
      await expectToolReplyHeard(sdk);
      const types = sdk.transportEvents.map((e) => e.type);
      expect(types).toContain("input_audio_buffer.speech_stopped");
      const failed = sdk.transportEvents.find(
        (e) => e.type === "conversation.item.input_audio_transcription.failed",
      );
      expect(failed?.error).toMatchObject({ code: "transcription_unavailable" });
      expect(types).not.toContain("conversation.item.input_audio_transcription.completed");
    } finally {
      sdk.session.close();
    }
  });
});
