// A client that forges data channel control messages (DCEP, RFC 8832) and payload protocol ids
// the relay never negotiated, through a real relay process: the call logs the problem once (and
// its count when it ends), no unhandled rejection, no ERROR line, and the call works on.
import { TEST_RELAY_ID } from "../../support/relay-api.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../../support/loopback.ts";
import { TestPeer } from "../../support/peer.ts";
import { startRelayProcess, type RelayProcess, logLines } from "../../support/relays.ts";

/** RFC 8831/8832 payload protocol ids and DCEP message types. */
const PPID_DCEP = 50;
const PPID_STRING = 51;
const DCEP_ACK = 2;
const DCEP_OPEN = 3;

let relay: RelayProcess;

beforeAll(async () => {
  relay = await startRelayProcess({ id: TEST_RELAY_ID, env: { RELAY_VAD: "off" } });
});
afterAll(async () => {
  await relay.stop("SIGKILL");
});

const lines = () => logLines(relay);

/** Sends raw SCTP user messages on the client's association, bypassing its data channel API. */
function forge(client: TestPeer, streamId: number, ppid: number, data: Buffer): Promise<void> {
  const sctp = client.pc.sctpTransport!.sctp as unknown as {
    send(streamId: number, ppid: number, data: Buffer): Promise<void>;
  };
  return sctp.send(streamId, ppid, data);
}

describe("forged data channel control messages", () => {
  it("300 of them log one warning for the call (and its count at the end), no ERROR, and the call works on", async () => {
    const client = new TestPeer();
    const callId = client.callId;
    try {
      expect((await client.call(relay.url)).status).toBe(201);
      await client.connected();
      await client.channelOpen();
      const ownStream = client.channel.id!;
      // The agent's session.created arrives first; then a round trip shows the channel works.
      await waitFor(() => client.messages.length > 0, 10_000, "the first server event");
      const forged: [number, number, Buffer][] = [];
      for (let i = 0; i < 100; i++) {
        // An ACK for a channel that was never opened (werift threw "channel not found").
        forged.push([1000 + 2 * i, PPID_DCEP, Buffer.from([DCEP_ACK])]);
        // An unknown payload protocol id on the call's own channel (werift threw).
        forged.push([ownStream, 1234, Buffer.from("x")]);
        // A DCEP OPEN too short to hold its header, and one of an unknown message type.
        forged.push([
          1000 + 2 * i,
          PPID_DCEP,
          i % 2 ? Buffer.from([DCEP_OPEN, 0]) : Buffer.from([0x7f, 1, 2]),
        ]);
      }
      // Paced a little (25 at a time): a 300-message burst on loopback loses packets, and werift's
      // SCTP recovers from that loss slowly on a loaded machine (patches/README.md); the count is
      // what this test is about, not the burst.
      for (const [i, [stream, ppid, data]] of forged.entries()) {
        await forge(client, stream, ppid, data);
        if (i % 25 === 24) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      // Ordered on the call's own stream, so the relay has handled every forgery before it.
      await forge(client, ownStream, PPID_STRING, Buffer.from(JSON.stringify({ type: "response.create" })));
      const before = client.messages.length;
      await waitFor(() => client.messages.length > before, 20_000, "the relay to answer after the forgeries");
      expect(client.pc.connectionState).toBe("connected");
      expect(client.channel.readyState).toBe("open");

      const forCall = () => lines().filter((l) => l.call_id === callId && l.level >= 40);
      expect(lines().filter((l) => l.level >= 50)).toEqual([]);
      expect(lines().filter((l) => l.msg === "unhandled rejection")).toEqual([]);
      expect(forCall()).toEqual([
        expect.objectContaining({ level: 40, msg: "data channel control message refused" }),
      ]);
      await client.close();
      await waitFor(
        () => lines().some((l) => l.call_id === callId && l.msg === "call ended"),
        15_000,
        "the call end",
      );
      expect(forCall()).toEqual([
        expect.objectContaining({ level: 40, msg: "data channel control message refused" }),
        expect.objectContaining({
          level: 40,
          msg: "data channel control message refused (repeated)",
          count: forged.length,
        }),
      ]);
    } finally {
      await client.close();
    }
  }, 60_000);
});
