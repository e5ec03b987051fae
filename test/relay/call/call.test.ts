// A werift client calls the relay through its HTTP API and audio flows both ways.
import { describe, expect, it } from "vitest";
import { answerDirection, answerSetup } from "../../../relay/call/sdp.ts";
import { RecordingBridge } from "../fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { dominantFrequency, goertzel, rms, silentWindows, sine } from "../../support/audio.ts";
import { TestPeer } from "../../support/peer.ts";
import { useRelay } from "../../support/relays.ts";

const relay = useRelay({ bridgeFactory: RecordingBridge.factory });

async function connect(): Promise<{ client: TestPeer; bridge: RecordingBridge }> {
  const client = new TestPeer();
  relay.track(client);
  const response = await client.call(relay.url);
  expect(response.status).toBe(201);
  expect(response.headers.get("location")).toBe(`/calls/${client.callId}`);
  await client.connected();
  const bridge = RecordingBridge.instances.find((b) => b.ctx.callId === client.callId)!;
  return { client, bridge };
}

describe("a call through the HTTP API", () => {
  it("connects, answers sendrecv + setup:passive, and opens oai-events both ways", async () => {
    const { client, bridge } = await connect();
    expect(answerDirection(client.answerSdp)).toBe("sendrecv");
    expect(answerSetup(client.answerSdp)).toBe("passive");
    expect(client.answerSdp).toMatch(/^a=group:BUNDLE /m);
    expect(client.answerSdp).toMatch(/^a=rtcp-mux/m);
    expect(client.answerSdp).toMatch(/^a=rtpmap:\d+ opus\/48000\/2/im);
    expect(client.answerSdp).not.toMatch(/ 192\.0\.2\.| 10\.| 172\.(1[6-9]|2\d|3[01])\.| 192\.168\./);
    await waitFor(() => relay.calls.get(client.callId)?.state === "connected", 5000, "relay connected");

    await client.channelOpen();
    await waitFor(() => bridge.channelOpened, 5000, "bridge told the channel opened");
    client.channel.send('{"type":"session.update"}');
    await waitFor(() => bridge.messages.length === 1, 5000, "client message at the bridge");
    expect(bridge.messages[0]).toBe('{"type":"session.update"}');
    bridge.ctx.events.send('{"type":"session.updated"}');
    await waitFor(() => client.messages.length === 1, 5000, "relay message at the client");
    expect(client.messages[0]).toBe('{"type":"session.updated"}');
  });

  it("drops data channel messages over the size cap and passes one at the cap", async () => {
    const { client, bridge } = await connect();
    await client.channelOpen();
    const { MAX_CLIENT_MESSAGE_BYTES } = await import("../../../relay/call/peer-config.ts");
    // Play a client that ignores the advertised a=max-message-size.
    client.pc.sctpTransport!.remoteMaxMessageSize = 0;
    const atCap = `"${"a".repeat(MAX_CLIENT_MESSAGE_BYTES - 2)}"`;
    client.channel.send(atCap);
    client.channel.send(`${atCap} `);
    client.channel.send("after");
    await waitFor(() => bridge.messages.includes("after"), 10_000, "messages at the bridge");
    expect(bridge.messages.map((m) => m.length)).toEqual([MAX_CLIENT_MESSAGE_BYTES, 5]);
    expect(relay.calls.get(client.callId)!.droppedMessages).toBe(1);
  });

  it("delivers a 440 Hz tone from the client to the bridge at the right frequency and level", async () => {
    const { client, bridge } = await connect();
    const tone = sine(440, 1000, 8000);
    await client.sendPackets(client.encodeFrames(tone));
    await waitFor(() => bridge.frames.length >= 50, 5000, "50 uplink frames");
    const pcm = bridge.pcm();
    expect(pcm.length).toBe(50 * 480);
    // Skip the codec's start-up (look-ahead and the first frame's ramp).
    const steady = pcm.subarray(4800);
    expect(dominantFrequency(steady)).toBeGreaterThanOrEqual(430);
    expect(dominantFrequency(steady)).toBeLessThanOrEqual(450);
    const level = goertzel(steady, 440);
    expect(level).toBeGreaterThan(8000 * 0.8);
    expect(level).toBeLessThan(8000 * 1.2);
    expect(silentWindows(steady, 2000)).toEqual([]);
  });

  it("sends PCM pushed into the downlink to the client as Opus of the right frequency and duration", async () => {
    const { client, bridge } = await connect();
    const tone = sine(660, 1000, 8000);
    for (let i = 0; i < tone.length; i += 2400)
      bridge.ctx.downlink.push("item_1", 0, tone.subarray(i, i + 2400));
    expect(bridge.ctx.downlink.queuedMs).toBe(1000);
    await waitFor(() => client.received.length >= 50, 5000, "50 packets at the client");
    await new Promise((r) => setTimeout(r, 100));
    expect(client.received.length).toBe(50);
    expect(client.received[0]!.marker).toBe(true);
    expect(client.received.slice(1).every((p) => !p.marker)).toBe(true);
    for (let i = 1; i < client.received.length; i++) {
      expect((client.received[i]!.timestamp - client.received[i - 1]!.timestamp) >>> 0).toBe(960);
      expect((client.received[i]!.sequenceNumber - client.received[i - 1]!.sequenceNumber) & 0xffff).toBe(1);
    }
    const pcm = client.decodeReceived();
    expect(pcm.length).toBe(24_000);
    const steady = pcm.subarray(2400);
    expect(Math.abs(dominantFrequency(steady) - 660)).toBeLessThanOrEqual(10);
    expect(rms(steady)).toBeGreaterThan((8000 / Math.SQRT2) * 0.7);
    expect(bridge.ctx.downlink.ledger.sentMs("item_1")).toBe(1000);
    expect(bridge.playout).toEqual(["started:item_1", "stopped:item_1"]);
  });
});
