// RELAY_ICE_LITE=1: the relay answers as an ICE-lite agent (RFC 8445 §2.5), as servers on a
// public address do; the full-ICE client does the checks and nominates, and audio flows both
// ways as it does with full ICE.
import { expect, it } from "vitest";
import { RecordingBridge, connectRecorded } from "../fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { dominantFrequency, sine } from "../../support/audio.ts";
import { useRelay } from "../../support/relays.ts";

const relay = useRelay({ bridgeFactory: RecordingBridge.factory, env: { RELAY_ICE_LITE: "1" } });

it("answers a=ice-lite, connects, and carries audio both ways", async () => {
  const { client, bridge } = await connectRecorded(relay);
  expect(client.answerSdp).toMatch(/^a=ice-lite\r?$/m);

  await client.sendPackets(client.encodeFrames(sine(440, 600, 8000)));
  await waitFor(() => bridge.frames.length >= 30, 5000, "30 uplink frames");
  expect(Math.abs(dominantFrequency(bridge.pcm().subarray(4800)) - 440)).toBeLessThanOrEqual(10);

  bridge.ctx.downlink.push("item_1", 0, sine(660, 600, 8000));
  await waitFor(() => client.received.length >= 30, 5000, "30 packets at the client");
  expect(Math.abs(dominantFrequency(client.decodeReceived().subarray(2400)) - 660)).toBeLessThanOrEqual(10);
});
