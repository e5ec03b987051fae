// The downlink encoders' complexity follows the relay's load (RELAY_OPUS_COMPLEXITY=auto):
// the policy at its thresholds, and a real relay whose encoders change complexity mid-call
// while the client keeps hearing the same tone.
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../relay/config.ts";
import { EncoderGovernor } from "../../../relay/media/encoder-governor.ts";
import { RecordingBridge, connectRecorded } from "../fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { dominantFrequency, isKeepalive, rms, sine } from "../../support/audio.ts";
import { useRelay, testEnv } from "../../support/relays.ts";

describe("EncoderGovernor policy", () => {
  it("steps down after two samples at 85 % busy, not after one or at 84.9 %", () => {
    const seen: number[] = [];
    const governor = new EncoderGovernor({ onChange: (c) => seen.push(c) });
    expect(governor.complexity).toBe(5);
    governor.observe(0.85);
    governor.observe(0.849); // in between: the count starts again
    governor.observe(0.85);
    expect(governor.complexity).toBe(5);
    governor.observe(0.9);
    expect(governor.complexity).toBe(4);
    governor.observe(0.95);
    governor.observe(0.95);
    expect(governor.complexity).toBe(2);
    governor.observe(1);
    governor.observe(1);
    expect(governor.complexity).toBe(2); // the bottom of the ladder
    expect(seen).toEqual([4, 2]);
  });

  it("steps back up after five samples at 70 % or less, not after four or at 70.1 %", () => {
    const governor = new EncoderGovernor();
    for (let i = 0; i < 4; i++) governor.observe(0.9);
    expect(governor.complexity).toBe(2);
    for (let i = 0; i < 4; i++) governor.observe(0.7);
    governor.observe(0.701);
    for (let i = 0; i < 4; i++) governor.observe(0.5);
    expect(governor.complexity).toBe(2);
    governor.observe(0.5);
    expect(governor.complexity).toBe(4);
    for (let i = 0; i < 5; i++) governor.observe(0.1);
    expect(governor.complexity).toBe(5);
  });

  it("sets every registered encoder, and no longer one that was released", () => {
    const governor = new EncoderGovernor({ downAfter: 1 });
    const a: number[] = [];
    const b: number[] = [];
    governor.register((c) => a.push(c));
    const releaseB = governor.register((c) => b.push(c));
    governor.observe(0.9);
    releaseB();
    governor.observe(0.9);
    expect(a).toEqual([4, 2]);
    expect(b).toEqual([4]);
  });

  it("a fixed RELAY_OPUS_COMPLEXITY never moves; 10 is accepted and 11 refused", () => {
    const governor = new EncoderGovernor({
      ladder: [loadConfig(testEnv({ RELAY_OPUS_COMPLEXITY: "10" })).opusComplexity as number],
    });
    for (let i = 0; i < 10; i++) governor.observe(1);
    expect(governor.complexity).toBe(10);
    expect(loadConfig(testEnv()).opusComplexity).toBe("auto");
    expect(() => loadConfig(testEnv({ RELAY_OPUS_COMPLEXITY: "11" }))).toThrow(/RELAY_OPUS_COMPLEXITY/);
    expect(() => loadConfig(testEnv({ RELAY_OPUS_COMPLEXITY: "fast" }))).toThrow(/RELAY_OPUS_COMPLEXITY/);
  });
});

describe("a relay under load", () => {
  const relay = useRelay({ bridgeFactory: RecordingBridge.factory });

  it("changes a live call's encoder complexity and the client hears the tone throughout", async () => {
    const { client, bridge } = await connectRecorded(relay);
    const governor = relay.encoderGovernor;
    expect(governor.encoders).toBe(1);
    bridge.ctx.downlink.push("item_1", 0, sine(660, 1500, 8000));
    // The tone's packets; an idle keepalive before it is no part of it.
    const sounding = () => client.received.filter((p) => !isKeepalive(p));
    await waitFor(() => sounding().length >= 25, 5000, "25 packets");
    // As if the event loop had been over 85 % busy for two seconds, twice: 5 → 4 → 2.
    for (let i = 0; i < 4; i++) governor.observe(0.95);
    expect(governor.complexity).toBe(2);
    expect(await relay.metrics.opusComplexity.get()).toMatchObject({ values: [{ value: 2 }] });
    await waitFor(() => sounding().length >= 75, 5000, "75 packets");
    await new Promise((r) => setTimeout(r, 100));
    expect(sounding().length).toBe(75);
    const pcm = client.decodeReceived(client.received.indexOf(sounding()[0]!));
    // Every 20 ms window after the codec's start-up carries the tone: no gap at the switch.
    for (let at = 2400; at + 480 <= pcm.length; at += 480) {
      expect(rms(pcm.subarray(at, at + 480))).toBeGreaterThan((8000 / Math.SQRT2) * 0.6);
    }
    expect(Math.abs(dominantFrequency(pcm.subarray(2400)) - 660)).toBeLessThanOrEqual(10);
    for (let i = 0; i < 10; i++) governor.observe(0.2);
    expect(governor.complexity).toBe(5);
    await relay.calls.get(client.callId)!.end("hangup");
    expect(governor.encoders).toBe(0);
    await client.close();
  });
});
