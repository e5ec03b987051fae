// OpenAI's own Agents SDK (@openai/agents-realtime, RealtimeSession over its WebSocket transport)
// against the built-in agent, as an app developer would run it offline: the SDK's tool runs with
// schema-valid arguments, and the agent's spoken reply uses its result.
import { OpenAIRealtimeWebSocket, RealtimeAgent, RealtimeSession, tool } from "@openai/agents-realtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { AgentServer } from "../../agent/agent-server.ts";
import { dbfs, voicedMs } from "../support/audio.ts";
import { waitFor } from "../support/loopback.ts";

let server: AgentServer;

beforeAll(async () => {
  server = await AgentServer.start({ port: 0, speed: 20 });
});
afterAll(async () => {
  await server.close();
});

describe("OpenAI's Agents SDK against the built-in agent", () => {
  it("runs the app's tool with schema-valid arguments and gets a spoken reply that uses its result", async () => {
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
    const audio: Buffer[] = [];
    session.on("audio", (event) => audio.push(Buffer.from(event.data)));
    const errors: unknown[] = [];
    session.on("error", (event) => errors.push(event.error));
    try {
      await session.connect({ apiKey: "sk-offline" });
      session.sendMessage("What is the weather?");
      const replied = () =>
        session.history.some(
          (item) =>
            item.type === "message" &&
            item.role === "assistant" &&
            item.status === "completed" &&
            JSON.stringify(item.content).includes("tool returned"),
        );
      await waitFor(replied, 15_000, "the assistant's reply");
      expect(calls).toEqual([{ city: "example", unit: "celsius" }]);
      const reply = session.history.findLast((item) => item.type === "message" && item.role === "assistant");
      expect(JSON.stringify(reply)).toContain("The get_weather tool returned: Sunny in example, 21 degrees");
      const pcm = Buffer.concat(audio);
      const samples = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length >> 1);
      expect(voicedMs(samples)).toBeGreaterThan(1500);
      expect(dbfs(samples)).toBeGreaterThan(-30);
      expect(errors).toEqual([]);
    } finally {
      session.close();
    }
  });
});
