// The downlink queue on its own: its limit, and padding an item's last partial frame.
import { describe, expect, it } from "vitest";
import { Downlink } from "../../../relay/media/downlink.ts";

describe("Downlink queue", () => {
  const make = (maxQueuedMs: number) =>
    new Downlink({
      encoder: { timestampStep: 960, encode: () => 1 },
      send: () => {},
      observer: { onPlayoutStarted() {}, onPlayoutStopped() {} },
      maxQueuedMs,
    });

  it("queues up to maxQueuedMs and refuses the rest, recording only what it kept", () => {
    const downlink = make(100);
    downlink.push("a", 0, new Int16Array(2400)); // exactly 100 ms
    expect(downlink.queuedMs).toBe(100);
    expect(downlink.stats.overflowSamples).toBe(0);
    downlink.push("a", 0, new Int16Array(24)); // 1 ms past the cap
    expect(downlink.queuedMs).toBe(100);
    expect(downlink.stats.overflowSamples).toBe(24);
    expect(downlink.ledger.generatedMs("a")).toBe(100);
  });

  it("pads an item's last partial frame once the next item is queued, and counts only real samples as sent", () => {
    const sent: number[] = [];
    const downlink = new Downlink({
      encoder: { timestampStep: 960, encode: () => 1 },
      send: (_p, _s, ts) => sent.push(ts),
      observer: { onPlayoutStarted() {}, onPlayoutStopped() {} },
      initialTimestamp: 0,
    });
    downlink.push("a", 0, new Int16Array(600)); // 25 ms
    downlink.push("b", 0, new Int16Array(480));
    for (let i = 0; i < 4; i++) downlink.tick(i);
    expect(sent).toEqual([0, 960, 1920]);
    expect(downlink.ledger.sentMs("a")).toBe(25);
    expect(downlink.ledger.sentMs("b")).toBe(20);
  });
});
