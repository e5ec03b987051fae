// ICE-TCP (RELAY_TCP_PORT) on an in-process relay: a werift client on a network that blocks UDP
// (it offers no UDP candidate, ignores the answer's, checks TCP pairs only; RFC 6544 active)
// completes a call through the answer's `tcptype passive` candidate, with audio both ways over
// RFC 4571 framing. Forged first requests are closed with nothing bound; a call may hold only so
// many connections; a dropped connection ends the call's ICE and leaves nothing behind.
import net from "node:net";
import { parseMessage } from "werift";
import { describe, expect, it } from "vitest";
import { MAX_CONNECTIONS_PER_CALL } from "../../../relay/transport/tcp-mux.ts";
import { UfragMint, ufragKey } from "../../../relay/transport/ufrag.ts";
import { dominantFrequency, goertzel, sine } from "../../support/audio.ts";
import { waitFor } from "../../support/loopback.ts";
import { TestPeer } from "../../support/peer.ts";
import { TEST_SECRET } from "../../support/relay-api.ts";
import { useRelay } from "../../support/relays.ts";
import { request } from "../../support/stun-forgery.ts";
import { RecordingBridge, connectRecorded } from "../fixtures.ts";

const TCP_CANDIDATE = /^a=candidate:\S+ 1 tcp (\d+) (\S+) (\d+) typ host tcptype passive/m;
const UDP_CANDIDATE = /^a=candidate:\S+ 1 udp (\d+) (\S+) (\d+) typ host/m;
const ufragOf = (sdp: string) => /^a=ice-ufrag:(\S+)/m.exec(sdp)![1]!;
const pwdOf = (sdp: string) => /^a=ice-pwd:(\S+)/m.exec(sdp)![1]!;

/** An RFC 4571 frame: 2-byte length, then the packet. */
const framed = (packet: Buffer) =>
  Buffer.concat([Buffer.from([packet.length >> 8, packet.length & 255]), packet]);

/** A raw TCP connection to the relay's ICE-TCP port that records what it gets and when it closes. */
async function rawConnection(port: number) {
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => {});
  const received: Buffer[] = [];
  socket.on("data", (d) => received.push(d));
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  await new Promise<void>((resolve) => socket.once("connect", resolve));
  return { socket, received, closed };
}

/** The STUN messages in `chunks` (RFC 4571 frames), checked under `key`. */
function stunFrames(chunks: Buffer[], key: string) {
  const bytes = Buffer.concat(chunks);
  const messages = [];
  for (let at = 0; at + 2 <= bytes.length;) {
    const length = bytes.readUInt16BE(at);
    messages.push(parseMessage(bytes.subarray(at + 2, at + 2 + length), Buffer.from(key, "utf8")));
    at += 2 + length;
  }
  return messages;
}

describe("ICE-TCP on an in-process relay (RELAY_TCP_PORT)", () => {
  const relay = useRelay({ bridgeFactory: RecordingBridge.factory, env: { RELAY_TCP_PORT: "0" } });

  it("connects a client that can only use TCP, with audio both ways over the passive candidate", async () => {
    const { client, call, bridge } = await connectRecorded(relay, { tcpOnly: true });
    const tcp = TCP_CANDIDATE.exec(client.answerSdp)!;
    const udp = UDP_CANDIDATE.exec(client.answerSdp)!;
    expect(Number(tcp[3])).toBe(relay.tcpFront!.port);
    // UDP stays first by priority: TCP is the fallback, with its head-of-line blocking.
    expect(Number(tcp[1])).toBeLessThan(Number(udp[1]));
    expect(new UfragMint(ufragKey(TEST_SECRET), 0).owner(ufragOf(client.answerSdp))).toBe(0);
    // Both ends selected the TCP pair; the call's stats say so.
    const selected = client.pc.iceTransports[0]!.connection.nominated!;
    expect([selected.localCandidate.transport, selected.remoteCandidate.tcptype]).toEqual(["tcp", "passive"]);
    expect(call.stats().transport).toBe("tcp");

    const downlink = sine(660, 1000, 8000);
    for (let at = 0; at < downlink.length; at += 2400)
      bridge.ctx.downlink.push("item_tcp", 0, downlink.subarray(at, at + 2400));
    await client.sendPackets(client.encodeFrames(sine(440, 1000, 8000)));
    await waitFor(() => bridge.frames.length >= 50, 5000, "uplink frames");
    await waitFor(() => client.received.length >= 50, 5000, "downlink packets");
    const heard = bridge.pcm().subarray(4800);
    expect(Math.abs(dominantFrequency(heard) - 440)).toBeLessThanOrEqual(10);
    expect(goertzel(heard, 440)).toBeGreaterThan(8000 * 0.8);
    const played = client.decodeReceived(0).subarray(2400);
    expect(Math.abs(dominantFrequency(played) - 660)).toBeLessThanOrEqual(10);
    expect(relay.tcpMux!.stats).toMatchObject({ connections: 1 });

    await client.close();
    await waitFor(() => relay.calls.size === 0, 5000, "call ended");
    await waitFor(() => relay.tcpMux!.stats.connections === 0, 2000, "connection closed");
    expect(relay.tcpMux!.stats.ufrags).toBe(0);
  });

  it("keeps UDP clients on UDP beside TCP ones", async () => {
    const { call } = await connectRecorded(relay);
    expect(call.stats().transport).toBe("udp");
  });

  it("closes a connection whose first request names a ufrag without a valid tag, with nothing bound", async () => {
    const { client } = await connectRecorded(relay, { tcpOnly: true });
    const live = ufragOf(client.answerSdp);
    const before = relay.tcpFront!.stats;
    const muxBefore = relay.tcpMux!.stats;
    // A live ufrag with its last (tag) character changed, signed with the call's real password.
    const forged = live.slice(0, -1) + (live.endsWith("A") ? "B" : "A");
    const attacker = await rawConnection(relay.tcpFront!.port);
    attacker.socket.write(framed(request({ username: `${forged}:x`, key: pwdOf(client.answerSdp) })));
    await attacker.closed;
    expect(attacker.received).toEqual([]);
    expect(relay.tcpFront!.stats.dropped.forged).toBe(before.dropped.forged + 1);
    expect(relay.tcpMux!.stats).toEqual(muxBefore);
  });

  it("closes a connection whose first request names a live ufrag but does not authenticate", async () => {
    const { client, bridge } = await connectRecorded(relay, { tcpOnly: true });
    const username = `${ufragOf(client.answerSdp)}:x`;
    const unanswered = relay.tcpMux!.stats.unanswered;
    for (const key of [undefined, "x".repeat(22), pwdOf(client.pc.localDescription!.sdp)]) {
      const attacker = await rawConnection(relay.tcpFront!.port);
      attacker.socket.write(framed(request(key === undefined ? { username } : { username, key })));
      await attacker.closed;
      expect(attacker.received).toEqual([]);
    }
    expect(relay.tcpMux!.stats.unanswered).toBe(unanswered + 3);
    expect(relay.tcpMux!.stats.connections).toBe(1);
    // The call carries on over its own connection.
    client.channel.send('{"type":"after.forgery"}');
    await waitFor(() => bridge.messages.includes('{"type":"after.forgery"}'), 5000, "message at bridge");
  });

  it(`answers up to ${MAX_CONNECTIONS_PER_CALL} authenticated connections per call, and closes the next`, async () => {
    const { client } = await connectRecorded(relay, { tcpOnly: true });
    const username = `${ufragOf(client.answerSdp)}:x`;
    const key = pwdOf(client.answerSdp);
    const overLimit = relay.tcpMux!.stats.overLimit;
    // The client's own connection is the first.
    const extra = [];
    for (let i = 1; i < MAX_CONNECTIONS_PER_CALL; i++) {
      const c = await rawConnection(relay.tcpFront!.port);
      c.socket.write(framed(request({ username, key })));
      extra.push(c);
    }
    for (const c of extra) {
      await waitFor(() => c.received.length > 0, 2000, "an answer");
      expect(stunFrames(c.received, key)[0]?.messageClass).toBe(0x100);
    }
    const past = await rawConnection(relay.tcpFront!.port);
    past.socket.write(framed(request({ username, key })));
    await past.closed;
    expect(past.received).toEqual([]);
    expect(relay.tcpMux!.stats.overLimit).toBe(overLimit + 1);
    for (const c of extra) c.socket.destroy();
    await Promise.all(extra.map((c) => c.closed));
    await waitFor(() => relay.tcpMux!.stats.connections === 1, 2000, "extra connections gone");
  });

  it("ends the call when its selected TCP connection drops, and forgets it", async () => {
    const { client, call } = await connectRecorded(relay, { tcpOnly: true });
    const selected = client.pc.iceTransports[0]!.connection.nominated!;
    const sockets = (selected.protocol as unknown as { sockets: Map<string, { socket: net.Socket }> })
      .sockets;
    expect(sockets.size).toBe(1);
    for (const { socket } of sockets.values()) socket.destroy();
    await call.closed;
    await waitFor(() => relay.calls.size === 0, 5000, "call ended");
    // werift fails ICE when the selected TCP connection closes (RFC 6544), at once, not after
    // consent freshness runs out.
    expect(call.endReason).toBe("ice_failed");
    expect(relay.tcpMux!.stats).toMatchObject({ connections: 0, ufrags: 0 });
  });
});

describe("without RELAY_TCP_PORT", () => {
  const relay = useRelay({ bridgeFactory: RecordingBridge.factory });

  it("answers with no TCP candidate and listens on no TCP port", async () => {
    const client = relay.track(new TestPeer());
    expect((await client.call(relay.url)).status).toBe(201);
    expect(client.answerSdp).not.toMatch(/ tcp /);
    expect(relay.tcpFront).toBeUndefined();
  });
});
