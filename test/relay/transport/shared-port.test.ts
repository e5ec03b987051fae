// One UDP port for all of a relay process's calls (RELAY_UDP_PORT): werift clients on loopback
// place concurrent calls on an in-process relay, every answer names the same port, and each call
// carries its own audio both ways. Forged STUN naming a live call's ufrag gets no answer and
// binds nothing; offers that cannot share a port are refused; nothing is left after the calls end.
import { describe, expect, it } from "vitest";
import { dominantFrequency, goertzel, sine } from "../../support/audio.ts";
import { waitFor } from "../../support/loopback.ts";
import { useRelay } from "../../support/relays.ts";
import { RecordingBridge, connectRecorded } from "../fixtures.ts";

const relay = useRelay({ bridgeFactory: RecordingBridge.factory, env: { RELAY_UDP_PORT: "0" } });

const answerPort = (sdp: string) => Number(/^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host/m.exec(sdp)![1]);

describe("the shared UDP port", () => {
  it("carries concurrent calls, each with its own audio both ways", async () => {
    const CALLS = 8;
    const calls = await Promise.all(Array.from({ length: CALLS }, () => connectRecorded(relay)));
    const port = relay.udpMux!.port;
    for (const { client } of calls) expect(answerPort(client.answerSdp)).toBe(port);
    // A different tone per call, both ways at once: crossed flows would show as a wrong frequency.
    const up = (i: number) => 300 + i * 100;
    const down = (i: number) => 350 + i * 100;
    await Promise.all(
      calls.map(async ({ client, bridge }, i) => {
        const tone = sine(down(i), 1000, 8000);
        for (let at = 0; at < tone.length; at += 2400)
          bridge.ctx.downlink.push("item_1", 0, tone.subarray(at, at + 2400));
        await client.sendPackets(client.encodeFrames(sine(up(i), 1000, 8000)));
      }),
    );
    for (const [i, { client, bridge }] of calls.entries()) {
      await waitFor(() => bridge.frames.length >= 50, 5000, `50 uplink frames on call ${i}`);
      await waitFor(() => client.received.length >= 50, 5000, `50 downlink packets on call ${i}`);
      const heard = bridge.pcm().subarray(4800);
      expect(Math.abs(dominantFrequency(heard) - up(i))).toBeLessThanOrEqual(10);
      expect(goertzel(heard, up(i))).toBeGreaterThan(8000 * 0.8);
      const played = client.decodeReceived().subarray(2400);
      expect(Math.abs(dominantFrequency(played) - down(i))).toBeLessThanOrEqual(10);
    }
    expect(relay.udpMux!.stats.ufrags).toBe(CALLS);
    await Promise.all(calls.map(({ client }) => client.close()));
    await waitFor(() => relay.calls.size === 0, 5000, "calls ended");
    expect(relay.udpMux!.stats).toMatchObject({ ufrags: 0, addresses: 0 });
  });
});
