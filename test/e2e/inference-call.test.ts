// Issue 4, call level: a werift client calls the relay, whose calls are bridged to the built-in
// agent over the Realtime protocol on loopback. Everything is real: WebRTC, Opus, the pacer,
// the WebSocket, Silero. The user's voice is synthesized (a tone for the agent's energy VAD,
// eSpeak speech where Silero must hear it).
import { createRequire } from "node:module";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AgentServer } from "../../relay/agent/agent-server.ts";
import { InferenceBridge } from "../../relay/inference/inference-bridge.ts";
import { inferenceConfigFromEnv, type InferenceConfig } from "../../relay/inference/inference-config.ts";
import { SileroModel } from "../../relay/vad/silero-vad.ts";
import { relayUplinkMonitor } from "../../relay/vad/uplink-monitor.ts";
import type { CallBridgeFactory } from "../../relay/bridge.ts";
import {
  TestClient,
  concat,
  dominantFrequency,
  rms,
  sine,
  startRelay,
  waitFor,
  type InProcessRelay,
} from "../relay/fixtures.ts";

const opus = createRequire(import.meta.url)("@discordjs/opus") as typeof import("@discordjs/opus");

let agent: AgentServer;
let silero: SileroModel;
let relay: InProcessRelay;
let upstreamUrl = "";
let inference: InferenceConfig;
const clients: TestClient[] = [];

beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, speed: 4 });
  silero = await SileroModel.load();
  inference = { ...inferenceConfigFromEnv({ INFERENCE_URL: agent.url }), retryBaseMs: 20, maxRetries: 2 };
  const monitor = relayUplinkMonitor({ silero, echoSuppression: true });
  // The production factory, with the upstream URL switchable per test (reply mode, failures).
  const factory: CallBridgeFactory = (ctx) =>
    new InferenceBridge(ctx, { config: { ...inference, url: upstreamUrl }, uplinkMonitor: monitor });
  relay = await startRelay({ bridgeFactory: factory });
});
afterAll(async () => {
  await relay.close();
  await agent.close();
  await silero.close();
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

type Event = { type: string; at: number; [key: string]: unknown };

/** A connected client whose oai-events messages are parsed with their arrival time. */
async function call(url: string): Promise<{ client: TestClient; events: Event[] }> {
  upstreamUrl = url;
  const client = new TestClient();
  clients.push(client);
  const events: Event[] = [];
  client.channel.onMessage.subscribe((m) =>
    events.push({ ...(JSON.parse(String(m)) as Event), at: performance.now() }),
  );
  expect((await client.call(relay.url)).status).toBe(201);
  await client.connected();
  await client.channelOpen();
  await waitFor(() => events.some((e) => e.type === "session.updated"), 5000, "session.updated");
  return { client, events };
}

const find = (events: Event[], type: string, predicate: (e: Event) => boolean = () => true) =>
  events.find((e) => e.type === type && predicate(e));
const waitEvent = async (
  events: Event[],
  type: string,
  predicate: (e: Event) => boolean = () => true,
  ms = 10_000,
) => {
  await waitFor(() => find(events, type, predicate) !== undefined, ms, type);
  return find(events, type, predicate)!;
};
const responseId = (e: Event) => (e.response as { id: string }).id;

/** Decodes each received packet in order, with its arrival time. */
function decodePackets(client: TestClient): { at: number; pcm: Int16Array }[] {
  const decoder = new opus.OpusEncoder(24_000, 1);
  return client.received.map((p) => {
    const pcm = decoder.decode(p.payload);
    return { at: p.at, pcm: new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2) };
  });
}

describe("a call through the relay to the built-in agent", () => {
  it("the client speaks and hears the agent's reply: its own pitch echoed back", async () => {
    const { client, events } = await call(agent.url + "?reply=echo");
    await client.sendPackets(client.encodeFrames(concat([sine(440, 1000, 8000), new Int16Array(24_000)])));
    const created = await waitEvent(events, "response.created");
    await waitEvent(events, "response.done");
    await waitEvent(
      events,
      "output_audio_buffer.stopped",
      (e) => e.response_id === responseId(created),
      5000,
    );
    const heard = concat(decodePackets(client).map((p) => p.pcm));
    expect(heard.length / 24).toBeGreaterThanOrEqual(1000);
    expect(Math.abs(dominantFrequency(heard.subarray(2400)) - 440)).toBeLessThanOrEqual(10);
    expect(rms(heard.subarray(2400, 21_600))).toBeGreaterThan(3000);
    expect(events.filter((e) => e.type.endsWith("audio.delta"))).toEqual([]);
  });

  it("barge-in: the client talks over the agent; audio stops within a frame, truncate matches what it heard", async () => {
    const { client, events } = await call(agent.url);
    client.channel.send(JSON.stringify({ type: "response.create" }));
    const created = await waitEvent(events, "response.created");
    await waitFor(() => client.received.length >= 50, 10_000, "1 s of the reply");
    void client.sendPackets(client.encodeFrames(concat([sine(300, 700, 8000), new Int16Array(24_000)])));
    const started = await waitEvent(events, "input_audio_buffer.speech_started");
    const truncated = await waitEvent(events, "conversation.item.truncated");
    await waitEvent(events, "output_audio_buffer.cleared", (e) => e.response_id === responseId(created));
    const done = await waitEvent(events, "response.done", (e) => responseId(e) === responseId(created));
    expect((done.response as { status: string }).status).toBe("cancelled");
    // Let any late audio arrive, if the relay were to send it.
    await new Promise((r) => setTimeout(r, 500));
    const packets = client.received;
    const afterStart = packets.filter((p) => p.at > started.at);
    expect(afterStart.length).toBeLessThanOrEqual(1);
    // What the client heard of the reply, to the frame, against the model's truncation point.
    const heardMs = packets.length * 20;
    expect(Math.abs((truncated.audio_end_ms as number) - heardMs)).toBeLessThanOrEqual(20);
    expect(truncated.audio_end_ms as number).toBeGreaterThanOrEqual(1000);
    expect(events.filter((e) => e.type === "error")).toEqual([]);
  });

  it("the assistant's own echo in the client's microphone causes no barge-in", async () => {
    const { client, events } = await call(agent.url);
    // The "microphone": every 20 ms, what the client heard 100 ms ago at 80 %, as Opus.
    const decoder = new opus.OpusEncoder(24_000, 1);
    const heard: Int16Array[] = [];
    let seen = 0;
    const delayFrames = 5;
    const frames: Int16Array[] = [];
    const mic = setInterval(() => {
      for (; seen < client.received.length; seen++) {
        const pcm = decoder.decode(client.received[seen]!.payload);
        heard.push(new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2));
      }
      const source =
        heard.length > delayFrames ? heard[heard.length - 1 - delayFrames]! : new Int16Array(480);
      const frame = new Int16Array(480);
      for (let i = 0; i < 480; i++) frame[i] = Math.round(source[i]! * 0.8);
      frames.push(frame);
      for (const packet of client.encodeFrames(frame)) void client.transceiver.sender.sendRtp(packet);
    }, 20);
    try {
      client.channel.send(JSON.stringify({ type: "response.create" }));
      const created = await waitEvent(events, "response.created");
      await waitEvent(events, "response.done", (e) => responseId(e) === responseId(created), 15_000);
      await waitFor(
        () =>
          find(events, "output_audio_buffer.stopped") !== undefined ||
          find(events, "output_audio_buffer.cleared") !== undefined,
        20_000,
        "playout end",
      );
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      clearInterval(mic);
    }
    // The echo really reached the relay at speaking level.
    expect(rms(concat(frames))).toBeGreaterThan(1000);
    expect(events.filter((e) => e.type === "input_audio_buffer.speech_started")).toEqual([]);
    expect(events.filter((e) => e.type === "output_audio_buffer.cleared")).toEqual([]);
    expect(events.filter((e) => e.type === "conversation.item.truncated")).toEqual([]);
    expect((find(events, "response.done")!.response as { status: string }).status).toBe("completed");
    expect(client.received.length * 20).toBeGreaterThan(3000);
  }, 40_000);

  it("malformed data-channel messages get error events and the call lives on", async () => {
    const { client, events } = await call(agent.url);
    client.channel.send("not json");
    client.channel.send(JSON.stringify({ type: "response.cancel", response_id: 12 }));
    client.channel.send(JSON.stringify({ nope: 1 }));
    await waitFor(() => events.filter((e) => e.type === "error").length >= 3, 5000, "three errors");
    expect(events.filter((e) => e.type === "error").map((e) => (e.error as { code: string }).code)).toEqual([
      "invalid_json",
      "invalid_value",
      "missing_type",
    ]);
    client.channel.send(JSON.stringify({ type: "response.create" }));
    await waitEvent(events, "response.created");
    await waitFor(() => client.received.length >= 10, 5000, "reply audio");
    expect(relay.server.calls.get(client.callId)?.state).toBe("connected");
  });

  it("an upstream drop mid-call gives the client an error event and ends the call cleanly", async () => {
    const own = await AgentServer.start({ port: 0 });
    const { client, events } = await call(own.url);
    const relayCall = relay.server.calls.get(client.callId)!;
    const ended = new Promise<string>((resolve) =>
      relayCall.once("ended", (reason: string) => resolve(reason)),
    );
    await own.close();
    expect(await ended).toBe("inference_lost");
    const error = await waitEvent(events, "error", () => true, 5000);
    expect(error.error).toMatchObject({ type: "server_error", code: "inference_lost" });
    await waitFor(() => !relay.server.calls.has(client.callId), 5000, "call removed");
  });
});
