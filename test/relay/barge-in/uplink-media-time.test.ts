// The echo guard's input from the uplink: each 20 ms frame's media time (the client's capture
// clock, from RTP timestamps), through the real jitter buffer and decoders, whatever happens to
// the packets on the way: loss (concealed frames), reordering, 10/60 ms packets, DTX gaps,
// timestamp wrap, an 8 kHz clock.
import { describe, expect, it } from "vitest";
import { G711Decoder, G711Encoder } from "../../../relay/media/g711.ts";
import { OpusEncoder, opusUplinkDecoder } from "../../../relay/media/opus-codec.ts";
import type { UplinkDecoder } from "../../../relay/media/codec.ts";
import { Uplink } from "../../../relay/media/uplink.ts";

/** Opus packets of `ms` each (a tone, so there is something to decode). */
function opusPackets(count: number, ms: number): Uint8Array[] {
  const encoder = new OpusEncoder({ application: "voip", complexity: 1, bitrate: 32_000 });
  const samples = (24_000 * ms) / 1000;
  const out = new Uint8Array(1500);
  const packets: Uint8Array[] = [];
  for (let p = 0; p < count; p++) {
    const pcm = new Int16Array(samples);
    for (let i = 0; i < samples; i++)
      pcm[i] = Math.round(8000 * Math.sin((2 * Math.PI * 300 * (p * samples + i)) / 24_000));
    packets.push(out.slice(0, encoder.encode(pcm, out)));
  }
  return packets;
}

/** Feeds RTP packets (sequence, timestamp, payload) and returns each frame's media time. */
function mediaTimes(decoder: UplinkDecoder, packets: [number, number, Uint8Array][]): number[] {
  const times: number[] = [];
  const uplink = new Uplink({
    decoder,
    reorderDepth: 3,
    onFrame: (_pcm, mediaTimeMs) => times.push(mediaTimeMs),
  });
  for (const [seq, ts, payload] of packets) uplink.receive(seq & 0xffff, ts >>> 0, payload);
  uplink.close();
  return times;
}

const steps = (n: number, from = 0, step = 20) => Array.from({ length: n }, (_, i) => from + i * step);

describe("uplink frames' media time", () => {
  it("counts 20 ms per frame from the first packet, over a timestamp wrap", () => {
    const payloads = opusPackets(10, 20);
    const start = 0xffff_ffff - 960 * 4; // wraps after the fifth packet
    const times = mediaTimes(
      opusUplinkDecoder(),
      payloads.map((p, i) => [65_530 + i, start + i * 960, p]),
    );
    expect(times).toEqual(steps(10));
  });

  it("gives concealed (lost) and reordered packets their own time", () => {
    const payloads = opusPackets(12, 20);
    const order = [0, 1, 2, 4, 3, 5, 7, 8, 9, 10, 11]; // 3 late, 6 lost
    const times = mediaTimes(
      opusUplinkDecoder(),
      order.map((i) => [1000 + i, 5000 + i * 960, payloads[i]!]),
    );
    expect(times).toEqual(steps(12));
  });

  it("splits 60 ms packets and joins 10 ms packets into 20 ms frames at the right times", () => {
    const long = opusPackets(3, 60);
    expect(
      mediaTimes(
        opusUplinkDecoder(),
        long.map((p, i) => [i, i * 2880, p]),
      ),
    ).toEqual(steps(9));
    const short = opusPackets(8, 10);
    expect(
      mediaTimes(
        opusUplinkDecoder(),
        short.map((p, i) => [i, i * 480, p]),
      ),
    ).toEqual(steps(4));
  });

  it("jumps over a DTX gap (sequence numbers continue, timestamps skip a second)", () => {
    const payloads = opusPackets(6, 20);
    const times = mediaTimes(
      opusUplinkDecoder(),
      payloads.map((p, i) => [i, i < 3 ? i * 960 : 48_000 + i * 960, p]),
    );
    expect(times).toEqual([0, 20, 40, 1060, 1080, 1100]);
  });

  it("uses the codec's clock (G.711, 8 kHz)", () => {
    const encoder = new G711Encoder("pcmu");
    const out = new Uint8Array(160);
    const payloads = Array.from({ length: 5 }, () => out.slice(0, encoder.encode(new Int16Array(480), out)));
    const times = mediaTimes(
      new G711Decoder("pcmu"),
      payloads.map((p, i) => [i, 77 + i * 160, p]),
    );
    expect(times).toEqual(steps(5));
  });
});
