// A tool runs end to end through a real relay process: a werift client, whose minted session
// carries a function tool, speaks; the built-in agent calls the tool over the data channel; the
// client answers with the tool's output and asks for a response; it hears the agent's spoken
// reply (judged on the decoded audio: its energy and its duration against the reply's speech).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentServer } from "../../agent/agent-server.ts";
import { EventClient, startRelayProc, type RelayProcess } from "../faults/fixtures.ts";
import { concat, dbfs, sine, voicedMs } from "../support/audio.ts";
import { waitFor } from "../support/loopback.ts";
import { TEST_SECRET } from "../support/relay-api.ts";

const WEATHER = {
  type: "function",
  name: "get_weather",
  description: "Get the current weather in a city.",
  parameters: {
    type: "object",
    properties: { city: { type: "string" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
    required: ["city", "unit"],
  },
};

let agent: AgentServer;
let relay: RelayProcess;
const clients: EventClient[] = [];

beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, reply: "speak" });
  relay = await startRelayProc({ secret: TEST_SECRET, inferenceUrl: agent.url });
}, 60_000);
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await relay?.stop("SIGKILL");
  await agent?.close();
});

describe("the built-in agent through a real relay", () => {
  it("calls the session's tool, then speaks a reply that quotes its output, and the client hears it", async () => {
    const client = new EventClient();
    clients.push(client);
    const session = { type: "realtime", tools: [WEATHER], tool_choice: "auto" };
    expect((await client.call(relay.url, session, { relayId: relay.id })).status).toBe(201);
    await client.connected();
    await client.channelOpen();
    // The model runs the minted session (whichever session event first says so).
    await waitFor(
      () =>
        client.events.some(
          (e) =>
            (e.type === "session.created" || e.type === "session.updated") &&
            (e.session as { tools?: { name: string }[] }).tools?.[0]?.name === "get_weather",
        ),
      10_000,
      "the session with the tool",
    );

    await client.say(concat([sine(300, 600, 8000), new Int16Array(24 * 800)]));
    const call = await client.waitEvent("response.function_call_arguments.done", () => true, 15_000);
    expect(call.name).toBe("get_weather");
    expect(JSON.parse(call.arguments as string)).toEqual({ city: "example", unit: "celsius" });
    const toolDone = await client.waitEvent(
      "response.done",
      (e) => (e.response as { id: string }).id === call.response_id,
    );
    expect(toolDone.response).toMatchObject({ status: "completed", output: [{ type: "function_call" }] });

    const heardFrom = client.received.length;
    client.channel.send(
      JSON.stringify({
        type: "conversation.item.create",
        item: { type: "function_call_output", call_id: call.call_id, output: "Sunny, 21 degrees" },
      }),
    );
    client.channel.send(JSON.stringify({ type: "response.create" }));
    const transcript = await client.waitEvent("response.output_audio_transcript.done", () => true, 15_000);
    expect(transcript.transcript).toBe("The get_weather tool returned: Sunny, 21 degrees");
    const responseId = transcript.response_id;
    // The relay says when the reply has finished playing to the client.
    await client.waitEvent("output_audio_buffer.stopped", (e) => e.response_id === responseId, 20_000);

    const heard = client.decodeReceived(heardFrom);
    const spoken = await agent.tts.speak(transcript.transcript as string);
    const spokenVoicedMs = voicedMs(spoken);
    // The whole reply arrived: as much voiced audio as eSpeak produced (Opus and jitter aside),
    // at a speaking level.
    expect(voicedMs(heard)).toBeGreaterThan(0.85 * spokenVoicedMs);
    expect(voicedMs(heard)).toBeLessThan(1.2 * spokenVoicedMs + 200);
    expect(spokenVoicedMs).toBeGreaterThan(1500);
    expect(dbfs(heard)).toBeGreaterThan(-35);
    console.log(
      `tool reply through the relay: ${voicedMs(heard).toFixed(0)} ms voiced heard of ${spokenVoicedMs.toFixed(0)} ms spoken, ${dbfs(heard).toFixed(1)} dBFS`,
    );
  }, 60_000);
});
