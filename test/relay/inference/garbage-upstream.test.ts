// An inference upstream that answers with garbage, through a real relay process and a real
// WebSocket server: 3,000 frames that are not JSON or not text cost the call one warning per kind
// of problem (and its count when the call ends), not a line per frame, and the call works on.
import { TEST_RELAY_ID } from "../../support/relay-api.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocketServer } from "ws";
import { waitFor } from "../../support/loopback.ts";
import { TestPeer } from "../../support/peer.ts";
import { startRelayProcess, type RelayProcess, logLines } from "../../support/relays.ts";

const GARBAGE_TEXT = 1500;
const GARBAGE_BINARY = 1500;
const MARKER = JSON.stringify({ type: "earshot.test.after_garbage" });

let relay: RelayProcess;
let upstream: WebSocketServer;

beforeAll(async () => {
  upstream = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((resolve) => upstream.once("listening", resolve));
  // On the relay's session.update: garbage, then its answer and one event the client should
  // still get (the relay holds client-bound events until the model has confirmed the session).
  upstream.on("connection", (socket) => {
    socket.once("message", () => {
      for (let i = 0; i < GARBAGE_TEXT; i++) socket.send(i % 2 ? "not json" : "{");
      for (let i = 0; i < GARBAGE_BINARY; i++) socket.send(Buffer.from([0xde, 0xad, i & 0xff]));
      socket.send(
        JSON.stringify({ type: "session.updated", event_id: "event_1", session: { type: "realtime" } }),
      );
      socket.send(MARKER);
    });
  });
  const { port } = upstream.address() as { port: number };
  relay = await startRelayProcess({
    id: TEST_RELAY_ID,
    inferenceUrl: `ws://127.0.0.1:${port}/v1/realtime`,
    env: { RELAY_VAD: "off" },
  });
});
afterAll(async () => {
  await relay?.stop("SIGKILL");
  await new Promise((resolve) => upstream.close(resolve));
});

const lines = () => logLines(relay);

describe("a garbage upstream", () => {
  it(`${GARBAGE_TEXT + GARBAGE_BINARY} non-JSON and binary frames: one warning per kind for the call, counted at its end`, async () => {
    const client = new TestPeer();
    try {
      expect((await client.call(relay.url)).status).toBe(201);
      await client.connected();
      await client.channelOpen();
      await waitFor(() => client.messages.includes(MARKER), 15_000, "the event after the garbage");
      expect(client.pc.connectionState).toBe("connected");
      const warnings = () => lines().filter((l) => l.call_id === client.callId && l.level >= 40);
      expect(lines().filter((l) => l.level >= 50)).toEqual([]);
      // The log is the process's stdout: give its last lines a moment to arrive.
      await waitFor(() => warnings().length >= 2, 5000, "the warnings in the log");
      expect(warnings().map((l) => l.msg)).toEqual(["bad upstream event", "binary upstream frame"]);
      await client.close();
      await waitFor(
        () => lines().some((l) => l.call_id === client.callId && l.msg === "call ended"),
        15_000,
        "the call end",
      );
      expect(warnings().filter((l) => l.msg.endsWith("(repeated)"))).toEqual([
        expect.objectContaining({ msg: "bad upstream event (repeated)", count: GARBAGE_TEXT }),
        expect.objectContaining({ msg: "binary upstream frame (repeated)", count: GARBAGE_BINARY }),
      ]);
    } finally {
      await client.close();
    }
  });
});
