// An offer without Opus (an old SIP gateway, a G.711-only client): the relay answers PCMU and
// audio still flows both ways, through the band-limited 8 kHz ⇄ 24 kHz resampler.
import {
  RTCPeerConnection,
  RTCRtpCodecParameters,
  RtpHeader,
  RtpPacket,
  type RtpPacket as Rtp,
} from "werift";
import { expect, it } from "vitest";
import { RecordingBridge } from "../fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { concat, dominantFrequency, frequencies, rms, sine } from "../../support/audio.ts";
import { bootIdOf, newCallId, postCall, ticketFor } from "../../support/relay-api.ts";
import { useRelay } from "../../support/relays.ts";

// G.711 µ-law written out here from the standard, independently of relay/media/g711.ts.
function muLawEncode(sample: number): number {
  const sign = sample < 0 ? 0x80 : 0;
  let magnitude = Math.min(Math.abs(sample), 32635) + 0x84;
  let exponent = 7;
  while (exponent > 0 && (magnitude & (0x4000 >> (7 - exponent))) === 0) exponent--;
  const mantissa = (magnitude >> (exponent + 3)) & 0x0f;
  magnitude = ~(sign | (exponent << 4) | mantissa);
  return magnitude & 0xff;
}
function muLawDecode(byte: number): number {
  const u = ~byte & 0xff;
  const magnitude = ((((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4)) - 0x84;
  return u & 0x80 ? -magnitude : magnitude;
}

const relay = useRelay({ bridgeFactory: RecordingBridge.factory });

it("answers a PCMU-only offer with PCMU and carries audio both ways", async () => {
  const pc = new RTCPeerConnection({
    iceServers: [],
    iceUseIpv6: false,
    iceInterfaceAddresses: { udp4: "127.0.0.1" },
    iceAdditionalHostAddresses: ["127.0.0.1"],
    codecs: {
      audio: [
        new RTCRtpCodecParameters({ mimeType: "audio/PCMU", clockRate: 8000, channels: 1, payloadType: 0 }),
      ],
    },
  });
  try {
    const transceiver = pc.addTransceiver("audio", { direction: "sendrecv" });
    pc.createDataChannel("oai-events");
    const received: Rtp[] = [];
    transceiver.onTrack.subscribe((track) => track.onReceiveRtp.subscribe((rtp) => received.push(rtp)));
    await pc.setLocalDescription(await pc.createOffer());
    const offer = pc.localDescription!.sdp;
    expect(offer).not.toMatch(/opus/i);
    const callId = newCallId();
    const res = await postCall(
      relay.url,
      { call_id: callId, offer_sdp: offer, session: {} },
      await ticketFor(callId, offer, {}, { bootId: await bootIdOf(relay.url) }),
    );
    expect(res.status).toBe(201);
    const { answer_sdp: answer } = (await res.json()) as { answer_sdp: string };
    expect(answer).toMatch(/^a=rtpmap:0 PCMU\/8000/m);
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    await waitFor(() => pc.connectionState === "connected", 10_000, "connected");
    const bridge = RecordingBridge.instances.find((b) => b.ctx.callId === callId)!;

    // Uplink: one second of 440 Hz at 8 kHz, µ-law, 20 ms packets.
    const tone = sine(440, 1000, 8000, 8000);
    let sequence = 1000;
    for (let p = 0; p < 50; p++) {
      const payload = Buffer.alloc(160);
      for (let i = 0; i < 160; i++) payload[i] = muLawEncode(tone[p * 160 + i]!);
      const header = new RtpHeader({
        sequenceNumber: sequence++,
        timestamp: p * 160,
        payloadType: 0,
        marker: p === 0,
      });
      await transceiver.sender.sendRtp(new RtpPacket(header, payload));
      await new Promise((r) => setTimeout(r, 20));
    }
    await waitFor(() => bridge.frames.length >= 45, 5000, "uplink frames at the bridge");
    const up = concat(bridge.frames.slice(5, 45));
    expect(dominantFrequency(up, frequencies(100, 3500))).toBeCloseTo(440, -1);
    // 8000 peak → 5657 RMS, less what the resampler's filters take at the edges.
    expect(rms(up)).toBeGreaterThan(4000);

    // Downlink: one second of 660 Hz pushed as 24 kHz PCM reaches the client as PCMU.
    bridge.ctx.downlink.push("item_g711", 0, sine(660, 1000, 8000));
    await waitFor(() => received.length >= 50, 5000, "50 downlink packets");
    expect(received.every((p) => p.header.payloadType === 0 && p.payload.length === 160)).toBe(true);
    const down = new Int16Array(50 * 160);
    received.slice(0, 50).forEach((p, k) => {
      for (let i = 0; i < 160; i++) down[k * 160 + i] = muLawDecode(p.payload[i]!);
    });
    expect(dominantFrequency(down.subarray(800), frequencies(100, 3500), 8000)).toBeCloseTo(660, -1);
    expect(rms(down.subarray(800))).toBeGreaterThan(4000);
  } finally {
    await pc.close();
  }
});
