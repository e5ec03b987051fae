// RFC 2198 redundancy on the uplink (relay/media/red.ts, Uplink.receiveRed): the parser at and
// past each of its limits, a burst of lost packets filled from later packets' copies before FEC
// or concealment (bit-exact audio), and hostile RED (nested, unknown PT, lengths past the packet,
// no blocks, random bytes) skipped without a throw.
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { SpeechSynthesizer } from "../../../agent/tts.ts";
import { opusUplinkDecoder } from "../../../relay/media/opus-codec.ts";
import {
  buildRed,
  MAX_RED_BLOCK_LENGTH,
  MAX_RED_BLOCKS,
  MAX_RED_TIMESTAMP_OFFSET,
  parseRed,
  RedBlocks,
  type RedBlock,
} from "../../../relay/media/red.ts";
import { Uplink } from "../../../relay/media/uplink.ts";
import { createOpusEncoder, FRAME } from "../../support/audio.ts";

const OPUS = 111;
const RED = 63;
const STEP = 960;

const bytes = (n: number, fill = 0xab) => new Uint8Array(n).fill(fill);
const block = (payloadType: number, timestampOffset: number, data: Uint8Array): RedBlock => ({
  payloadType,
  timestampOffset,
  data,
});

describe("parseRed", () => {
  const out = new RedBlocks();

  it("reads Chrome's shape: one redundant block, then the primary", () => {
    const previous = bytes(70, 1);
    const current = bytes(80, 2);
    const payload = buildRed([block(OPUS, STEP, previous), block(OPUS, 0, current)]);
    expect(payload.length).toBe(4 + 1 + 70 + 80);
    expect(parseRed(payload, out)).toBeUndefined();
    expect(out.count).toBe(2);
    expect([...out.payloadTypes.subarray(0, 2)]).toEqual([OPUS, OPUS]);
    expect([...out.timestampOffsets.subarray(0, 2)]).toEqual([STEP, 0]);
    expect(payload.subarray(out.starts[0], out.ends[0])).toEqual(previous);
    expect(payload.subarray(out.starts[1], out.ends[1])).toEqual(current);
  });

  it("round-trips any blocks within RFC 2198's fields and the block limit", () => {
    const blocks = fc.array(
      fc.record({
        payloadType: fc.integer({ min: 0, max: 127 }),
        timestampOffset: fc.integer({ min: 1, max: MAX_RED_TIMESTAMP_OFFSET }),
        data: fc.uint8Array({ maxLength: 64 }),
      }),
      { minLength: 1, maxLength: MAX_RED_BLOCKS },
    );
    fc.assert(
      fc.property(blocks, (input) => {
        const sent = input.map((b, i) => (i === input.length - 1 ? { ...b, timestampOffset: 0 } : b));
        const payload = buildRed(sent);
        expect(parseRed(payload, out)).toBeUndefined();
        expect(out.count).toBe(sent.length);
        sent.forEach((b, i) => {
          expect(out.payloadTypes[i]).toBe(b.payloadType);
          expect(out.timestampOffsets[i]).toBe(b.timestampOffset);
          expect(payload.subarray(out.starts[i], out.ends[i])).toEqual(b.data);
        });
      }),
    );
  });

  it(`takes ${MAX_RED_BLOCKS} blocks and refuses ${MAX_RED_BLOCKS + 1}`, () => {
    const make = (n: number) =>
      buildRed(Array.from({ length: n }, (_, i) => block(OPUS, (n - 1 - i) * STEP, bytes(3))));
    expect(parseRed(make(MAX_RED_BLOCKS), out)).toBeUndefined();
    expect(out.count).toBe(MAX_RED_BLOCKS);
    expect(parseRed(make(MAX_RED_BLOCKS + 1), out)).toBe("too many blocks");
    expect(out.count).toBe(0);
  });

  it("takes a block of the longest length RFC 2198 can state, and the largest offset", () => {
    const payload = buildRed([
      block(OPUS, MAX_RED_TIMESTAMP_OFFSET, bytes(MAX_RED_BLOCK_LENGTH)),
      block(OPUS, 0, bytes(1)),
    ]);
    expect(parseRed(payload, out)).toBeUndefined();
    expect(out.ends[0]! - out.starts[0]!).toBe(MAX_RED_BLOCK_LENGTH);
    expect(out.timestampOffsets[0]).toBe(MAX_RED_TIMESTAMP_OFFSET);
  });

  it("takes a redundant block that ends exactly at the packet's end (an empty primary), refuses one a byte past", () => {
    const exact = buildRed([block(OPUS, STEP, bytes(10)), block(OPUS, 0, new Uint8Array(0))]);
    expect(parseRed(exact, out)).toBeUndefined();
    expect(out.ends[0]).toBe(exact.length);
    expect(out.starts[1]).toBe(out.ends[1]);
    expect(parseRed(exact.subarray(0, exact.length - 1), out)).toBe("block past the end");
    // A length field of 1023 on a 20-byte packet.
    const lying = Uint8Array.of(0x80 | OPUS, STEP >> 6, ((STEP & 0x3f) << 2) | 0x03, 0xff, OPUS, 1, 2, 3);
    expect(parseRed(lying, out)).toBe("block past the end");
  });

  it("refuses no blocks at all, a header cut short, and headers with no primary", () => {
    expect(parseRed(new Uint8Array(0), out)).toBe("empty");
    expect(parseRed(Uint8Array.of(0x80 | OPUS, 0x0f), out)).toBe("header past the end");
    expect(parseRed(Uint8Array.of(0x80 | OPUS, 0x0f, 0x00, 0x00), out)).toBe("header past the end");
    expect(out.count).toBe(0);
    // The primary's one-byte header alone is a valid, empty primary block.
    expect(parseRed(Uint8Array.of(OPUS), out)).toBeUndefined();
    expect(out.count).toBe(1);
  });

  it("never throws and never reads past the payload, whatever the bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1500 }), (payload) => {
        const problem = parseRed(payload, out);
        if (problem !== undefined) {
          expect(out.count).toBe(0);
          return;
        }
        for (let i = 0; i < out.count; i++) {
          expect(out.starts[i]).toBeLessThanOrEqual(out.ends[i]!);
          expect(out.ends[i]).toBeLessThanOrEqual(payload.length);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe("Uplink with audio/red", () => {
  /** 3 s of speech as 20 ms Opus packets (browser settings: VOIP, in-band FEC). */
  let packets: Buffer[];

  beforeAll(async () => {
    const pcm = await new SpeechSynthesizer().speak(
      "A table for four on Friday evening, please, by the window.",
    );
    const encoder = createOpusEncoder();
    packets = [];
    for (let i = 0; i + FRAME <= pcm.length; i += FRAME)
      packets.push(encoder.encode(Buffer.from(pcm.buffer, pcm.byteOffset + i * 2, FRAME * 2)));
  }, 30_000);

  /** An uplink whose frames land in one PCM buffer. */
  function uplink() {
    const frames: Int16Array[] = [];
    const up = new Uplink({
      decoder: opusUplinkDecoder(),
      payloadType: OPUS,
      reorderDepth: 3,
      onFrame: (pcm) => frames.push(pcm.slice()),
    });
    return { up, pcm: () => Int16Array.from(frames.flatMap((f) => [...f])) };
  }

  /** Packet i as a sender with RED `distance` sends it: the primary and up to `distance` before it. */
  const redPacket = (i: number, distance: number) =>
    buildRed([
      ...Array.from({ length: Math.min(i, distance) }, (_, k) => {
        const back = Math.min(i, distance) - k;
        return block(OPUS, back * STEP, packets[i - back]!);
      }),
      block(OPUS, 0, packets[i]!),
    ]);

  const seq = (i: number) => (65_530 + i) & 0xffff; // wraps
  const ts = (i: number) => (0xffff_f000 + i * STEP) >>> 0; // wraps

  it("fills bursts of two lost packets from distance-2 redundancy: the same audio as no loss, nothing concealed", () => {
    const clean = uplink();
    packets.forEach((p, i) => clean.up.receive(seq(i), ts(i), p));
    const lossy = uplink();
    let lost = 0;
    packets.forEach((_, i) => {
      if (i % 10 === 4 || i % 10 === 5) return lost++; // a burst of two every 200 ms
      lossy.up.receiveRed(seq(i), ts(i), redPacket(i, 2));
    });
    expect(lossy.up.stats.redRecovered).toBe(lost);
    expect(lossy.up.stats.concealed).toBe(0);
    expect(lossy.up.stats.recovered).toBe(0);
    expect(lossy.up.stats.lost).toBe(0);
    expect(lossy.up.stats.redRefused).toBe(0);
    // Copies of packets that did arrive were not pushed: no duplicates, nothing late.
    expect(lossy.up.stats.late).toBe(0);
    // Each frame decoded from the very packet the sender encoded, in order: bit-exact.
    expect(lossy.pcm()).toEqual(clean.pcm());
  });

  it("with distance 1, a burst of two gets its second packet from redundancy and its first from FEC or concealment", () => {
    const lossy = uplink();
    let bursts = 0;
    packets.forEach((_, i) => {
      if (i % 10 === 4) bursts++;
      if (i % 10 === 4 || i % 10 === 5) return;
      lossy.up.receiveRed(seq(i), ts(i), redPacket(i, 1));
    });
    expect(lossy.up.stats.redRecovered).toBe(bursts);
    expect(lossy.up.stats.recovered + lossy.up.stats.concealed).toBe(bursts);
    expect(lossy.up.stats.frames).toBe(packets.length);
  });

  it("mixes RED and plain packets of the same stream", () => {
    const up = uplink();
    packets.forEach((p, i) => {
      if (i % 7 === 3) return;
      if (i % 2 === 0) up.up.receiveRed(seq(i), ts(i), redPacket(i, 1));
      else up.up.receive(seq(i), ts(i), p);
    });
    // A loss before an even (RED) packet is filled from it; before an odd one, not.
    expect(up.up.stats.redRecovered).toBeGreaterThan(0);
    expect(up.up.stats.frames).toBe(packets.length);
  });

  it("skips nested RED, unknown payload types and empty blocks, uses the rest, and says why", () => {
    const { up } = uplink();
    up.receiveRed(seq(0), ts(0), redPacket(0, 0));
    // Packet 1 lost. Packet 2's copy of it is wrapped in RED again (PT 63 inside RED): skipped.
    const nested = buildRed([block(RED, STEP, redPacket(1, 0)), block(OPUS, 0, packets[2]!)]);
    expect(up.receiveRed(seq(2), ts(2), nested)).toBe("block of another codec");
    // Packet 3 lost; packet 4 carries it under an unknown PT and an empty copy of nothing.
    const foreign = buildRed([
      block(99, 2 * STEP, packets[3]!),
      block(OPUS, STEP, new Uint8Array(0)),
      block(OPUS, 0, packets[4]!),
    ]);
    expect(up.receiveRed(seq(4), ts(4), foreign)).toBe("block of another codec");
    // The primary itself of another codec: its frame is missing, the packet refused.
    expect(up.receiveRed(seq(5), ts(5), buildRed([block(0, 0, packets[5]!)]))).toBe("block of another codec");
    for (let i = 6; i < 12; i++) expect(up.receiveRed(seq(i), ts(i), redPacket(i, 1))).toBeUndefined();
    // Packets 1, 3 and 5: none came from redundancy (packet 6 carried 5, but of PT 111: used).
    expect(up.stats.redRecovered).toBe(1);
    expect(up.stats.redRefused).toBe(3);
    expect(up.stats.frames).toBe(12);
    expect(up.stats.recovered + up.stats.concealed).toBe(2);
  });

  it("refuses a RED packet that does not parse and conceals its frame, then goes on", () => {
    const { up } = uplink();
    for (let i = 0; i < 3; i++) up.receiveRed(seq(i), ts(i), redPacket(i, 1));
    expect(up.receiveRed(seq(3), ts(3), new Uint8Array(0))).toBe("empty");
    const past = redPacket(4, 1).slice(0, 30); // its redundant block's length now runs past the end
    expect(up.receiveRed(seq(4), ts(4), past)).toBe("block past the end");
    for (let i = 5; i < 20; i++) up.receiveRed(seq(i), ts(i), redPacket(i, 0));
    expect(up.stats.redRefused).toBe(2);
    expect(up.stats.frames).toBe(20);
    expect(up.stats.concealed + up.stats.recovered).toBe(2);
  });

  it("takes any bytes as a RED payload without throwing, and keeps the stream's time", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { minLength: 1, maxLength: 40 }),
        (payloads) => {
          const { up } = uplink();
          payloads.forEach((payload, i) => up.receiveRed(seq(i), ts(i), payload));
          up.receive(seq(payloads.length + 5), ts(payloads.length + 5), packets[0]!);
          // Every sequence number from the first to the last is a frame, whatever was in it
          // (multi-frame Opus packets may add more).
          expect(up.stats.frames).toBeGreaterThanOrEqual(1);
          expect(up.stats.packets).toBe(payloads.length + 1);
        },
      ),
      { numRuns: 300 },
    );
  });
});
