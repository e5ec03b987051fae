// The impairment model's statistics (what bench/network.ts and the network tests rely on) and
// the proxy carrying datagrams both ways through it.
import { createSocket } from "node:dgram";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import {
  burstyLoss,
  Impairment,
  routeAnswerThroughProxy,
  startImpairmentProxy,
} from "../support/impairment.ts";
import { closeRawSockets, rawSocket, sendUdp } from "../support/udp.ts";

/** Runs `n` packets 20 ms apart; returns each packet's delays. */
function run(impairment: Impairment, n: number, bytes = 100): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < n; i++) out.push(impairment.decide(i * 20, bytes));
  return out;
}

const lossRate = (decisions: number[][]) => decisions.filter((d) => d.length === 0).length / decisions.length;

describe("impairment model", () => {
  it("is repeatable for a seed and differs between seeds", () => {
    const profile = { loss: 0.1, jitterMs: 40, duplicate: 0.02 };
    expect(run(new Impairment(profile, 7), 500)).toEqual(run(new Impairment(profile, 7), 500));
    expect(run(new Impairment(profile, 7), 500)).not.toEqual(run(new Impairment(profile, 8), 500));
  });

  it("loses the configured share of packets at random", () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 0.3, noNaN: true }), fc.integer(), (loss, seed) => {
        const rate = lossRate(run(new Impairment({ loss }, seed), 20_000));
        // 20,000 Bernoulli trials: 4.5 standard deviations is at most 0.0146 at p = 0.3.
        expect(Math.abs(rate - loss)).toBeLessThan(0.015);
      }),
      { numRuns: 15 },
    );
  });

  it("loses in bursts with Gilbert–Elliott, at the mean rate asked for", () => {
    const decisions = run(new Impairment({ burst: burstyLoss(0.05, 4) }, 3), 100_000);
    expect(lossRate(decisions)).toBeGreaterThan(0.04);
    expect(lossRate(decisions)).toBeLessThan(0.06);
    const bursts: number[] = [];
    let length = 0;
    for (const d of decisions) {
      if (d.length === 0) length++;
      else if (length > 0) {
        bursts.push(length);
        length = 0;
      }
    }
    const mean = bursts.reduce((a, b) => a + b, 0) / bursts.length;
    expect(mean).toBeGreaterThan(3.5);
    expect(mean).toBeLessThan(4.5);
    // Random loss at the same rate has bursts of about 1 / (1 − 0.05) ≈ 1.05 packets.
    expect(Math.max(...bursts)).toBeGreaterThan(10);
  });

  it("spreads delay uniformly by ±jitter and reorders packets closer than the spread", () => {
    const decisions = run(new Impairment({ jitterMs: 40 }, 5), 20_000).map((d) => d[0]!);
    expect(Math.min(...decisions)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...decisions)).toBeLessThanOrEqual(80);
    const mean = decisions.reduce((a, b) => a + b, 0) / decisions.length;
    expect(mean).toBeGreaterThan(39);
    expect(mean).toBeLessThan(41);
    // Arrival order: packet i arrives at 20i + delay. Uniform on ±40 ms, 20 ms apart, a pair of
    // neighbours swaps with probability (1 − 20/80)² / 2 ≈ 0.28.
    let swapped = 0;
    for (let i = 1; i < decisions.length; i++)
      if (20 * i + decisions[i]! < 20 * (i - 1) + decisions[i - 1]!) swapped++;
    expect(swapped / decisions.length).toBeGreaterThan(0.25);
    expect(swapped / decisions.length).toBeLessThan(0.31);
  });

  it("duplicates and explicitly reorders the share asked for", () => {
    const impairment = new Impairment({ duplicate: 0.05, reorder: 0.1, reorderMs: 60 }, 9);
    const decisions = run(impairment, 20_000);
    const twice = decisions.filter((d) => d.length === 2).length / decisions.length;
    const late = decisions.filter((d) => d[0] === 60).length / decisions.length;
    expect(twice).toBeGreaterThan(0.045);
    expect(twice).toBeLessThan(0.055);
    expect(late).toBeGreaterThan(0.09);
    expect(late).toBeLessThan(0.11);
  });

  it("caps bandwidth: packets queue at the link rate and the queue's tail is dropped", () => {
    // 1000 bytes every 20 ms is 400 kb/s, through a 200 kb/s link with 100 ms of queue.
    const impairment = new Impairment({ bandwidthKbps: 200, queueMs: 100 }, 1);
    const decisions = run(impairment, 1000, 1000);
    const delivered = decisions.filter((d) => d.length > 0);
    expect(delivered.length / decisions.length).toBeGreaterThan(0.48);
    expect(delivered.length / decisions.length).toBeLessThan(0.52);
    // Serialisation alone: 1000 bytes at 200 kb/s is 40 ms; at most the queue's 100 ms before it.
    expect(Math.max(...delivered.map((d) => d[0]!))).toBeLessThanOrEqual(140);
    expect(impairment.counters.queueDropped).toBe(decisions.length - delivered.length);
  });

  it("drops everything for a blackout, then nothing", () => {
    const impairment = new Impairment({}, 1);
    impairment.blackout(1000, 2000);
    const decisions = run(impairment, 250);
    const lost = decisions.flatMap((d, i) => (d.length === 0 ? [i * 20] : []));
    expect(lost[0]).toBe(1000);
    expect(lost.at(-1)).toBe(2980);
    expect(lost.length).toBe(100);
  });
});

describe("impairment proxy", () => {
  afterEach(closeRawSockets);

  it("carries datagrams both ways, losing them in both directions as configured", async () => {
    const relay = await rawSocket();
    relay.socket.on("message", (msg, from) => relay.socket.send(msg, from.port, from.address));
    const proxy = await startImpairmentProxy({
      targetPort: relay.port,
      up: { loss: 0.2 },
      down: { loss: 0.2 },
      seed: 11,
    });
    const client = createSocket("udp4");
    const echoed: Buffer[] = [];
    client.on("message", (msg) => echoed.push(msg));
    await new Promise<void>((resolve) => client.bind(0, "127.0.0.1", resolve));
    try {
      // Paced a little, so no socket buffer on the way overflows.
      for (let i = 0; i < 500; i++) {
        await sendUdp(client, Buffer.from([i & 0xff, i >> 8]), proxy.port);
        if (i % 20 === 19) await new Promise((resolve) => setTimeout(resolve, 2));
      }
      await expect.poll(() => relay.received.length + proxy.up.counters.dropped, { timeout: 2000 }).toBe(500);
      await expect
        .poll(() => echoed.length + proxy.down.counters.dropped, { timeout: 2000 })
        .toBe(relay.received.length);
      // 500 × 0.8 × 0.8 = 320 expected end to end.
      expect(echoed.length).toBeGreaterThan(280);
      expect(echoed.length).toBeLessThan(360);
    } finally {
      client.close();
      await proxy.close();
    }
  });

  it("routes an answer's candidates through the proxy and drops the others", () => {
    const sdp = [
      "v=0",
      "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host",
      "a=candidate:2 1 udp 2130706431 10.0.0.1 40000 typ host",
      "a=end-of-candidates",
    ].join("\r\n");
    expect(routeAnswerThroughProxy(sdp, 50000, 40000)).toBe(
      ["v=0", "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host", "a=end-of-candidates"].join("\r\n"),
    );
  });
});
