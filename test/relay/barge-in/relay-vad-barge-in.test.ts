// The relay's own VAD and echo suppression, with the real agent upstream, real Silero, and a
// real 20 ms pacer clock (PacedDownlink). The "client" echoes what the pacer sent back into the
// uplink, as a loudspeaker next to a microphone without echo cancellation would.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AgentServer } from "../../../agent/agent-server.ts";
import { SpeechSynthesizer } from "../../../agent/tts.ts";
import { InferenceBridge } from "../../../relay/inference/inference-bridge.ts";
import { FRAME_SAMPLES } from "../../../relay/media/audio-format.ts";
import { SileroModel } from "../../../relay/barge-in/silero-vad.ts";
import { relayUplinkMonitor } from "../../../relay/barge-in/uplink-monitor.ts";
import { testCall, type TestCall } from "../inference/bridge-fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { concat } from "../../support/audio.ts";
import { testConfig } from "../../support/relays.ts";

let agent: AgentServer;
let silero: SileroModel;
let userSpeech: Int16Array;
const cleanups: (() => void)[] = [];

beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, speed: 4 });
  silero = await SileroModel.load();
  userSpeech = await new SpeechSynthesizer().speak("Sorry to interrupt, but that is not what I asked.");
});
afterAll(async () => {
  await agent.close();
  await silero.close();
});
afterEach(() => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

/**
 * A call with the session's default turn settings (server VAD, interrupt_response). The relay's
 * VAD owns interruption: the upstream is told `interrupt_response: false`, so only the relay
 * barges in (its response.cancel shows as `client_cancelled`, the agent's own as `turn_detected`).
 */
function start(): { call: TestCall; bridge: InferenceBridge } {
  const call = testCall();
  const bridge = new InferenceBridge(call.ctx, {
    config: testConfig({ INFERENCE_URL: agent.url }).inference,
    uplinkMonitor: relayUplinkMonitor({ silero, echoSuppression: true }),
  });
  call.downlink.bridge = bridge;
  call.channel.open = true;
  bridge.onChannelOpen();
  cleanups.push(() => {
    bridge.close();
    call.close();
  });
  return { call, bridge };
}

/**
 * Every pacer tick, the "client" sends one uplink frame: the echo of what was sent `delayFrames`
 * ago at `echoGain`, plus the next frame of `user` speech once `userFrom()` says so.
 */
function clientLoop(call: TestCall, bridge: InferenceBridge, delayFrames: number, echoGain: number) {
  const history: Int16Array[] = [];
  const frame = new Int16Array(FRAME_SAMPLES);
  const state = { user: null as Int16Array | null, userAt: 0, userStartedAt: 0 };
  call.downlink.onFrameSent = (sent) => {
    history.push(sent.itemId ? sent.pcm : new Int16Array(FRAME_SAMPLES));
    const echo = history.length > delayFrames ? history[history.length - 1 - delayFrames]! : null;
    for (let i = 0; i < FRAME_SAMPLES; i++) {
      let v = echo ? echo[i]! * echoGain : 0;
      if (state.user && state.userAt + i < state.user.length) v += state.user[state.userAt + i]!;
      frame[i] = Math.max(-32768, Math.min(32767, Math.round(v)));
    }
    if (state.user) state.userAt += FRAME_SAMPLES;
    bridge.onUplinkFrame(frame);
  };
  return {
    userSays(pcm: Int16Array) {
      state.user = pcm;
      state.userAt = 0;
      state.userStartedAt = performance.now();
    },
    get userStartedAt() {
      return state.userStartedAt;
    },
  };
}

describe("relay VAD and echo suppression", () => {
  it("the assistant's own echo, fed back at 80 % with 120 ms delay, causes no barge-in", async () => {
    const { call, bridge } = start();
    clientLoop(call, bridge, 6, 0.8);
    await call.channel.waitFor("session.created");
    bridge.onClientMessage(JSON.stringify({ type: "response.create" }));
    const created = await call.channel.waitFor("response.created");
    const responseId = (created.response as { id: string }).id;
    const done = await call.channel.waitFor(
      "response.done",
      (e) => (e.response as { id: string }).id === responseId,
      15_000,
    );
    expect((done.response as { status: string }).status).toBe("completed");
    await waitFor(() => call.downlink.queuedMs === 0, 15_000, "the reply to play out");
    // Plus the echo tail: wait for the playout to be reported stopped.
    await call.channel.waitFor("output_audio_buffer.stopped", (e) => e.response_id === responseId, 15_000);
    await new Promise((r) => setTimeout(r, 300));
    const itemId = call.downlink.pushes[0]!.itemId;
    expect(call.downlink.flushes).toEqual([]);
    expect(call.downlink.holds).toEqual([]);
    expect(call.channel.ofType("input_audio_buffer.speech_started")).toEqual([]);
    expect(call.channel.ofType("output_audio_buffer.cleared")).toEqual([]);
    expect(call.channel.ofType("conversation.item.truncated")).toEqual([]);
    // The user heard the whole reply.
    expect(call.downlink.ledger.sentMs(itemId)).toBe(call.downlink.ledger.generatedMs(itemId));
    expect(call.downlink.ledger.sentMs(itemId)).toBeGreaterThan(3000);
  }, 30_000);

  it("the user speaking over the assistant is heard by the relay's VAD: held at once, then an exact truncate", async () => {
    const { call, bridge } = start();
    const client = clientLoop(call, bridge, 6, 0);
    await call.channel.waitFor("session.created");
    bridge.onClientMessage(JSON.stringify({ type: "response.create" }));
    const created = await call.channel.waitFor("response.created");
    const responseId = (created.response as { id: string }).id;
    await waitFor(() => call.downlink.sent.length >= 30, 10_000, "600 ms of reply");
    client.userSays(concat([userSpeech, new Int16Array(24_000)]));
    await waitFor(() => call.downlink.flushes.length > 0, 5000, "relay barge-in");
    // The reply stops at the hold (speech onset); the barge-in follows once the speech lasts.
    const stoppedAt = call.downlink.holds[0]?.at ?? call.downlink.flushes[0]!.at;
    const latency = stoppedAt - client.userStartedAt;
    console.log(`relay VAD: user speech onset → downlink held in ${latency.toFixed(0)} ms`);
    // A generous bound (latency is what `npm run bench` measures, about 80-140 ms here): it
    // catches a VAD that reacts to nothing or only at the end of speech, not a slow machine.
    expect(latency).toBeLessThan(500);
    const truncated = await call.channel.waitFor("conversation.item.truncated");
    expect(truncated.audio_end_ms).toBe(call.downlink.ledger.sentMs(truncated.item_id as string));
    // Never the agent's own cut: the relay told it interrupt_response: false.
    const done = await call.channel.waitFor(
      "response.done",
      (e) => (e.response as { id: string }).id === responseId,
    );
    expect((done.response as { status_details: { reason?: string } | null }).status_details?.reason).not.toBe(
      "turn_detected",
    );
    await call.channel.waitFor("output_audio_buffer.cleared");
    const flushedAt = call.downlink.flushes[0]!.at;
    expect(call.downlink.pushes.filter((p) => p.at > flushedAt)).toEqual([]);
    expect(call.downlink.sent.filter((f) => f.at > stoppedAt)).toEqual([]);
  });

  it("the user talking over their own echo still barges in (double talk)", async () => {
    const { call, bridge } = start();
    const client = clientLoop(call, bridge, 6, 0.3);
    await call.channel.waitFor("session.created");
    bridge.onClientMessage(JSON.stringify({ type: "response.create" }));
    await call.channel.waitFor("response.created");
    await waitFor(() => call.downlink.sent.length >= 40, 10_000, "800 ms of reply");
    expect(call.downlink.flushes).toEqual([]);
    client.userSays(concat([userSpeech, new Int16Array(24_000)]));
    await waitFor(() => call.downlink.flushes.length > 0, 5000, "relay barge-in");
    const stoppedAt = call.downlink.holds[0]?.at ?? call.downlink.flushes[0]!.at;
    expect(stoppedAt - client.userStartedAt).toBeLessThan(400);
  });
});
