// A client that offers audio/red (as Chrome does) through a real relay: the answer puts red first,
// a burst of lost packets is filled from the later packets' redundant blocks so the bridge hears
// the tone without a gap, and hostile RED (nested, unknown PT, lengths past the packet, no
// blocks, too many blocks) is skipped with one log line per kind while the call goes on. The
// downlink sends RED with two earlier frames from the call's start, the primary alone once the
// client's reports show a clean link.
import { RtpHeader, RtpPacket } from "werift";
import { afterEach, expect, it } from "vitest";
import { RecordingBridge } from "../fixtures.ts";
import { buildRed, MAX_RED_BLOCKS, parseRed, RedBlocks, type RedBlock } from "../../../relay/media/red.ts";
import { dominantFrequency, goertzel, isKeepalive, silentWindows, sine } from "../../support/audio.ts";
import { waitFor } from "../../support/loopback.ts";
import { CLIENT_RED_PT, RED_OFFER_CODECS, TestPeer } from "../../support/peer.ts";
import { useRelay } from "../../support/relays.ts";

const logs: string[] = [];
const relay = useRelay({ bridgeFactory: RecordingBridge.factory, logs, env: { RELAY_RED_DISTANCE: "2" } });
const OPUS = 111;
const STEP = 960;
let client: TestPeer | undefined;

afterEach(async () => {
  await client?.close();
});

/** A connected client that offered RED; its packets go out as built here, not re-wrapped by werift. */
async function redClient() {
  client = new TestPeer({ audioCodecs: RED_OFFER_CODECS });
  expect((await client.call(relay.url)).status).toBe(201);
  await client.connected();
  const sender = client.transceiver.sender;
  sender.redRedundantPayloadType = undefined;
  const bridge = RecordingBridge.instances.find((b) => b.ctx.callId === client!.callId)!;
  return { client, bridge };
}

/** Opus packets of `pcm`, each re-packed as RED with up to `distance` earlier frames. */
function redPackets(peer: TestPeer, pcm: Int16Array, distance: number): RtpPacket[] {
  const plain = peer.encodeFrames(pcm);
  return plain.map((packet, i) => {
    const blocks: RedBlock[] = [];
    for (let back = Math.min(i, distance); back > 0; back--)
      blocks.push({ payloadType: OPUS, timestampOffset: back * STEP, data: plain[i - back]!.payload });
    blocks.push({ payloadType: OPUS, timestampOffset: 0, data: packet.payload });
    return new RtpPacket(
      new RtpHeader({ ...packet.header, payloadType: CLIENT_RED_PT }),
      Buffer.from(buildRed(blocks)),
    );
  });
}

it("answers red first and fills bursts of two lost packets from distance-2 redundancy", async () => {
  const { client, bridge } = await redClient();
  expect(/^m=audio \d+ \S+ (\d+)/m.exec(client.answerSdp)?.[1]).toBe(String(CLIENT_RED_PT));
  expect(client.answerSdp).toMatch(/^a=fmtp:63 111\/111/m);
  const packets = redPackets(client, sine(500, 3000, 8000), 2); // 150 packets
  // Bursts of two, every 300 ms (never the last packets: nothing after them would carry them).
  const kept = packets.filter((_, i) => !(i % 15 === 7 || i % 15 === 8) || i > 140);
  const dropped = packets.length - kept.length;
  await client.sendPackets(kept);

  await waitFor(() => bridge.frames.length >= packets.length, 5000, "every frame at the bridge");
  const uplink = relay.calls.get(client.callId)!.uplinkStats!;
  expect(uplink.redPackets).toBe(kept.length);
  expect(uplink.redRecovered).toBe(dropped);
  expect(uplink.lost).toBe(0);
  expect(uplink.concealed + uplink.recovered).toBe(0);
  const pcm = bridge.pcm();
  expect(pcm.length).toBe(packets.length * 480);
  const steady = pcm.subarray(4800);
  expect(Math.abs(dominantFrequency(steady) - 500)).toBeLessThanOrEqual(10);
  expect(goertzel(steady, 500)).toBeGreaterThan(8000 * 0.7);
  // Not a frame below half the tone's level: each lost one decoded from its own copy.
  expect(silentWindows(steady, 2828)).toEqual([]);
  const stats = relay.calls.get(client.callId)!.stats();
  expect(stats.quality?.uplink.red_recovered_frames).toBe(dropped);
});

it("skips hostile RED without a throw, one log line per kind, and the call goes on", async () => {
  const { client, bridge } = await redClient();
  logs.length = 0;
  const good = redPackets(client, sine(500, 1000, 8000), 1); // 50 packets
  const opus = (i: number) => ({
    payloadType: OPUS,
    timestampOffset: 0,
    data: good[i]!.payload.subarray(0, 20),
  });
  const hostile: Uint8Array[] = [
    new Uint8Array(0), // no blocks at all
    Uint8Array.of(0x80 | OPUS, 0x0f, 0x00), // a header cut short
    Uint8Array.of(0x80 | OPUS, 0x0f, 0x03, 0xff, OPUS, 1, 2, 3), // a 1023-byte block in 8 bytes
    buildRed(Array.from({ length: MAX_RED_BLOCKS + 1 }, (_, k) => ({ ...opus(k), timestampOffset: 9 - k }))),
    buildRed([{ payloadType: CLIENT_RED_PT, timestampOffset: STEP, data: good[3]!.payload }, opus(4)]), // nested
    buildRed([{ payloadType: 99, timestampOffset: STEP, data: good[5]!.payload }, opus(6)]), // unknown PT
    buildRed([{ payloadType: 0, timestampOffset: 0, data: good[7]!.payload }]), // primary not Opus
  ];
  // Every other packet hostile, twice over: each kind comes twice, and is logged once.
  const packets = good.map((packet, i) =>
    i >= 2 && i < 2 + 4 * hostile.length && i % 2 === 0
      ? new RtpPacket(packet.header, Buffer.from(hostile[(i / 2 - 1) % hostile.length]!))
      : packet,
  );
  await client.sendPackets(packets);
  await waitFor(() => bridge.frames.length >= packets.length, 5000, "every frame at the bridge");
  const call = relay.calls.get(client.callId)!;
  expect(call.state).toBe("connected");
  expect(call.uplinkStats!.redRefused).toBe(14);
  expect(call.uplinkStats!.frames).toBe(packets.length);
  const lines = logs.filter((l) => l.includes("client RED packet not used"));
  for (const kind of [
    "empty",
    "header past the end",
    "block past the end",
    "too many blocks",
    "block of another codec",
  ])
    expect(lines.filter((l) => l.includes(`not used: ${kind}"`)).length, kind).toBe(1);
  // Audio after the hostile run is the tone again.
  expect(Math.abs(dominantFrequency(bridge.pcm().subarray(-9600)) - 500)).toBeLessThanOrEqual(10);
});

it("sends RED with two earlier frames from the call's start, and the primary alone once reports show no loss", async () => {
  const { client, bridge } = await redClient();
  client.transceiver.receiver.unpackRed = false; // see the packets as sent
  const call = relay.calls.get(client.callId)!;
  const blocks = new RedBlocks();
  /** Blocks per RED packet of a 1 s tone the relay plays now, and their Opus PTs. */
  const play = async () => {
    const from = client.received.length;
    bridge.ctx.downlink.push(`item_${from}`, 0, sine(440, 1000, 8000));
    await waitFor(() => client.received.length - from >= 50, 5000, "the tone at the client");
    return client.received.slice(from).map((p) => {
      expect(p.payloadType).toBe(CLIENT_RED_PT);
      expect(parseRed(p.payload, blocks)).toBeUndefined();
      expect([...blocks.payloadTypes.subarray(0, blocks.count)].every((pt) => pt === OPUS)).toBe(true);
      return blocks.count;
    });
  };
  // Before any report: the encoder plans for loss (FEC on), and RED carries 2 earlier frames.
  expect(call.stats().quality?.downlink.red_distance).toBe(2);
  const early = await play();
  expect(early.slice(2).every((n) => n === 3)).toBe(true);
  // Three loss-free receiver reports later (werift sends one about every second): none.
  await waitFor(() => call.stats().quality?.downlink.red_distance === 0, 10_000, "RED distance 0");
  const clean = await play();
  expect(clean.every((n) => n === 1)).toBe(true);
});

it("sends its idle keepalive without RED copies, even while copies are on", async () => {
  const { client, bridge } = await redClient();
  client.transceiver.receiver.unpackRed = false;
  expect(relay.calls.get(client.callId)!.stats().quality?.downlink.red_distance).toBe(2);
  const blocks = new RedBlocks();
  /** Block count, and whether the primary is the relay's silence keepalive. */
  const read = (payload: Uint8Array) => {
    expect(parseRed(payload, blocks)).toBeUndefined();
    const primary = payload.subarray(blocks.starts[blocks.count - 1], blocks.ends[blocks.count - 1]);
    return { count: blocks.count, keepalive: isKeepalive({ payload: primary }) };
  };
  const from = client.received.length;
  bridge.ctx.downlink.push("item_k", 0, sine(440, 200, 8000)); // 10 frames
  const afterTone = () => client.received.slice(from).map((p) => read(p.payload));
  await waitFor(
    () => afterTone().filter((p) => !p.keepalive).length >= 10 && afterTone().at(-1)!.keepalive,
    5000,
    "the tone, then a keepalive",
  );
  const packets = afterTone();
  const tone = packets.filter((p) => !p.keepalive);
  expect(tone.slice(2).every((p) => p.count === 3)).toBe(true);
  // The silence frame alone: no copy of the tone 300 ms before it.
  expect(packets.at(-1)!.count).toBe(1);
});
