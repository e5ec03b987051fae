// Downlink timing at the client: one packet per 20 ms without drift, and flush() within a frame.
import { expect, it } from "vitest";
import { RecordingBridge, connectRecorded } from "../fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { isKeepalive, sine } from "../../support/audio.ts";
import { useRelay } from "../../support/relays.ts";

const relay = useRelay({ bridgeFactory: RecordingBridge.factory });

const connect = () => connectRecorded(relay);

// Tolerance: drift, the fitted packet period, must be 20 ms within 0.05 ms (under 25 ms over
// 10 s), with no packet missing or extra. Single packets jitter around the fitted line with the
// load of this shared 2-core machine (relay and client share one event loop here): 95 % must be
// within 10 ms of it and 99 % within 40 ms (measured alone: worst 8 ms; with the other relay
// test files running in parallel, p99 reached 30 ms).
it("sends one packet per 20 ms without drift over 10 s", async () => {
  const { client, bridge } = await connect();
  bridge.ctx.downlink.push("item_long", 0, sine(300, 10_000, 6000));
  await waitFor(() => client.received.length >= 500, 15_000, "500 packets");
  await new Promise((r) => setTimeout(r, 200));
  const packets = client.received;
  expect(packets.length).toBe(500);
  // Normally +960 a packet. If this shared machine stalls the event loop past the pacer's
  // catch-up limit, the pacer skips ticks instead of bursting, and the timestamp counts the
  // skipped wall time: a multiple of 960, never less. Rare; counted and bounded here.
  let skips = 0;
  for (let i = 1; i < packets.length; i++) {
    const step = (packets[i]!.timestamp - packets[i - 1]!.timestamp) >>> 0;
    expect(step % 960).toBe(0);
    expect(step).toBeGreaterThanOrEqual(960);
    if (step > 960) skips++;
  }
  expect(skips).toBeLessThanOrEqual(2);
  // Least-squares fit of arrival time against media time (RTP timestamp in frames): the slope
  // is the packet period, and a slope of 20 ms means the pacer's clock does not drift.
  const n = packets.length;
  const xs = packets.map((p) => ((p.timestamp - packets[0]!.timestamp) >>> 0) / 960);
  const ys = packets.map((p) => p.at - packets[0]!.at);
  const mx = xs.reduce((a, b) => a + b) / n;
  const my = ys.reduce((a, b) => a + b) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i]! - mx) * (ys[i]! - my);
    sxx += (xs[i]! - mx) ** 2;
  }
  const period = sxy / sxx;
  // 0.05 ms a frame is 25 ms over the 10 s: the slope is measured through arrival jitter on a
  // loaded machine (typically within 0.005); a real drift (a clock that sleeps 20 ms after each
  // tick's work) would show as 0.1 ms or more.
  expect(Math.abs(period - 20)).toBeLessThan(0.05);
  const residuals = ys.map((y, i) => y - (my + period * (i - mx)));
  const worst = Math.max(...residuals.map(Math.abs));
  const sorted = residuals.map(Math.abs).sort((a, b) => a - b);
  expect(sorted[Math.floor(n * 0.95)]!).toBeLessThan(10);
  expect(sorted[Math.floor(n * 0.99)]!).toBeLessThan(40);
  if (worst > 20) console.warn(`pacer: worst packet ${worst.toFixed(1)} ms off the line (load?)`);
  expect(bridge.ctx.downlink.ledger.sentMs("item_long")).toBe(10_000);
  await client.close();
}, 30_000);

it("flush() stops the audio within one frame and the ledger says what was heard", async () => {
  const { client, bridge } = await connect();
  const downlink = bridge.ctx.downlink;
  downlink.push("item_a", 0, sine(440, 2000, 6000));
  await waitFor(() => client.received.length >= 10, 5000, "10 packets");
  const dropped = downlink.flush();
  const sentAtFlush = downlink.ledger.sentMs("item_a");
  expect(dropped).toBe(2000 - sentAtFlush);
  expect(downlink.queuedMs).toBe(0);
  await new Promise((r) => setTimeout(r, 300));
  // At most the one packet already on its way when flush ran (the idle keepalive is no audio).
  const sounding = () => client.received.filter((p) => !isKeepalive(p));
  expect(sounding().length * 20).toBeGreaterThanOrEqual(sentAtFlush);
  expect(sounding().length * 20).toBeLessThanOrEqual(sentAtFlush + 20);
  expect(downlink.ledger.sentMs("item_a")).toBe(sentAtFlush);
  expect(bridge.playout).toEqual(["started:item_a", "stopped:item_a"]);

  // The next response starts with the marker bit and a timestamp that counted the silence.
  const before = client.received.length;
  const last = sounding().at(-1)!;
  downlink.push("item_b", 0, sine(440, 100, 6000));
  await waitFor(() => client.received.length >= before + 5, 5000, "item_b packets");
  const first = client.received[before]!;
  expect(first.marker).toBe(true);
  const elapsedFrames = Math.round((first.at - last.at) / 20);
  const tsFrames = ((first.timestamp - last.timestamp) >>> 0) / 960;
  // Arrival times carry this shared machine's scheduling jitter; 3 frames is well under the
  // 15+ frames of silence being counted.
  expect(tsFrames).toBeGreaterThanOrEqual(10);
  expect(Math.abs(tsFrames - elapsedFrames)).toBeLessThanOrEqual(3);
  await client.close();
});
