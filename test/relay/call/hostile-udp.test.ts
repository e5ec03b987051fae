// The relay's UDP port under attack from raw sockets on loopback, while a real werift client
// holds a call: forged STUN gets no answer and no candidate, DTLS/SRTP from another address is
// dropped without harm, plaintext DTLS spoofed from the client's own address after the handshake
// is ignored, and SRTP and SRTCP captured from the call and replayed from the call's own address
// are refused by the replay windows.
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { RtcpRrPacket, parseMessage } from "werift";
import { afterEach, describe, expect, it } from "vitest";
import type { Call } from "../../../relay/call/call.ts";
import { RecordingBridge, connectRecorded } from "../fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { dominantFrequency, rms, sine } from "../../support/audio.ts";
import { TestPeer } from "../../support/peer.ts";
import { useRelay } from "../../support/relays.ts";
import { closeRawSockets, rawSocket, sendUdp } from "../../support/udp.ts";
import { forgeries, request, type Forgery } from "../../support/stun-forgery.ts";

const relay = useRelay({ bridgeFactory: RecordingBridge.factory });
afterEach(() => {
  closeRawSockets();
});

interface Connected {
  client: TestPeer;
  call: Call;
  bridge: RecordingBridge;
  relayPort: number;
  relayUfrag: string;
  relayPwd: string;
  clientUfrag: string;
  clientPwd: string;
}

async function connect(): Promise<Connected> {
  const { client, call, bridge } = await connectRecorded(relay);
  await client.channelOpen();
  const offer = client.pc.localDescription!.sdp;
  return {
    client,
    call,
    bridge,
    relayPort: Number(/^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host/m.exec(client.answerSdp)![1]),
    relayUfrag: /^a=ice-ufrag:(\S+)/m.exec(client.answerSdp)![1]!,
    relayPwd: /^a=ice-pwd:(\S+)/m.exec(client.answerSdp)![1]!,
    clientUfrag: /^a=ice-ufrag:(\S+)/m.exec(offer)![1]!,
    clientPwd: /^a=ice-pwd:(\S+)/m.exec(offer)![1]!,
  };
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("forged STUN binding requests", () => {
  it("get no answer and create no remote candidate, while the real client's call carries on", async () => {
    const c = await connect();
    const before = c.call.udpGuard.remoteCandidates;
    expect(before).toBeGreaterThan(0);
    const attacker = await rawSocket();
    const cases = forgeries(c);
    for (const f of cases) for (let i = 0; i < 3; i++) await sendUdp(attacker.socket, f.bytes, c.relayPort);
    await settle(400);
    // Name what answered, if anything did.
    expect(attacker.received.map((r) => parseMessage(r)?.messageClass)).toEqual([]);
    expect(c.call.udpGuard.remoteCandidates).toBe(before);

    // The call is unharmed: data channel both ways.
    c.client.channel.send('{"type":"after.forgery"}');
    await waitFor(() => c.bridge.messages.includes('{"type":"after.forgery"}'), 5000, "message at bridge");
    expect(c.call.state).toBe("connected");

    // Control: the same socket with the relay's real credentials is answered, and is now a
    // (peer-reflexive) candidate. This is what the forgeries lacked.
    const valid = request({ username: `${c.relayUfrag}:${c.clientUfrag}`, key: c.relayPwd });
    await sendUdp(attacker.socket, valid, c.relayPort);
    const key = Buffer.from(c.relayPwd, "utf8");
    const isAnswer = (r: Buffer) => parseMessage(r, key)?.messageClass === 0x100;
    // The relay answers, then (triggered check) sends its own requests to the new candidate.
    await waitFor(() => attacker.received.some(isAnswer), 2000, "answer to the authenticated request");
    const answer = parseMessage(attacker.received.find(isAnswer)!, key); // integrity verified
    expect(answer?.getAttributeValue("XOR-MAPPED-ADDRESS")).toEqual(["127.0.0.1", attacker.port]);
    expect(c.call.udpGuard.remoteCandidates).toBe(before + 1);
    console.info(`[figures] STUN: ${cases.length} forgery kinds × 3 sent, 0 answered, 0 candidates created`);
  });

  it("sent before the client connects, don't stop the client from connecting", async () => {
    const client = new TestPeer();
    relay.track(client);
    expect((await client.call(relay.url)).status).toBe(201);
    const relayPort = Number(/ 127\.0\.0\.1 (\d+) typ host/.exec(client.answerSdp)![1]);
    const relayUfrag = /^a=ice-ufrag:(\S+)/m.exec(client.answerSdp)![1]!;
    const attacker = await rawSocket();
    for (let i = 0; i < 20; i++) {
      await sendUdp(
        attacker.socket,
        request({ username: `${relayUfrag}:evil`, key: "guess", useCandidate: true }),
        relayPort,
      );
    }
    await client.connected();
    await client.channelOpen();
    expect(attacker.received).toEqual([]);
    const call = relay.calls.get(client.callId)!;
    await waitFor(() => call.state === "connected", 5000, "relay connected");
    // Only the client's own address(es): nothing from the attacker's port.
    const pc = (call as unknown as { udpGuard: { remoteCandidates: number } }).udpGuard;
    expect(pc.remoteCandidates).toBeLessThanOrEqual(2);
  });
});

/** A DTLS 1.2 record: content type, version fefd, epoch, 48-bit sequence, body. */
function dtlsRecord(type: number, epoch: number, body: Buffer, sequence = 7): Buffer {
  const header = Buffer.alloc(13);
  header[0] = type;
  header.writeUInt16BE(0xfefd, 1);
  header.writeUInt16BE(epoch, 3);
  header.writeUIntBE(sequence, 5, 6);
  header.writeUInt16BE(body.length, 11);
  return Buffer.concat([header, body]);
}

function foreignPackets(): Forgery[] {
  const rtp = (pt: number) => {
    const b = Buffer.alloc(172, 0x5a);
    b[0] = 0x80;
    b[1] = pt;
    return b;
  };
  return [
    { name: "DTLS fatal alert (epoch 0)", bytes: dtlsRecord(21, 0, Buffer.from([2, 40])) },
    { name: "DTLS close_notify (epoch 0)", bytes: dtlsRecord(21, 0, Buffer.from([1, 0])) },
    { name: "DTLS alert (epoch 1, garbage ciphertext)", bytes: dtlsRecord(21, 1, Buffer.alloc(26, 0xab)) },
    { name: "DTLS application data (garbage)", bytes: dtlsRecord(23, 1, Buffer.alloc(64, 0xcd)) },
    { name: "DTLS ClientHello fragment (renegotiation)", bytes: dtlsRecord(22, 0, Buffer.alloc(40, 1)) },
    { name: "DTLS record with a lying length", bytes: dtlsRecord(22, 0, Buffer.alloc(4)).fill(0xff, 11, 13) },
    { name: "SRTP-looking, Opus PT", bytes: rtp(111) },
    { name: "SRTP-looking, marker + PT 0", bytes: rtp(0x80) },
    { name: "SRTCP-looking (SR)", bytes: rtp(200) },
    { name: "SRTCP-looking (BYE)", bytes: rtp(203) },
  ];
}

describe("DTLS and SRTP from an address other than the selected pair", () => {
  it("are dropped: the data channel and audio keep working and the call stays connected", async () => {
    const c = await connect();
    const attacker = await rawSocket();
    const cases = foreignPackets();
    const foreignBefore = c.call.udpGuard.foreignPackets;
    for (const f of cases) for (let i = 0; i < 5; i++) await sendUdp(attacker.socket, f.bytes, c.relayPort);
    await waitFor(
      () => c.call.udpGuard.foreignPackets - foreignBefore === cases.length * 5,
      2000,
      "every foreign packet counted as dropped",
    );
    expect(attacker.received).toEqual([]);

    // DTLS is intact: messages both ways, on both ends.
    expect(c.client.pc.dtlsTransports[0]!.state).toBe("connected");
    c.client.channel.send('{"type":"still.here"}');
    await waitFor(() => c.bridge.messages.includes('{"type":"still.here"}'), 5000, "client → relay");
    c.bridge.ctx.events.send('{"type":"relay.here"}');
    await waitFor(() => c.client.messages.includes('{"type":"relay.here"}'), 5000, "relay → client");

    // SRTP is intact: a 440 Hz tone sent after the attack arrives as a 440 Hz tone.
    const framesBefore = c.bridge.frames.length;
    await c.client.sendPackets(c.client.encodeFrames(sine(440, 600)));
    await waitFor(() => c.bridge.frames.length - framesBefore >= 25, 5000, "uplink audio");
    const heard = RecordingBridgePcm(c.bridge, framesBefore + 5);
    expect(Math.abs(dominantFrequency(heard) - 440)).toBeLessThanOrEqual(10);
    expect(rms(heard)).toBeGreaterThan(3000);
    expect(c.call.state).toBe("connected");
    console.info(`[figures] foreign DTLS/SRTP: ${cases.length} kinds × 5 sent, ${cases.length * 5} dropped`);
  });
});

/** A DTLS 1.2 ClientHello (cookie-less, one suite, no extensions) with a fresh random. */
function clientHello(): Buffer {
  const body = Buffer.concat([
    Buffer.from([0xfe, 0xfd]),
    randomBytes(32),
    Buffer.from([0, 0]), // session id, cookie: empty
    Buffer.from([0, 2, 0xc0, 0x2b]), // TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    Buffer.from([1, 0]), // compression: null
    Buffer.from([0, 0]), // no extensions
  ]);
  const header = Buffer.alloc(12);
  header[0] = 1; // client_hello
  header.writeUIntBE(body.length, 1, 3);
  header.writeUIntBE(body.length, 9, 3); // message_seq 0, fragment_offset 0, whole
  return dtlsRecord(22, 0, Buffer.concat([header, body]));
}

function spoofedRecords(): Forgery[] {
  return [
    { name: "fatal alert (epoch 0)", bytes: dtlsRecord(21, 0, Buffer.from([2, 40])) },
    { name: "close_notify (epoch 0)", bytes: dtlsRecord(21, 0, Buffer.from([1, 0])) },
    { name: "ClientHello with a new random (epoch 0)", bytes: clientHello() },
    { name: "ChangeCipherSpec (epoch 0)", bytes: dtlsRecord(20, 0, Buffer.from([1])) },
    { name: "unknown content type (epoch 0)", bytes: dtlsRecord(25, 0, Buffer.from([1, 0])) },
  ];
}

/** The client's DTLS session, to send a genuine encrypted record. werift types these loosely. */
interface ClientDtls {
  dtls: { epoch: number; version: { major: number; minor: number }; recordSequenceNumber: number };
  cipher: {
    encryptPacket(pkt: { recordLayerHeader: Record<string, unknown>; fragment: Buffer }): {
      fragment: Buffer;
    };
  };
}

describe("plaintext DTLS spoofed from the client's own address after the handshake", () => {
  it("is ignored: the call stays connected, data and audio keep flowing", async () => {
    const c = await connect();
    // The client's own socket, to the relay's address: the selected pair, as a spoofer would.
    const connection = c.client.pc.iceTransports[0]!.connection;
    const cases = spoofedRecords();
    for (const f of cases) for (let i = 0; i < 3; i++) await connection.send(f.bytes);
    await waitFor(
      () => c.call.udpGuard.plaintextDtlsRecords === cases.length * 3,
      2000,
      "every plaintext record counted as ignored",
    );

    // A record under epoch 1 that isn't encrypted (a bare close_notify) fails to decrypt.
    for (let i = 0; i < 3; i++) await connection.send(dtlsRecord(21, 1, Buffer.from([1, 0]), 1000 + i));
    for (let i = 0; i < 3; i++) await connection.send(dtlsRecord(25, 1, Buffer.from([1, 0]), 1100 + i));
    await settle(300);

    expect(c.call.state).toBe("connected");
    expect(c.client.pc.dtlsTransports[0]!.state).toBe("connected");
    c.client.channel.send('{"type":"after.spoof"}');
    await waitFor(() => c.bridge.messages.includes('{"type":"after.spoof"}'), 5000, "client → relay");
    c.bridge.ctx.events.send('{"type":"relay.after.spoof"}');
    await waitFor(() => c.client.messages.includes('{"type":"relay.after.spoof"}'), 5000, "relay → client");
    const framesBefore = c.bridge.frames.length;
    await c.client.sendPackets(c.client.encodeFrames(sine(440, 600)));
    await waitFor(() => c.bridge.frames.length - framesBefore >= 25, 5000, "uplink audio");
    const heard = RecordingBridgePcm(c.bridge, framesBefore + 5);
    expect(Math.abs(dominantFrequency(heard) - 440)).toBeLessThanOrEqual(10);
    expect(c.call.state).toBe("connected");
    console.info(`[figures] spoofed plaintext DTLS: ${cases.length} kinds × 3 sent, all ignored`);
  });

  it("a genuine encrypted close_notify from the client still ends the call (client_hangup)", async () => {
    const c = await connect();
    const socket = c.client.pc.dtlsTransports[0]!.dtls as unknown as ClientDtls;
    const sequence = ++socket.dtls.recordSequenceNumber;
    const header = {
      contentType: 21,
      protocolVersion: socket.dtls.version,
      epoch: socket.dtls.epoch,
      sequenceNumber: sequence,
      contentLen: 2,
    };
    expect(header.epoch).toBe(1);
    const encrypted = socket.cipher.encryptPacket({
      recordLayerHeader: header,
      fragment: Buffer.from([1, 0]),
    });
    await c.client.pc.iceTransports[0]!.connection.send(
      dtlsRecord(21, header.epoch, encrypted.fragment, sequence),
    );
    await waitFor(() => c.call.state === "ended", 5000, "call ended");
    expect(c.call.endReason).toBe("client_hangup");
    expect(c.call.udpGuard.plaintextDtlsRecords).toBe(0);
  });

  it("closing the client's PeerConnection still ends the call (client_hangup)", async () => {
    const c = await connect();
    await c.client.close();
    await waitFor(() => c.call.state === "ended", 5000, "call ended");
    expect(c.call.endReason).toBe("client_hangup");
  });
});

function RecordingBridgePcm(bridge: RecordingBridge, fromFrame: number): Int16Array {
  const frames = bridge.frames.slice(fromFrame);
  const out = new Int16Array(frames.length * 480);
  frames.forEach((f, i) => out.set(f, i * 480));
  return out;
}

describe("SRTP replayed from the call's own address", () => {
  it("is refused by the replay window: no packet reaches the uplink twice", async () => {
    const c = await connect();
    const connection = c.client.pc.iceTransports[0]!.connection;
    const captured: Buffer[] = [];
    const original = connection.send.bind(connection);
    connection.send = async (data: Buffer) => {
      // SRTP, not SRTCP (RFC 5761: RTCP packet types 192–223 in the second byte).
      if (data.length > 12 && data[0]! >> 6 === 2 && !(data[1]! >= 192 && data[1]! <= 223)) {
        captured.push(Buffer.from(data));
      }
      return original(data);
    };
    const uplink = c.call.uplinkStats!;
    await c.client.sendPackets(c.client.encodeFrames(sine(440, 2000)));
    expect(captured.length).toBe(100);
    await waitFor(() => uplink.packets === 100, 5000, "100 packets at the uplink");
    const frames = c.bridge.frames.length;
    const replayedBefore = c.call.udpGuard.replayedSrtp;

    // Replay everything: the first 36 are older than the 64-packet window, the last 64 are in it.
    const start = performance.now();
    for (const packet of captured) await original(packet);
    await waitFor(() => c.call.udpGuard.replayedSrtp - replayedBefore === 100, 3000, "100 replays refused");
    await settle(200);
    expect(uplink.packets).toBe(100);
    expect(c.bridge.frames.length).toBe(frames);
    expect(performance.now() - start).toBeLessThan(3000);

    // Fresh packets after the replay still flow.
    await c.client.sendPackets(c.client.encodeFrames(sine(440, 200)));
    await waitFor(() => uplink.packets === 110, 3000, "fresh packets after the replay");
    console.info("[figures] SRTP replay: 100 captured packets resent, 100 refused, 0 reached the uplink");
  });
});

describe("SRTCP replayed from the call's own address", () => {
  it("is refused by the replay window; fresh SRTCP still gets through", async () => {
    const c = await connect();
    const connection = c.client.pc.iceTransports[0]!.connection;
    const dtls = c.client.pc.dtlsTransports[0]!;
    const captured: Buffer[] = [];
    const original = connection.send.bind(connection);
    connection.send = async (data: Buffer) => {
      // SRTCP (RFC 5761: RTCP packet types 192–223 in the second byte).
      if (data.length > 12 && data[0]! >> 6 === 2 && data[1]! >= 192 && data[1]! <= 223) {
        captured.push(Buffer.from(data));
      }
      return original(data);
    };
    const ssrc = c.client.transceiver.sender.ssrc;
    for (let i = 0; i < 100; i++) await dtls.sendRtcp([new RtcpRrPacket({ ssrc, reports: [] })]);
    expect(captured.length).toBeGreaterThanOrEqual(100); // and any report werift sent on its own
    await settle(200);
    expect(c.call.udpGuard.replayedSrtcp).toBe(0);

    // Replay all of it: the oldest are older than the 64-packet window, the rest are in it.
    const replayed = captured.splice(0);
    for (const packet of replayed) await original(packet);
    await waitFor(
      () => c.call.udpGuard.replayedSrtcp === replayed.length,
      3000,
      `${replayed.length} SRTCP replays refused`,
    );

    // Fresh SRTCP after the replay is accepted (the window refuses nothing new).
    for (let i = 0; i < 5; i++) await dtls.sendRtcp([new RtcpRrPacket({ ssrc, reports: [] })]);
    await settle(200);
    expect(captured.length).toBeGreaterThanOrEqual(5);
    expect(c.call.udpGuard.replayedSrtcp).toBe(replayed.length);
    expect(c.call.state).toBe("connected");
    console.info(`[figures] SRTCP replay: ${replayed.length} captured packets resent, all refused`);
  });
});
