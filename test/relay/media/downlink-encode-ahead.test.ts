// The downlink encodes each frame a tick ahead (prepare(), run by the pacer after its tick, and
// on push for a reply's first frame), so the pacer's tick only sends: with the relay's own Opus
// encoder, driven tick by tick as the pacer drives it. A barge-in's flush must drop the frame
// encoded ahead (the next tick plays the next reply, not the interrupted one), a hold must keep
// it, and the ledger and queue must count exactly what went out. The client is a real Opus decoder.
import { describe, expect, it } from "vitest";
import { Downlink, type SentFrame } from "../../../relay/media/downlink.ts";
import { LossAdaptiveOpusEncoder } from "../../../relay/media/loss-adaptive-encoder.ts";
import { Pacer } from "../../../relay/media/pacer.ts";
import { FRAME, decodeOpus, dominantFrequency, rms, sine, toneAmplitude } from "../../support/audio.ts";

function setup() {
  const encoder = new LossAdaptiveOpusEncoder(5);
  let encodes = 0;
  const counting = {
    timestampStep: encoder.timestampStep,
    silenceFrame: encoder.silenceFrame,
    encode(pcm: Int16Array, out: Uint8Array) {
      encodes++;
      return encoder.encode(pcm, out);
    },
  };
  const packets: { payload: Buffer; timestamp: number }[] = [];
  const reports: SentFrame[] = [];
  const downlink = new Downlink({
    encoder: counting,
    send: (payload, _sequence, timestamp) => packets.push({ payload, timestamp }),
    observer: { onPlayoutStarted() {}, onPlayoutStopped() {}, onFrameSent: (f) => reports.push({ ...f }) },
    initialTimestamp: 0,
  });
  let index = 0;
  /** Runs `n` pacer ticks, each followed by its prepare; returns the encodes inside the ticks. */
  const ticks = (n: number): number => {
    let inTicks = 0;
    for (let i = 0; i < n; i++) {
      const before = encodes;
      downlink.tick(index++);
      inTicks += encodes - before;
      downlink.prepare();
    }
    return inTicks;
  };
  return { downlink, packets, reports, ticks, encodes: () => encodes };
}

/** What the client hears of these packets, without the idle keepalives. */
const heard = (packets: { payload: Buffer }[]) =>
  decodeOpus(packets.filter((p) => p.payload.length > 3).map((p) => p.payload));

describe("Downlink encoding a tick ahead", () => {
  it("encodes a reply's first frame on arrival and each next one after a tick: the ticks only send", () => {
    const { downlink, packets, ticks, encodes } = setup();
    downlink.push("a", 0, sine(440, 1000)); // 50 frames
    expect(encodes()).toBe(1);
    expect(downlink.queuedMs).toBe(1000); // the prepared frame is still queued
    expect(ticks(60)).toBe(0);
    expect(encodes()).toBe(50);
    expect(packets).toHaveLength(50);
    const pcm = heard(packets);
    expect(pcm.length).toBe(50 * FRAME);
    expect(dominantFrequency(pcm.subarray(FRAME))).toBe(440);
    expect(rms(pcm.subarray(5 * FRAME))).toBeGreaterThan(6000);
    expect(downlink.ledger.sentMs("a")).toBe(1000);
    expect(downlink.queuedMs).toBe(0);
  });

  it("leaves an item's last partial frame to the tick, which pads it after PARTIAL_FRAME_WAIT_TICKS", () => {
    const { downlink, reports, ticks, encodes } = setup();
    downlink.push("a", 0, sine(440, 25)); // a frame and 120 samples
    expect(ticks(1)).toBe(0);
    expect(encodes()).toBe(1); // the tail may still grow: not encoded ahead
    expect(ticks(Downlink.PARTIAL_FRAME_WAIT_TICKS)).toBe(0);
    expect(ticks(1)).toBe(1);
    expect(reports.map((r) => r.samples)).toEqual([FRAME, 120]);
    expect(downlink.ledger.sentMs("a")).toBe(25);
    // An item followed by the next one has ended: its padded tail is encoded ahead like any frame.
    downlink.push("b", 0, sine(440, 25));
    downlink.push("c", 0, sine(440, 20));
    expect(ticks(4)).toBe(0);
    expect(reports.slice(2).map((r) => [r.itemId, r.samples])).toEqual([
      ["b", FRAME],
      ["b", 120],
      ["c", FRAME],
    ]);
  });

  it("drops the frame encoded ahead on a barge-in's flush: the next tick plays the next reply", () => {
    const { downlink, packets, reports, ticks, encodes } = setup();
    downlink.push("a", 0, sine(440, 2000)); // the model sends a 2 s reply at once
    ticks(10); // the user hears 200 ms of it, then talks over it
    expect(encodes()).toBe(11); // one frame ahead
    expect(downlink.queuedMs).toBe(1800);
    expect(downlink.flush()).toBe(1800);
    expect(downlink.queuedMs).toBe(0);
    ticks(5); // nothing to play
    expect(packets).toHaveLength(10);
    expect(downlink.ledger.sentMs("a")).toBe(200);
    downlink.push("b", 0, sine(1000, 400)); // the answer to the interruption
    ticks(20);
    expect(encodes()).toBe(11 + 20); // one encode wasted by the barge-in, no more
    expect(reports.map((r) => r.itemId)).toEqual([...Array(10).fill("a"), ...Array(20).fill("b")]);
    const answer = heard(packets.slice(10)).subarray(2 * FRAME);
    expect(dominantFrequency(answer)).toBe(1000);
    // No frame of the interrupted reply after the flush: its 440 Hz is not in the answer.
    expect(toneAmplitude(answer, 440)).toBeLessThan(toneAmplitude(answer, 1000) / 50);
    expect(downlink.ledger.sentMs("b")).toBe(400);
    expect(downlink.ledger.sentMs("a")).toBe(200);
  });

  it("keeps the frame encoded ahead through a hold and plays on from it", () => {
    const { downlink, packets, reports, ticks, encodes } = setup();
    downlink.push("a", 0, sine(440, 400));
    ticks(5);
    downlink.hold(true);
    expect(encodes()).toBe(6);
    ticks(10);
    expect(encodes()).toBe(6); // nothing encoded while held: the hold may end in a flush
    expect(reports).toHaveLength(5);
    downlink.hold(false);
    ticks(20);
    expect(reports).toHaveLength(20);
    expect(reports.map((r) => r.mediaTimeMs).slice(4, 6)).toEqual([80, 300]);
    expect(downlink.ledger.sentMs("a")).toBe(400);
    // The tone plays on across the hold without a dropout (the decoder's first frame aside).
    const pcm = heard(packets);
    for (let f = 1; f < 20; f++) expect(rms(pcm.subarray(f * FRAME, (f + 1) * FRAME))).toBeGreaterThan(3000);
  });

  it("is prepared by the pacer after its ticks, before the next ones", async () => {
    const calls: string[] = [];
    const pacer = new Pacer();
    const stream = {
      tick: (index: number) => void calls.push(`tick ${index}`),
      prepare: () => {
        calls.push("prepare");
        if (calls.includes("tick 5")) {
          pacer.delete(stream);
          done();
        }
      },
    };
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    pacer.add(stream);
    await finished;
    // Normally tick, prepare, tick, prepare…; a pacer catching up on a stalled loop runs its
    // late ticks back to back and prepares once after them.
    expect(calls[0]).toBe("tick 0");
    expect(calls.at(-1)).toBe("prepare");
    for (let i = 1; i < calls.length; i++) if (calls[i] === "prepare") expect(calls[i - 1]).toMatch(/^tick/);
    expect(calls.filter((c) => c.startsWith("tick"))).toEqual([
      "tick 0",
      "tick 1",
      "tick 2",
      "tick 3",
      "tick 4",
      "tick 5",
    ]);
  });
});
