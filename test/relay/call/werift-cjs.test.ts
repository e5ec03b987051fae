// The CommonJS build of werift (what `require("werift")` loads: lib/webrtc/src/index.js and the
// per-file tsc output under lib/, not the ESM bundle the relay imports) carries the security
// fixes of patches/werift+0.25.2+*.patch too. CJS werift peers and raw UDP sockets on loopback:
// forged STUN gets no answer, DTLS from another address is dropped, plaintext DTLS after the
// handshake is ignored, a certificate without its key is refused, replayed SRTP and SRTCP are
// refused and remote candidates are capped.
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { afterEach, describe, expect, it } from "vitest";
import type * as Werift from "werift";
import { Message as EsmMessage } from "werift";
import { waitFor, withTimeout } from "../../support/loopback.ts";
import { closeRawSockets, rawSocket, sendUdp } from "../../support/udp.ts";

const require = createRequire(import.meta.url);
const werift = require("werift") as typeof Werift;

/** Fields and exports the patches add to the CJS build; werift's typings don't have them. */
interface PatchedConnection {
  droppedRemoteCandidates?: number;
  droppedDataPackets?: number;
}
interface PatchedSrtpContext {
  replayedPackets?: number;
}
const patchedExports = werift as unknown as { SrtpReplayError?: new (message: string) => Error };

const LOOPBACK = {
  iceServers: [],
  iceUseIpv6: false,
  iceInterfaceAddresses: { udp4: "127.0.0.1" },
  iceAdditionalHostAddresses: ["127.0.0.1"],
} satisfies Partial<Werift.PeerConfig>;

const peers: Werift.RTCPeerConnection[] = [];

afterEach(async () => {
  closeRawSockets();
  await Promise.all(peers.splice(0).map((p) => p.close()));
});

function peer(config: Partial<Werift.PeerConfig> = {}): Werift.RTCPeerConnection {
  const pc = new werift.RTCPeerConnection({ ...LOOPBACK, ...config });
  peers.push(pc);
  return pc;
}

function sdpField(sdp: string, pattern: RegExp): string {
  const match = pattern.exec(sdp);
  if (!match?.[1]) throw new Error(`no ${String(pattern)} in the SDP`);
  return match[1];
}

const hostPort = (sdp: string) => Number(sdpField(sdp, / 127\.0\.0\.1 (\d+) typ host/));

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Pair {
  offerer: Werift.RTCPeerConnection;
  answerer: Werift.RTCPeerConnection;
  channel: Werift.RTCDataChannel;
  /** Messages the answerer received on the data channel. */
  received: string[];
}

/** Two CJS peers, offer/answer applied; the offerer opens a data channel. */
async function pair(
  offererConfig: Partial<Werift.PeerConfig> = {},
  answererConfig: Partial<Werift.PeerConfig> = {},
  answererRole?: "server" | "client",
): Promise<Pair> {
  const offerer = peer(offererConfig);
  const answerer = peer(answererConfig);
  const channel = offerer.createDataChannel("probe");
  const received: string[] = [];
  answerer.onDataChannel.subscribe((ch) => ch.onMessage.subscribe((m) => received.push(String(m))));
  await offerer.setLocalDescription(await offerer.createOffer());
  await answerer.setRemoteDescription(offerer.localDescription!);
  if (answererRole) for (const t of answerer.dtlsTransports) t.role = answererRole;
  await answerer.setLocalDescription(await answerer.createAnswer());
  await offerer.setRemoteDescription(answerer.localDescription!);
  return { offerer, answerer, channel, received };
}

function channelOpen(channel: Werift.RTCDataChannel): Promise<void> {
  if (channel.readyState === "open") return Promise.resolve();
  return withTimeout(
    new Promise<void>((resolve) => channel.stateChanged.subscribe((s) => s === "open" && resolve())),
    10_000,
    "data channel open",
  );
}

/** The first of "connected" or "failed" that the DTLS transport reaches. */
function dtlsOutcome(pc: Werift.RTCPeerConnection): Promise<string> {
  const transport = pc.dtlsTransports[0]!;
  if (transport.state === "connected" || transport.state === "failed")
    return Promise.resolve(transport.state);
  return withTimeout(
    new Promise<string>((resolve) =>
      transport.onStateChange.subscribe((s) => (s === "connected" || s === "failed") && resolve(s)),
    ),
    10_000,
    "DTLS outcome",
  );
}

it("require('werift') is the CommonJS build, not the ESM bundle", () => {
  expect(require.resolve("werift")).toMatch(/node_modules\/werift\/lib\/webrtc\/src\/index\.js$/);
  expect(werift.Message).not.toBe(EsmMessage);
});

it("a CJS peer bound to 127.0.0.1 offers one candidate, on 127.0.0.1 (no LAN address)", async () => {
  const pc = peer();
  pc.createDataChannel("probe");
  await pc.setLocalDescription(await pc.createOffer());
  const candidates = pc.localDescription!.sdp.match(/^a=candidate:\S+ \d+ udp \d+ \S+/gm) ?? [];
  expect(candidates.map((c) => c.split(" ").at(-1))).toEqual(["127.0.0.1"]);
});

describe("STUN Binding requests to a CJS peer's host candidate", () => {
  const BINDING = 0x001;
  const REQUEST = 0x000;
  const SUCCESS = 0x100;

  function binding(username?: string, password?: string): Buffer {
    const m = new werift.Message(BINDING, REQUEST);
    if (username !== undefined) m.setAttribute("USERNAME", username);
    m.setAttribute("PRIORITY", 1_853_766_911);
    // The peer made the offer, so it is controlling; a controlled peer's check (no role conflict).
    m.setAttribute("ICE-CONTROLLED", 0x1234_5678_9abc_def0n);
    if (password !== undefined) m.addMessageIntegrity(Buffer.from(password, "utf8"));
    m.addFingerprint();
    return Buffer.from(m.bytes);
  }

  it("are answered only with the peer's ICE credentials: forgeries get nothing back", async () => {
    const pc = peer();
    pc.createDataChannel("probe");
    await pc.setLocalDescription(await pc.createOffer());
    const sdp = pc.localDescription!.sdp;
    const port = hostPort(sdp);
    const ufrag = sdpField(sdp, /^a=ice-ufrag:(\S+)/m);
    const pwd = sdpField(sdp, /^a=ice-pwd:(\S+)/m);
    const username = `${ufrag}:remote`;
    const forgeries = [
      binding(),
      binding(username),
      binding(username, "x".repeat(22)),
      binding(`zzzz:remote`, pwd),
      binding(`remote:${ufrag}`, pwd),
      binding(username, ""),
    ];
    const attacker = await rawSocket();
    for (const bytes of forgeries) for (let i = 0; i < 3; i++) await sendUdp(attacker.socket, bytes, port);
    await settle(400);
    expect(attacker.received.map((r) => werift.parseMessage(r)?.messageClass)).toEqual([]);

    // Control: the same socket, signed with the peer's password, is answered (integrity verified).
    await sendUdp(attacker.socket, binding(username, pwd), port);
    const key = Buffer.from(pwd, "utf8");
    const isAnswer = (r: Buffer) => werift.parseMessage(r, key)?.messageClass === SUCCESS;
    await waitFor(() => attacker.received.some(isAnswer), 2000, "answer to the signed request");
    const answer = werift.parseMessage(attacker.received.find(isAnswer)!, key);
    expect(answer?.getAttributeValue("XOR-MAPPED-ADDRESS")).toEqual(["127.0.0.1", attacker.port]);
  });
});

describe("DTLS from an address other than the selected pair", () => {
  it("is dropped: a forged fatal alert leaves the CJS peers' DTLS and data channel working", async () => {
    const { offerer, answerer, channel, received } = await pair();
    await channelOpen(channel);
    const connection = answerer.iceTransports[0]!.connection as unknown as PatchedConnection;
    const before = connection.droppedDataPackets ?? 0;

    // DTLS 1.2 alert records (epoch 0, sequence 7): fatal handshake_failure, close_notify.
    const alert = (level: number, description: number) =>
      Buffer.from([21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 7, 0, 2, level, description]);
    const attacker = await rawSocket();
    const port = hostPort(answerer.localDescription!.sdp);
    for (let i = 0; i < 5; i++) {
      await sendUdp(attacker.socket, alert(2, 40), port);
      await sendUdp(attacker.socket, alert(1, 0), port);
    }
    await settle(300);
    expect(answerer.dtlsTransports[0]!.state).toBe("connected");
    expect(offerer.dtlsTransports[0]!.state).toBe("connected");
    channel.send("after the alerts");
    await waitFor(() => received.includes("after the alerts"), 5000, "a message after the alerts");
    expect(connection.droppedDataPackets! - before).toBe(10);
  });
});

describe("plaintext DTLS from the selected pair's own address, after the CJS peers' handshake", () => {
  /** A DTLS 1.2 record: content type, version fefd, epoch, 48-bit sequence, body. */
  const record = (type: number, epoch: number, body: Buffer, sequence = 7) => {
    const header = Buffer.alloc(13);
    header[0] = type;
    header.writeUInt16BE(0xfefd, 1);
    header.writeUInt16BE(epoch, 3);
    header.writeUIntBE(sequence, 5, 6);
    header.writeUInt16BE(body.length, 11);
    return Buffer.concat([header, body]);
  };
  /** A cookie-less ClientHello with a fresh random: one suite, no extensions. */
  const clientHello = () => {
    const body = Buffer.concat([
      Buffer.from([0xfe, 0xfd]),
      randomBytes(32),
      Buffer.from([0, 0, 0, 2, 0xc0, 0x2b, 1, 0, 0, 0]),
    ]);
    const header = Buffer.alloc(12);
    header[0] = 1;
    header.writeUIntBE(body.length, 1, 3);
    header.writeUIntBE(body.length, 9, 3);
    return record(22, 0, Buffer.concat([header, body]));
  };
  interface PatchedDtlsSocket {
    ignoredPlaintextRecords?: number;
    dtls: { epoch: number; version: { major: number; minor: number }; recordSequenceNumber: number };
    cipher: {
      encryptPacket(pkt: { recordLayerHeader: Record<string, unknown>; fragment: Buffer }): {
        fragment: Buffer;
      };
    };
  }

  it("is ignored and counted; the DTLS transport and data channel keep working", async () => {
    const { offerer, answerer, channel, received } = await pair();
    await channelOpen(channel);
    // The offerer's own socket, to the answerer: what a spoofer of the selected pair sends.
    const connection = offerer.iceTransports[0]!.connection;
    const spoofed = [
      record(21, 0, Buffer.from([2, 40])), // fatal alert
      record(21, 0, Buffer.from([1, 0])), // close_notify
      clientHello(),
      record(20, 0, Buffer.from([1])), // ChangeCipherSpec
      record(25, 0, Buffer.from([1, 0])), // unknown content type
    ];
    for (const bytes of spoofed) for (let i = 0; i < 3; i++) await connection.send(bytes);
    // Under epoch 1 but not encrypted: fails to decrypt, so it is no close_notify either.
    await connection.send(record(21, 1, Buffer.from([1, 0]), 1000));
    await connection.send(record(25, 1, Buffer.from([1, 0]), 1001));
    await settle(300);
    const socket = answerer.dtlsTransports[0]!.dtls as unknown as PatchedDtlsSocket;
    expect(socket.ignoredPlaintextRecords).toBe(spoofed.length * 3);
    expect(answerer.dtlsTransports[0]!.state).toBe("connected");
    channel.send("after the spoofed records");
    await waitFor(() => received.includes("after the spoofed records"), 5000, "a message after them");
  });

  it("a genuine encrypted close_notify still closes the DTLS transport", async () => {
    const { offerer, answerer, channel } = await pair();
    await channelOpen(channel);
    const socket = offerer.dtlsTransports[0]!.dtls as unknown as PatchedDtlsSocket;
    const sequence = ++socket.dtls.recordSequenceNumber;
    const header = {
      contentType: 21,
      protocolVersion: socket.dtls.version,
      epoch: socket.dtls.epoch,
      sequenceNumber: sequence,
      contentLen: 2,
    };
    const { fragment } = socket.cipher.encryptPacket({
      recordLayerHeader: header,
      fragment: Buffer.from([1, 0]),
    });
    await offerer.iceTransports[0]!.connection.send(record(21, header.epoch, fragment, sequence));
    const transport = answerer.dtlsTransports[0]!;
    await waitFor(() => transport.state === "closed", 5000, "answerer DTLS closed");
  });
});

describe("the DTLS handshake of CJS peers", () => {
  type DtlsKeys = NonNullable<Werift.PeerConfig["dtls"]["keys"]>;
  const ECDSA_SHA256 = { signature: 3, hash: 4 } as const;
  const P256 = 23;
  const keyPair = async () =>
    (await werift.CipherContext.createSelfSignedCertificateWithKey(ECDSA_SHA256, P256)) as DtlsKeys;
  /** A certificate paired with someone else's private key: what an attacker who copied it has. */
  const stolenCertificate = async (): Promise<DtlsKeys> => ({
    ...(await keyPair()),
    keyPem: (await keyPair()).keyPem,
  });

  it("connects peers whose certificates and keys match (control)", async () => {
    const { offerer, answerer } = await pair({ dtls: { keys: await keyPair() } }, {}, "server");
    expect(await dtlsOutcome(answerer)).toBe("connected");
    expect(await dtlsOutcome(offerer)).toBe("connected");
  });

  it("refuses a server that presents a certificate without its private key (ServerKeyExchange)", async () => {
    const { offerer } = await pair({}, { dtls: { keys: await stolenCertificate() } }, "server");
    expect(await dtlsOutcome(offerer)).toBe("failed");
  });

  it("refuses a client that presents a certificate without its private key (CertificateVerify)", async () => {
    const { answerer } = await pair({ dtls: { keys: await stolenCertificate() } }, {}, "server");
    expect(await dtlsOutcome(answerer)).toBe("failed");
  });
});

/** Both protection profiles a relay negotiates. */
const SRTP_PROFILES = [
  ["AES_CM_128_HMAC_SHA1_80", werift.ProtectionProfileAes128CmHmacSha1_80],
  ["AEAD_AES_128_GCM", werift.ProtectionProfileAeadAes128Gcm],
] as const;

/** A sender and a receiver session (SRTP or SRTCP) with fresh keys, each the other's remote. */
function sessionPair<S>(
  Session: new (config: {
    keys: {
      localMasterKey: Buffer;
      localMasterSalt: Buffer;
      remoteMasterKey: Buffer;
      remoteMasterSalt: Buffer;
    };
    profile: number;
  }) => S,
  profile: number,
): [S, S] {
  const a = { key: randomBytes(16), salt: randomBytes(12) };
  const b = { key: randomBytes(16), salt: randomBytes(12) };
  const session = (local: typeof a, remote: typeof a) =>
    new Session({
      keys: {
        localMasterKey: local.key,
        localMasterSalt: local.salt,
        remoteMasterKey: remote.key,
        remoteMasterSalt: remote.salt,
      },
      profile,
    });
  return [session(a, b), session(b, a)];
}

/** What decrypting `packet` throws, or undefined when it is accepted. */
function refusalOf(decrypt: (packet: Buffer) => unknown): (packet: Buffer) => Error | undefined {
  return (packet) => {
    try {
      decrypt(packet);
      return undefined;
    } catch (error) {
      return error as Error;
    }
  };
}

/**
 * Every packet once, except #97, which arrives late (still inside the 64-packet window), all
 * accepted; then each of them again. Returns what the replays met: the recent ones are refused by
 * the window, the first 36 as too old.
 */
function deliverThenReplay(refusal: (packet: Buffer) => Error | undefined, packets: Buffer[]) {
  for (const [i, packet] of packets.entries()) if (i !== 97) expect(refusal(packet)).toBeUndefined();
  expect(refusal(packets[97]!)).toBeUndefined();
  return packets.map(refusal);
}

describe("the SRTP replay window of the CJS build", () => {
  it.each(SRTP_PROFILES)(
    "refuses replayed and too-old packets, accepts a late one inside the window (%s)",
    (_, profile) => {
      const [sender, receiver] = sessionPair(werift.SrtpSession, profile);
      const packets = Array.from({ length: 100 }, (_, i) =>
        sender.encrypt(
          Buffer.alloc(40, i),
          new werift.RtpHeader({
            sequenceNumber: 1000 + i,
            timestamp: i * 960,
            payloadType: 111,
            ssrc: 0x1234,
          }),
        ),
      );
      const refusal = refusalOf((packet) => receiver.decrypt(packet));
      const replays = deliverThenReplay(refusal, packets);
      expect(replays.filter((e) => e?.name === "SrtpReplayError")).toHaveLength(100);
      expect(replays[0]).toBeInstanceOf(werift.SrtpAuthenticationError);
      expect(replays[0]).toBeInstanceOf(patchedExports.SrtpReplayError!);
      expect((receiver.remoteContext as PatchedSrtpContext).replayedPackets).toBe(100);

      // The stream carries on after the replays.
      const next = sender.encrypt(
        Buffer.alloc(40, 1),
        new werift.RtpHeader({ sequenceNumber: 1100, timestamp: 100 * 960, payloadType: 111, ssrc: 0x1234 }),
      );
      expect(refusal(next)).toBeUndefined();
    },
  );
});

describe("the SRTCP replay window of the CJS build", () => {
  it.each(SRTP_PROFILES)(
    "refuses replayed and too-old SRTCP, accepts a late packet inside the window (%s)",
    (_, profile) => {
      const [sender, receiver] = sessionPair(werift.SrtcpSession, profile);
      // Receiver reports from SSRC 0x1234, SRTCP index 1 to 100.
      const report = () => new werift.RtcpRrPacket({ ssrc: 0x1234, reports: [] }).serialize();
      const packets = Array.from({ length: 100 }, () => sender.encrypt(report()));
      const refusal = refusalOf((packet) => receiver.decrypt(packet));
      const replays = deliverThenReplay(refusal, packets);
      expect(replays.filter((e) => e?.name === "SrtpReplayError")).toHaveLength(100);
      expect(replays[0]).toBeInstanceOf(werift.SrtpAuthenticationError);
      expect((receiver.remoteContext as PatchedSrtpContext).replayedPackets).toBe(100);

      // A forged packet (index 101, bad tag) is refused by authentication and doesn't move the
      // window: the real packet 101 is accepted after it.
      const next = sender.encrypt(report());
      const forged = Buffer.from(next);
      forged[10] = forged[10]! ^ 0xff;
      expect(refusal(forged)?.name).toBe("SrtpAuthenticationError");
      expect(refusal(next)).toBeUndefined();
      expect(refusal(next)?.name).toBe("SrtpReplayError");
    },
  );
});

describe("remote candidates of a CJS peer", () => {
  it("are capped at iceMaxRemoteCandidates, and .local names are refused when iceResolveMdns is false", async () => {
    const offerer = peer();
    offerer.createDataChannel("probe");
    await offerer.setLocalDescription(await offerer.createOffer());
    const fake = Array.from(
      { length: 10 },
      (_, i) => `a=candidate:fake${i} 1 udp ${1000 + i} 127.0.0.1 ${20000 + i} typ host`,
    );
    const mdns = "a=candidate:mdns 1 udp 2000 0b6f1f6e-2c1b-4e3a-9d5c-0f1d2e3c4b5a.local 20100 typ host";
    const sdp = offerer.localDescription!.sdp.replace(
      /((?:^a=candidate:.*\r\n)+)/m,
      (own) => own + [mdns, ...fake].map((l) => `${l}\r\n`).join(""),
    );
    const offered = (sdp.match(/^a=candidate:/gm) ?? []).length; // the offerer's own, then 11

    const answerer = peer({ iceMaxRemoteCandidates: 4, iceResolveMdns: false });
    await answerer.setRemoteDescription({ type: "offer", sdp });
    const connection = answerer.iceTransports[0]!.connection;
    const patched = connection as unknown as PatchedConnection;
    await waitFor(
      () => connection.remoteCandidates.length + (patched.droppedRemoteCandidates ?? 0) === offered,
      2000,
      "every offered candidate kept or refused",
    );
    expect(connection.remoteCandidates).toHaveLength(4);
    expect(connection.remoteCandidates.some((c) => c.host.endsWith(".local"))).toBe(false);
    expect(patched.droppedRemoteCandidates).toBe(offered - 4);
  });
});
