// Holding a reply at the user's speech onset (barge-in.ts): the real Downlink and BargeIn, driven
// tick by tick. While held nothing goes out and nothing is lost; a resume plays on from the same
// sample; a hold the VAD never decides ends by itself at MAX_HOLD_MS (at the limit and past it).
import { afterEach, describe, expect, it, vi } from "vitest";
import { BargeIn, MAX_HOLD_MS } from "../../../relay/barge-in/barge-in.ts";
import { Downlink } from "../../../relay/media/downlink.ts";
import { RelayMetrics } from "../../../relay/metrics.ts";

afterEach(() => {
  vi.useRealTimers();
});

function setup() {
  const sent: { timestamp: number; marker: boolean }[] = [];
  const events: { type: string }[] = [];
  const upstream: { type: string }[] = [];
  const started: string[] = [];
  const stopped: string[] = [];
  const downlink = new Downlink({
    encoder: { timestampStep: 960, encode: () => 1 },
    send: (_p, _s, timestamp, marker) => sent.push({ timestamp, marker }),
    observer: { onPlayoutStarted: (i) => started.push(i), onPlayoutStopped: (i) => stopped.push(i) },
    initialTimestamp: 0,
  });
  const metrics = new RelayMetrics();
  const bargeIn = new BargeIn({
    downlink,
    metrics,
    sendUpstream: (e) => upstream.push(e),
    emit: (e) => events.push(e),
  });
  bargeIn.responseCreated("resp_1");
  expect(bargeIn.acceptAudio("resp_1", "item_1", 0)).toBe(true);
  downlink.push("item_1", 0, new Int16Array(480 * 10)); // 200 ms of reply
  return { sent, events, upstream, started, stopped, downlink, bargeIn, metrics };
}

const holds = async (metrics: RelayMetrics, outcome: string) =>
  (await metrics.bargeInHolds.get()).values.find((v) => v.labels.outcome === outcome)?.value ?? 0;

describe("holding a reply at the speech onset", () => {
  it("sends nothing while held, loses nothing, and resumes from the same sample with the marker bit", async () => {
    const { sent, downlink, bargeIn, metrics, events, stopped } = setup();
    downlink.tick(0);
    downlink.tick(1);
    expect(bargeIn.hold()).toBe(true);
    for (let i = 2; i < 10; i++) downlink.tick(i);
    expect(sent.length).toBe(2);
    expect(downlink.queuedMs).toBe(160);
    // A pause, not the end of playout: no stopped event, no cleared.
    expect(stopped).toEqual([]);
    bargeIn.resume();
    downlink.tick(10);
    expect(sent[2]).toEqual({ timestamp: 10 * 960, marker: true });
    expect(downlink.ledger.sentMs("item_1")).toBe(60);
    expect(events).toEqual([]);
    expect(await holds(metrics, "resumed")).toBe(1);
  });

  it("an interruption while held truncates at what was sent before the hold", async () => {
    const { downlink, bargeIn, upstream, metrics } = setup();
    downlink.tick(0);
    downlink.tick(1);
    downlink.tick(2);
    bargeIn.hold();
    for (let i = 3; i < 30; i++) downlink.tick(i);
    expect(bargeIn.trigger("relay_vad")).toBe(true);
    expect(upstream).toMatchObject([
      { type: "response.cancel", response_id: "resp_1" },
      { type: "conversation.item.truncate", item_id: "item_1", audio_end_ms: 60 },
    ]);
    expect(downlink.queuedMs).toBe(0);
    expect(await holds(metrics, "interrupted")).toBe(1);
  });

  it(`a hold the VAD never decides ends by itself after MAX_HOLD_MS (${MAX_HOLD_MS} ms)`, async () => {
    vi.useFakeTimers();
    const { downlink, bargeIn, sent, metrics } = setup();
    bargeIn.hold();
    vi.advanceTimersByTime(MAX_HOLD_MS - 1);
    expect(bargeIn.held).toBe(true);
    downlink.tick(0);
    expect(sent).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(bargeIn.held).toBe(false);
    downlink.tick(1);
    expect(sent.length).toBe(1);
    expect(await holds(metrics, "resumed")).toBe(1);
  });

  it("nothing to hold when nothing is queued", () => {
    const { downlink, bargeIn } = setup();
    downlink.flush();
    expect(bargeIn.hold()).toBe(false);
    expect(bargeIn.held).toBe(false);
  });
});
