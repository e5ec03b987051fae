// The media pieces of issue 19, each on its own: telling a packet with in-band FEC from one
// without, the uplink's reorder window following jitter, the jitter buffer's hold time and
// too-late count, and the downlink encoder switching to FEC on reported loss and back.
import { describe, expect, it } from "vitest";
import { SpeechSynthesizer } from "../../../agent/tts.ts";
import { JitterBuffer } from "../../../relay/media/jitter-buffer.ts";
import { LossAdaptiveOpusEncoder } from "../../../relay/media/loss-adaptive-encoder.ts";
import { OpusDecoder } from "../../../relay/media/opus-codec.ts";
import { opusPacketHasFec } from "../../../relay/media/opus-packet.ts";
import { MAX_REORDER_DEPTH, MIN_REORDER_DEPTH, ReorderDepth } from "../../../relay/media/reorder-depth.ts";
import { createOpusEncoder, FRAME, opus, rms, sine } from "../../support/audio.ts";

/** A voiced, changing signal (two tones gliding), so SILK codes it as speech with LBRR. */
function voiced(ms: number): Int16Array {
  const a = sine(220, ms, 6000);
  const b = sine(1300, ms, 2000);
  return a.map((x, i) => x + b[i]!);
}

function frames(pcm: Int16Array): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i + FRAME <= pcm.length; i += FRAME)
    out.push(Buffer.from(pcm.buffer, pcm.byteOffset + i * 2, FRAME * 2));
  return out;
}

describe("opusPacketHasFec", () => {
  it("finds LBRR in a browser-like VOIP stream of speech and none in CELT or without FEC", async () => {
    const withFec = createOpusEncoder();
    const noFec = new opus.OpusEncoder(24_000, 1, 2048);
    const celt = new opus.OpusEncoder(24_000, 1, 2051);
    const pcm = await new SpeechSynthesizer().speak("Wait, stop, I have a question about that.");
    const count = (encoder: { encode(b: Buffer): Buffer }) =>
      frames(pcm).filter((f) => opusPacketHasFec(encoder.encode(f))).length;
    // SILK codes LBRR for the frames its VAD calls speech: most of a sentence, none of its pauses.
    expect(count(withFec)).toBeGreaterThan(frames(pcm).length / 2);
    expect(count(noFec)).toBe(0);
    expect(count(celt)).toBe(0);
  });

  it("refuses what is too short to hold a frame", () => {
    expect(opusPacketHasFec(new Uint8Array(0))).toBe(false);
    expect(opusPacketHasFec(new Uint8Array([0x68]))).toBe(false);
    expect(opusPacketHasFec(new Uint8Array([0x6b, 0x80]))).toBe(false); // code 3, no frames
  });

  it("a packet it calls FEC-bearing rebuilds the lost frame better than concealment", () => {
    const encoder = createOpusEncoder();
    const packets = frames(voiced(1000)).map((f) => encoder.encode(f));
    const lost = packets.findIndex((p, i) => i > 20 && opusPacketHasFec(packets[i + 1]!) && p.length > 0);
    const run = (recover: boolean) => {
      const decoder = new OpusDecoder();
      const out = new Int16Array(FRAME);
      for (let i = 0; i < lost; i++) decoder.decode(packets[i]!, out);
      if (recover) decoder.recover(packets[lost + 1]!, out);
      else decoder.conceal(out);
      return out.slice();
    };
    const reference = new OpusDecoder();
    const truth = new Int16Array(FRAME);
    for (let i = 0; i <= lost; i++) reference.decode(packets[i]!, truth);
    const error = (x: Int16Array) => rms(x.map((v, i) => v - truth[i]!));
    expect(error(run(true))).toBeLessThan(error(run(false)));
  });
});

describe("ReorderDepth", () => {
  it("stays at 60 ms on a clean link and follows jitter up to its cap", () => {
    const depth = new ReorderDepth();
    expect(depth.update(0.5, false, 0)).toBe(MIN_REORDER_DEPTH);
    // Uniform ±40 ms of delay gives J ≈ 27 ms: 3J ≈ 80 ms, four packets and one more.
    expect(depth.update(27, false, 20)).toBe(6);
    expect(depth.update(1000, false, 40)).toBe(MAX_REORDER_DEPTH);
    expect(depth.update(1, false, 60)).toBe(MIN_REORDER_DEPTH);
  });

  it("deepens at once for a packet that came after it was given up, and relaxes slowly", () => {
    const depth = new ReorderDepth();
    expect(depth.update(0, true, 0)).toBe(MIN_REORDER_DEPTH + 1);
    expect(depth.update(0, true, 100)).toBe(MIN_REORDER_DEPTH + 2);
    expect(depth.update(0, false, 4000)).toBe(MIN_REORDER_DEPTH + 2);
    expect(depth.update(0, false, 5200)).toBe(MIN_REORDER_DEPTH + 1);
    expect(depth.update(0, false, 10_300)).toBe(MIN_REORDER_DEPTH);
  });
});

describe("JitterBuffer hold time and too-late packets", () => {
  it("counts how long a packet waited for a gap, and tells a too-late packet from a duplicate", () => {
    const played: (number | null)[] = [];
    const buffer = new JitterBuffer(3, (payload) => played.push(payload ? payload[0]! : null));
    const p = (n: number) => new Uint8Array([n]);
    buffer.push(0, p(0), 0);
    buffer.push(2, p(2), 20); // 1 missing: 2 waits
    buffer.push(1, p(1), 50); // 1 arrives 30 ms after 2
    expect(played).toEqual([0, 1, 2]);
    expect(buffer.stats.heldMs).toBe(30);
    expect(buffer.stats.played).toBe(3);
    buffer.push(4, p(4), 60);
    buffer.push(5, p(5), 80);
    buffer.push(6, p(6), 100);
    buffer.push(7, p(7), 120); // 3 given up
    expect(played).toEqual([0, 1, 2, null, 4, 5, 6, 7]);
    buffer.push(3, p(3), 130); // too late
    buffer.push(7, p(7), 140); // a duplicate of a played packet
    expect(buffer.stats.late).toBe(2);
    expect(buffer.stats.tooLate).toBe(1);
  });

  it("lets a held gap go at the next packet when made shallower", () => {
    const played: (number | null)[] = [];
    const buffer = new JitterBuffer(5, (payload) => played.push(payload ? payload[0]! : null));
    for (const n of [0, 2, 3]) buffer.push(n, new Uint8Array([n]), n * 20);
    expect(played).toEqual([0]);
    buffer.depth = 1;
    buffer.push(4, new Uint8Array([4]), 80);
    expect(played).toEqual([0, null, 2, 3, 4]);
    expect(() => (buffer.depth = JitterBuffer.RING)).toThrow(RangeError);
  });
});

describe("LossAdaptiveOpusEncoder", () => {
  const encodeSome = (encoder: LossAdaptiveOpusEncoder, n = 10) => {
    const out = new Uint8Array(1500);
    const packets: Uint8Array[] = [];
    for (const f of frames(voiced(n * 20)))
      packets.push(out.slice(0, encoder.encode(new Int16Array(f.buffer, f.byteOffset, FRAME), out)));
    return packets;
  };
  const celt = (packet: Uint8Array) => packet[0]! >> 3 >= 16;

  it("starts with FEC, drops it after three clean reports, takes it up again on loss", () => {
    const encoder = new LossAdaptiveOpusEncoder(5);
    expect(encodeSome(encoder).some((p) => opusPacketHasFec(p))).toBe(true);
    expect(encoder.expectedLossPercent).toBe(5);
    encoder.onReceiverReport({ fractionLost: 0, now: 1000 });
    encoder.onReceiverReport({ fractionLost: 0, now: 2000 });
    expect(encoder.expectedLossPercent).toBeGreaterThan(0); // one clean second proves little
    encoder.onReceiverReport({ fractionLost: 0, now: 3000 });
    expect(encoder.expectedLossPercent).toBe(0);
    expect(encodeSome(encoder).every(celt)).toBe(true);
    encoder.onReceiverReport({ fractionLost: 0.08, now: 2000 });
    expect(encoder.expectedLossPercent).toBe(8);
    const lossy = encodeSome(encoder, 20);
    expect(lossy.some(celt)).toBe(false);
    expect(lossy.filter((p) => opusPacketHasFec(p)).length).toBeGreaterThan(10);
    expect(encoder.fecFrames).toBe(30);
  });

  it("keeps FEC through short clean spells and ends it after 10 s without loss", () => {
    const encoder = new LossAdaptiveOpusEncoder(5);
    encoder.onReceiverReport({ fractionLost: 0.2, now: 0 });
    expect(encoder.expectedLossPercent).toBe(20);
    encoder.onReceiverReport({ fractionLost: 0, now: 1000 });
    expect(encoder.expectedLossPercent).toBe(16); // decays, not gone
    // Under 1 % (RTCP's 1/256 steps) is not loss worth FEC.
    encoder.onReceiverReport({ fractionLost: 2 / 256, now: 5000 });
    expect(encoder.expectedLossPercent).toBeGreaterThan(0);
    encoder.onReceiverReport({ fractionLost: 0, now: 10_500 });
    expect(encoder.expectedLossPercent).toBe(0);
    expect(encodeSome(encoder).every(celt)).toBe(true);
  });
});
