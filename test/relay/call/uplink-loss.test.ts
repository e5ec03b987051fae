// With 5 % loss and reordering on the uplink, the bridge still gets continuous audio of the
// right length: the jitter buffer restores order and the decoder fills losses (FEC or PLC).
import { expect, it } from "vitest";
import { RecordingBridge } from "../fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { dominantFrequency, goertzel, silentWindows, sine } from "../../support/audio.ts";
import { TestPeer } from "../../support/peer.ts";
import { useRelay } from "../../support/relays.ts";

const relay = useRelay({ bridgeFactory: RecordingBridge.factory });

/** Deterministic PRNG so a failure reproduces. */
function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

it("keeps 5 % loss plus reordering continuous and of the right length", async () => {
  const client = new TestPeer();
  expect((await client.call(relay.url)).status).toBe(201);
  await client.connected();
  const bridge = RecordingBridge.instances.find((b) => b.ctx.callId === client.callId)!;

  const packets = client.encodeFrames(sine(500, 3000, 8000)); // 150 packets
  const random = mulberry32(7);
  // Drop 5 % (never the last few, whose loss nothing after them could reveal); swap 5 % of
  // neighbours, so those packets arrive 20 ms late and out of order.
  const dropped = new Set<number>();
  while (dropped.size < Math.round(packets.length * 0.05))
    dropped.add(1 + Math.floor(random() * (packets.length - 6)));
  const order = packets.map((_, i) => i).filter((i) => !dropped.has(i));
  let swaps = 0;
  for (let k = 1; k < order.length - 5; k++) {
    if (random() < 0.05) {
      [order[k], order[k + 1]] = [order[k + 1]!, order[k]!];
      swaps++;
      k++;
    }
  }
  expect(swaps).toBeGreaterThan(2);
  await client.sendPackets(order.map((i) => packets[i]!));

  await waitFor(() => bridge.frames.length >= packets.length, 5000, "every frame at the bridge");
  await new Promise((r) => setTimeout(r, 100));
  const pcm = bridge.pcm();
  expect(pcm.length).toBe(packets.length * 480); // continuous: one frame per packet sent
  const uplink = relay.calls.get(client.callId)!.uplinkStats!;
  expect(uplink.lost).toBe(dropped.size);
  expect(uplink.recovered + uplink.concealed).toBe(dropped.size);
  expect(uplink.recovered).toBeGreaterThan(0); // FEC from the next packet was used

  const steady = pcm.subarray(4800);
  expect(Math.abs(dominantFrequency(steady) - 500)).toBeLessThanOrEqual(10);
  expect(goertzel(steady, 500)).toBeGreaterThan(8000 * 0.7);
  // No dropout: no 20 ms window falls to silence (below 5 % of the tone's RMS of 5657). Concealed
  // frames are quieter than the tone (libopus PLC/FEC of a pure tone in SILK mode keeps 10 to
  // 40 % of its level), so only the lost frame and the one after it may dip below half level.
  expect(silentWindows(steady, 283)).toEqual([]);
  expect(silentWindows(steady, 2828).length).toBeLessThanOrEqual(2 * dropped.size);
  await client.close();
});
