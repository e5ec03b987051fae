// A call on a bad network (issue 19), through the impairment proxy both ways, a relay process
// with production defaults and a Realtime upstream in this process: speech gets through each way,
// barge-in still truncates the model at what the client heard, and a 2 s blackout neither ends
// the call nor keeps audio from coming back. Generous bounds; bench/network.ts has the figures.
import { afterAll, beforeAll, expect, it } from "vitest";
import { SpeechSynthesizer } from "../../agent/tts.ts";
import { NetworkModel, runNetworkCall, type NetworkCallOptions } from "../support/network-call.ts";
import { metricsAuth, TEST_SECRET } from "../support/relay-api.ts";
import { startRelayProcess, type RelayProcess } from "../support/relays.ts";

let model: NetworkModel;
let relay: RelayProcess;
let speech: Pick<NetworkCallOptions, "reply" | "speech" | "interruption">;

beforeAll(async () => {
  model = await NetworkModel.start();
  relay = await startRelayProcess({
    inferenceUrl: model.url,
    env: { RELAY_STATS_SECONDS: "1", LOG_LEVEL: "warn" },
  });
  const tts = new SpeechSynthesizer();
  speech = {
    // Long enough (4.5 s) that 1 s in, the interruption's 480 ms of speech ends the reply early.
    reply: await tts.speak(
      "Sure. The train leaves at seven fifteen from platform two, and it takes about an hour.",
    ),
    speech: await tts.speak("A table for four on Friday evening, please."),
    interruption: await tts.speak("Wait, stop, I have a question."),
  };
}, 60_000);

afterAll(async () => {
  await relay?.stop();
  await model?.close();
});

const target = () => ({
  url: relay.url,
  relayId: relay.id,
  secret: TEST_SECRET,
  metrics: async () => (await fetch(`${relay.url}/metrics`, { headers: metricsAuth })).text(),
});

// One impaired call is one draw of the seeded loss against a live VAD: a draw where the loss
// lands in the interruption's first syllables lets the reply resume and cut later (seen once in
// CI: no truncate within 3 s). A second and third call must then show the guarantee.
it(
  "at 5 % loss and 40 ms jitter each way, speech gets through and barge-in truncates at what was heard",
  { timeout: 60_000, retry: 2 },
  async () => {
    const result = await runNetworkCall({
      relay: target(),
      model,
      profile: { loss: 0.05, jitterMs: 40 },
      seed: 19,
      ...speech,
    });
    // Measured (bench/README.md): 98.8 % up (all frames, pauses included, where SILK sends no FEC;
    // 95 % seen on a loaded machine) and 100 % of the reply's speech frames down.
    expect(result.uplink.deliveredOrRecoveredPercent).toBeGreaterThanOrEqual(93);
    expect(result.downlink.deliveredOrRecoveredPercent).toBeGreaterThanOrEqual(97);
    // Lost frames were rebuilt from FEC, not only concealed, in both directions.
    expect(result.uplink.recovered).toBeGreaterThan(0);
    expect(result.downlink.recovered).toBeGreaterThan(0);
    // The received speech still has the sent speech's spectral shape (clean Opus scores ~0.95).
    expect(result.uplink.quality).toBeGreaterThan(0.85);
    expect(result.downlink.quality).toBeGreaterThan(0.85);
    // Barge-in happened, and the model was truncated within 3 frames of what the client heard.
    expect(result.bargeInMs).toBeLessThan(1500);
    expect(Math.abs(result.truncateErrorMs)).toBeLessThanOrEqual(60);
    expect(result.survived).toBe(true);
  },
);

it("after a 2 s blackout both ways, audio comes back at once and the call goes on", async () => {
  const result = await runNetworkCall({
    relay: target(),
    model,
    profile: {},
    blackoutMs: 2000,
    seed: 20,
    ...speech,
  });
  expect(result.survived).toBe(true);
  // The target is 200 ms; the bound is generous for a loaded machine.
  expect(result.downlinkResumeMs).toBeLessThan(500);
  expect(result.uplinkResumeMs).toBeLessThan(500);
  // The uplink phase after the blackout is whole again.
  expect(result.uplink.deliveredOrRecoveredPercent).toBeGreaterThanOrEqual(99);
  expect(result.uplink.quality).toBeGreaterThan(0.85);
  expect(Math.abs(result.truncateErrorMs)).toBeLessThanOrEqual(60);
}, 60_000);
