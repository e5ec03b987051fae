// Issue 4, call level: a werift client calls the relay, whose calls are bridged to the built-in
// agent over the Realtime protocol on loopback. Everything is real: WebRTC, Opus, the pacer,
// the WebSocket, Silero. The user's voice is synthesized (a tone for the agent's energy VAD,
// eSpeak speech where Silero must hear it).
import { createRequire } from "node:module";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AgentServer } from "../../agent/agent-server.ts";
import { SpeechSynthesizer } from "../../agent/tts.ts";
import { InferenceBridge } from "../../relay/inference/inference-bridge.ts";
import type { InferenceConfig } from "../../relay/config.ts";
import { SileroModel } from "../../relay/barge-in/silero-vad.ts";
import { relayUplinkMonitor } from "../../relay/barge-in/uplink-monitor.ts";
import type { CallBridgeFactory } from "../../relay/bridge.ts";
import { waitFor } from "../support/loopback.ts";
import { concat, dominantFrequency, isKeepalive, rms, sine } from "../support/audio.ts";
import { TestPeer } from "../support/peer.ts";
import { type InProcessRelay, startRelay, testConfig } from "../support/relays.ts";

const opus = createRequire(import.meta.url)("@discordjs/opus") as typeof import("@discordjs/opus");

let agent: AgentServer;
let silero: SileroModel;
let userSpeech: Int16Array;
let relay: InProcessRelay;
let upstreamUrl = "";
let inference: InferenceConfig;
/** Off only in the control test that shows the echo test can fail. */
let echoSuppression = true;
const clients: TestPeer[] = [];

beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, speed: 4 });
  silero = await SileroModel.load();
  userSpeech = await new SpeechSynthesizer().speak("Wait, stop, I have a question.");
  inference = { ...testConfig({ INFERENCE_URL: agent.url }).inference, retryBaseMs: 20, maxRetries: 2 };
  const monitor = relayUplinkMonitor({ silero, echoSuppression: true });
  // As RELAY_VAD=off RELAY_ECHO_SUPPRESSION=0 makes it: no monitor; echo frames go upstream as
  // they are and the model's own VAD decides (with the relay's VAD on, it owns interruption).
  const unsuppressed = undefined;
  // The production factory, with the upstream URL switchable per test (reply mode, failures).
  const factory: CallBridgeFactory = (ctx) =>
    new InferenceBridge(ctx, {
      config: { ...inference, url: upstreamUrl },
      uplinkMonitor: echoSuppression ? monitor : unsuppressed,
    });
  relay = await startRelay({ bridgeFactory: factory });
});
afterAll(async () => {
  await relay.close();
  await agent.close();
  await silero.close();
});
afterEach(async () => {
  echoSuppression = true;
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

type Event = { type: string; at: number; [key: string]: unknown };

/** A connected client whose oai-events messages are parsed with their arrival time. */
async function call(url: string): Promise<{ client: TestPeer; events: Event[] }> {
  upstreamUrl = url;
  const client = new TestPeer();
  clients.push(client);
  const events: Event[] = [];
  client.channel.onMessage.subscribe((m) =>
    events.push({ ...(JSON.parse(String(m)) as Event), at: performance.now() }),
  );
  expect((await client.call(relay.url)).status).toBe(201);
  await client.connected();
  await client.channelOpen();
  await waitFor(() => events.some((e) => e.type === "session.created"), 5000, "session.created");
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

/** The loudspeaker's jitter buffer: playout starts this long after the first packet arrives. */
const PLAYOUT_DELAY_FRAMES = 3;
/** Loudspeaker to microphone: exactly 100 ms. */
const ECHO_DELAY_FRAMES = 5;

/**
 * The client's room, as a device without echo cancellation makes it. The loudspeaker plays the
 * received audio on a 20 ms clock from a jitter buffer that schedules each packet by its RTP
 * timestamp (PLAYOUT_DELAY_FRAMES after the first packet's arrival; a packet that comes after its
 * turn is dropped, as a device drops it). The microphone hears the loudspeaker exactly
 * ECHO_DELAY_FRAMES later at `gain`, and each captured frame goes out as one RTP packet whose
 * timestamp is its capture time. One clock (start + n × 20 ms on performance.now()) drives
 * playout and capture and catches up when timers are late, several frames in one burst, as a
 * device's audio callbacks do: on a loaded machine the uplink arrives in bursts, but what the
 * microphone recorded, and when, does not change.
 */
class Room {
  /** Every frame the microphone captured. */
  readonly captured: Int16Array[] = [];
  /** Frames the loudspeaker played from a packet, and packets dropped for coming after their turn. */
  played = 0;
  late = 0;
  readonly #client: TestPeer;
  readonly #gain: number;
  readonly #decoder = new opus.OpusEncoder(24_000, 1);
  readonly #scheduled = new Map<number, Uint8Array>();
  readonly #speaker: Int16Array[] = [];
  #seen = 0;
  #anchor: { tick: number; timestamp: number } | null = null;
  #origin = performance.now();
  #tick = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(client: TestPeer, gain: number) {
    this.#client = client;
    this.#gain = gain;
    this.#schedule();
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(): void {
    this.#timer = setTimeout(
      () => {
        while (this.#origin + this.#tick * 20 <= performance.now()) this.#run(this.#tick++);
        if (this.#timer) this.#schedule();
      },
      Math.max(0, this.#origin + this.#tick * 20 - performance.now()),
    );
  }

  #run(tick: number): void {
    // Into the jitter buffer: each packet's turn from its RTP timestamp (960 per 20 ms).
    for (; this.#seen < this.#client.received.length; this.#seen++) {
      const packet = this.#client.received[this.#seen]!;
      this.#anchor ??= { tick: tick + PLAYOUT_DELAY_FRAMES, timestamp: packet.timestamp };
      const turn = this.#anchor.tick + ((packet.timestamp - this.#anchor.timestamp) | 0) / 960;
      if (turn < tick) this.late++;
      else this.#scheduled.set(turn, packet.payload);
    }
    const payload = this.#scheduled.get(tick);
    this.#scheduled.delete(tick);
    let out = new Int16Array(480);
    if (payload) {
      const pcm = this.#decoder.decode(Buffer.from(payload));
      out = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2).slice(0, 480);
      this.played++;
    }
    this.#speaker.push(out);
    const heard = this.#speaker.length > ECHO_DELAY_FRAMES ? this.#speaker.shift()! : new Int16Array(480);
    const frame = new Int16Array(480);
    for (let i = 0; i < 480; i++) frame[i] = Math.round(heard[i]! * this.#gain);
    this.captured.push(frame);
    for (const packet of this.#client.encodeFrames(frame))
      void this.#client.transceiver.sender.sendRtp(packet);
  }
}

/** Plays a reply into the room and returns the call's events once its playout and echo are over. */
async function replyIntoRoom(): Promise<{ client: TestPeer; events: Event[]; room: Room }> {
  const { client, events } = await call(agent.url);
  const room = new Room(client, 0.8);
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
    // The tail: the jitter buffer, the echo path and the uplink.
    await new Promise((r) => setTimeout(r, 500));
  } finally {
    room.stop();
  }
  return { client, events, room };
}

/** Decodes each received packet of audio (not the idle keepalive) in order, with its arrival time. */
function decodePackets(client: TestPeer): { at: number; pcm: Int16Array }[] {
  const decoder = new opus.OpusEncoder(24_000, 1);
  return client.received
    .filter((p) => !isKeepalive(p))
    .map((p) => {
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

  it("barge-in: the client talks over the agent; audio stops at once, truncate matches what it heard", async () => {
    const { client, events } = await call(agent.url);
    client.channel.send(JSON.stringify({ type: "response.create" }));
    const created = await waitEvent(events, "response.created");
    await waitFor(() => client.received.length >= 50, 10_000, "1 s of the reply");
    // The relay owns interruption (its Silero VAD): the user says a sentence over the reply.
    const spokeAt = performance.now();
    void client.sendPackets(client.encodeFrames(concat([userSpeech, new Int16Array(24_000)])));
    const truncated = await waitEvent(events, "conversation.item.truncated");
    await waitEvent(events, "output_audio_buffer.cleared", (e) => e.response_id === responseId(created));
    // Let any late audio arrive, if the relay were to send it.
    await new Promise((r) => setTimeout(r, 500));
    // The reply's packets: the idle keepalive goes on while the reply is held, and is silence.
    const packets = client.received.filter((p) => !isKeepalive(p));
    // The reply is held at the speech onset (Silero's 64 ms, plus the first words' rise).
    expect(packets.filter((p) => p.at > spokeAt + 250)).toEqual([]);
    // What the client heard of the reply, to the frame, against the model's truncation point.
    const heardMs = packets.length * 20;
    expect(Math.abs((truncated.audio_end_ms as number) - heardMs)).toBeLessThanOrEqual(20);
    expect(truncated.audio_end_ms as number).toBeGreaterThanOrEqual(1000);
    expect(events.filter((e) => e.type === "error")).toEqual([]);
  });

  it("the assistant's own echo in the client's microphone causes no barge-in", async () => {
    const { client, events, room } = await replyIntoRoom();
    console.log(`echo room: ${room.played} frames played, ${room.late} packets after their turn`);
    // The echo really reached the relay at speaking level, for the whole reply.
    expect(rms(concat(room.captured))).toBeGreaterThan(1000);
    expect(room.played * 20).toBeGreaterThan(3000);
    expect(events.filter((e) => e.type === "input_audio_buffer.speech_started")).toEqual([]);
    expect(events.filter((e) => e.type === "output_audio_buffer.cleared")).toEqual([]);
    expect(events.filter((e) => e.type === "conversation.item.truncated")).toEqual([]);
    expect((find(events, "response.done")!.response as { status: string }).status).toBe("completed");
    expect(client.received.length * 20).toBeGreaterThan(3000);
  }, 40_000);

  it("the same echo without echo suppression is taken for the user (the echo test can fail)", async () => {
    echoSuppression = false;
    const { events, room } = await replyIntoRoom();
    expect(rms(concat(room.captured))).toBeGreaterThan(1000);
    // The model's VAD hears the echo as speech and the reply is cut off.
    expect(events.filter((e) => e.type === "input_audio_buffer.speech_started").length).toBeGreaterThan(0);
    expect(find(events, "output_audio_buffer.cleared")).toBeDefined();
  }, 40_000);

  it("malformed data-channel messages get error events and the call lives on", async () => {
    const { client, events } = await call(agent.url);
    client.channel.send("not json");
    client.channel.send(JSON.stringify({ type: "response.cancel", response_id: 12 }));
    client.channel.send(JSON.stringify({ nope: 1 }));
    await waitFor(() => events.filter((e) => e.type === "error").length >= 3, 5000, "three errors");
    expect(events.filter((e) => e.type === "error").map((e) => (e.error as { code: string }).code)).toEqual([
      "invalid_json",
      "invalid_type",
      "missing_type",
    ]);
    client.channel.send(JSON.stringify({ type: "response.create" }));
    await waitEvent(events, "response.created");
    await waitFor(() => client.received.length >= 10, 5000, "reply audio");
    expect(relay.calls.get(client.callId)?.state).toBe("connected");
  });

  it("an upstream drop mid-call gives the client an error event and ends the call cleanly", async () => {
    const own = await AgentServer.start({ port: 0 });
    const { client, events } = await call(own.url);
    const relayCall = relay.calls.get(client.callId)!;
    const ended = new Promise<string>((resolve) =>
      relayCall.once("ended", (reason: string) => resolve(reason)),
    );
    await own.close();
    expect(await ended).toBe("inference_lost");
    const error = await waitEvent(events, "error", () => true, 5000);
    expect(error.error).toMatchObject({ type: "server_error", code: "inference_lost" });
    await waitFor(() => !relay.calls.has(client.callId), 5000, "call removed");
  });
});
