// The `oai-events` data channel under a hostile client: messages over the cap (fragmented by
// SCTP) are refused during reassembly without buffering them whole, binary messages are
// dropped and counted, and floods are absorbed; the call lives on through all of it.
import { performance } from "node:perf_hooks";
import { describe, expect, it } from "vitest";
import type { Call } from "../../../relay/call/call.ts";
import { MAX_CLIENT_MESSAGE_BYTES } from "../../../relay/call/peer-config.ts";
import { RecordingBridge, connectRecorded } from "../fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { TestPeer } from "../../support/peer.ts";
import { useRelay } from "../../support/relays.ts";

const relay = useRelay({ bridgeFactory: RecordingBridge.factory });

async function connect(): Promise<{ client: TestPeer; call: Call; bridge: RecordingBridge }> {
  const { client, call, bridge } = await connectRecorded(relay);
  await client.channelOpen();
  await waitFor(() => bridge.channelOpened, 5000, "bridge saw the channel open");
  // Play a client that ignores the relay's a=max-message-size.
  client.pc.sctpTransport!.remoteMaxMessageSize = 0;
  return { client, call, bridge };
}

/** Sends `text` on the client's channel and waits until the relay hands it to the bridge. */
async function sendUntilHeard(
  client: TestPeer,
  bridge: RecordingBridge,
  text: string,
  timeoutMs: number,
  what: string,
): Promise<void> {
  client.channel.send(text);
  await waitFor(() => bridge.messages.includes(text), timeoutMs, what);
}

/** Samples the relay's SCTP reassembly buffer while `run` goes on; returns the peak. */
async function peakBuffered(call: Call, run: () => Promise<void>): Promise<number> {
  let peak = 0;
  const timer = setInterval(() => {
    peak = Math.max(peak, call.udpGuard.sctpBufferedBytes);
  }, 1);
  try {
    await run();
  } finally {
    clearInterval(timer);
  }
  return Math.max(peak, call.udpGuard.sctpBufferedBytes);
}

describe("data channel messages over the size cap", () => {
  for (const size of [MAX_CLIENT_MESSAGE_BYTES + 1, 1024 * 1024, 4 * 1024 * 1024]) {
    it(`of ${size} bytes are refused during reassembly, never buffered past the cap`, async () => {
      const { client, call, bridge } = await connect();
      const before = call.droppedMessages;
      const peak = await peakBuffered(call, async () => {
        client.channel.send(`"${"x".repeat(size - 2)}"`);
        client.channel.send('{"type":"after.big"}');
        await waitFor(
          () => bridge.messages.includes('{"type":"after.big"}'),
          20_000,
          "message after the big one",
        );
      });
      expect(bridge.messages).toEqual(['{"type":"after.big"}']);
      expect(call.droppedMessages - before).toBe(1);
      expect(call.udpGuard.oversizeMessages).toBe(1);
      expect(peak).toBeLessThanOrEqual(MAX_CLIENT_MESSAGE_BYTES);
      expect(call.udpGuard.sctpBufferedBytes).toBe(0);
      expect(call.state).toBe("connected");
      console.info(`[figures] data channel ${size} B: refused, peak reassembly buffer ${peak} B`);
    });
  }

  it("at the cap, fragmented, is delivered whole", async () => {
    const { client, call, bridge } = await connect();
    const atCap = `"${"y".repeat(MAX_CLIENT_MESSAGE_BYTES - 2)}"`;
    client.channel.send(atCap);
    await waitFor(() => bridge.messages.length === 1, 10_000, "the message at the cap");
    expect(bridge.messages[0]).toBe(atCap);
    expect(call.droppedMessages).toBe(0);
    expect(call.udpGuard.oversizeMessages).toBe(0);
  });
});

describe("data channel floods", () => {
  it("of 300 small messages in one burst are all delivered in order", async () => {
    const { client, call, bridge } = await connect();
    const start = performance.now();
    for (let i = 0; i < 300; i++) client.channel.send(`{"type":"flood","i":${i}}`);
    await waitFor(() => bridge.messages.length === 300, 10_000, "300 messages at the bridge");
    expect(bridge.messages.every((m, i) => m === `{"type":"flood","i":${i}}`)).toBe(true);
    expect(call.state).toBe("connected");
    console.info(
      `[figures] data channel burst: 300 messages in ${Math.round(performance.now() - start)} ms, 0 lost`,
    );
  });

  it("of 5000 messages in one burst keep the call alive and what arrives in order", async () => {
    // werift's SCTP recovers slowly from the loss such a burst causes on loopback (a werift
    // sender and receiver, with or without this patch), so not everything arrives in time;
    // what must hold is that what arrives is in order and whole, and the relay keeps working.
    // (Event-loop lag can't be attributed here: the werift client shares this process.)
    const { client, call, bridge } = await connect();
    for (let i = 0; i < 5000; i++) client.channel.send(`{"type":"flood","i":${i}}`);
    await new Promise((r) => setTimeout(r, 2000));
    const inTwoSeconds = bridge.messages.length;
    // On a loaded host the first of them can take longer than 2 s: a wait, not a bound.
    await waitFor(() => bridge.messages.length > 0, 15_000, "the first message of the flood");
    expect(bridge.messages.every((m, i) => m === `{"type":"flood","i":${i}}`)).toBe(true);
    expect(call.state).toBe("connected");
    bridge.ctx.events.send('{"type":"still.alive"}');
    await waitFor(
      () => client.messages.includes('{"type":"still.alive"}'),
      5000,
      "relay → client after the flood",
    );
    console.info(`[figures] data channel flood: 5000 sent, ${inTwoSeconds} delivered in order in 2 s`);
  });

  it("of binary messages are dropped and counted, text around them still delivered", async () => {
    const { client, call, bridge } = await connect();
    for (let i = 0; i < 200; i++) client.channel.send(Buffer.alloc(1000, i));
    await sendUntilHeard(client, bridge, '{"type":"text.after.binary"}', 10_000, "text after binary");
    expect(bridge.messages).toEqual(['{"type":"text.after.binary"}']);
    expect(call.droppedMessages).toBe(200);
    expect(call.state).toBe("connected");
  });

  it("of oversize messages are each refused without growing the buffer", async () => {
    const { client, call, bridge } = await connect();
    const big = `"${"z".repeat(MAX_CLIENT_MESSAGE_BYTES)}"`;
    const peak = await peakBuffered(call, async () => {
      for (let i = 0; i < 8; i++) client.channel.send(big);
      await sendUntilHeard(client, bridge, '{"type":"after.many.big"}', 30_000, "message after them");
    });
    expect(call.droppedMessages).toBe(8);
    // One message never holds more than the cap; together, several in flight stay within the
    // receive window the relay advertises (1 MiB) plus the 64 KiB the patch allows past it.
    expect(peak).toBeLessThanOrEqual(1024 * 1024 + 64 * 1024);
    expect(call.state).toBe("connected");
  });
});
