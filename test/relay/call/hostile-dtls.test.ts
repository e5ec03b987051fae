// The DTLS handshake proves key possession, not only the certificate fingerprint. A peer that
// presents a certificate whose fingerprint matches the SDP but doesn't hold its private key
// (a replayed public certificate) is refused, on the relay's side (server: CertificateVerify)
// and on a werift client's side (ServerKeyExchange); so is a Finished that doesn't match.
import { CipherContext, RTCPeerConnection, type PeerConfig } from "werift";
import { describe, expect, it } from "vitest";
import { RecordingBridge } from "../fixtures.ts";
import { waitFor, withTimeout } from "../../support/loopback.ts";
import { TestPeer } from "../../support/peer.ts";
import { useRelay } from "../../support/relays.ts";

const relay = useRelay({ bridgeFactory: RecordingBridge.factory });

type DtlsKeys = NonNullable<PeerConfig["dtls"]["keys"]>;
const ECDSA_SHA256 = { signature: 3, hash: 4 } as const;
const P256 = 23;

async function keyPair(): Promise<DtlsKeys> {
  return (await CipherContext.createSelfSignedCertificateWithKey(ECDSA_SHA256, P256)) as DtlsKeys;
}

/** A certificate paired with someone else's private key: what an attacker who copied it has. */
async function stolenCertificate(): Promise<DtlsKeys> {
  const victim = await keyPair();
  const attacker = await keyPair();
  return { ...victim, keyPem: attacker.keyPem };
}

/** TestPeer with its DTLS identity replaced. */
class KeyedClient extends TestPeer {
  constructor(keys: DtlsKeys) {
    super();
    // werift reads `dtls.keys` in its constructor, which TestPeer has run; set the identity
    // the same way before the first offer creates the DTLS transport.
    (
      this.pc as unknown as { secureManager: { setupCertificate(k: DtlsKeys): void } }
    ).secureManager.setupCertificate(keys);
  }
}

function callOf(client: TestPeer) {
  return relay.calls.get(client.callId);
}

describe("the relay as DTLS server", () => {
  it("connects a client whose certificate and key match (control)", async () => {
    const keys = await keyPair();
    const client = new KeyedClient(keys);
    relay.track(client);
    expect((await client.call(relay.url)).status).toBe(201);
    await client.connected();
    await client.channelOpen();
    expect(client.pc.dtlsTransports[0]!.localCertificate?.certPem).toBe(keys.certPem);
  });

  it("refuses a client that presents a certificate without its private key (CertificateVerify)", async () => {
    const client = new KeyedClient(await stolenCertificate());
    relay.track(client);
    expect((await client.call(relay.url)).status).toBe(201);
    const call = callOf(client)!;
    await waitFor(() => call.state === "ended", 10_000, "the relay to end the call");
    expect(call.endReason).toBe("dtls_failed");
    expect(call.connectedAt).toBeUndefined();
    const bridge = RecordingBridge.instances.find((b) => b.ctx.callId === client.callId)!;
    expect(bridge.channelOpened).toBe(false);
    expect(client.channel.readyState).not.toBe("open");
  });

  it("refuses a client whose Finished does not match the handshake", async () => {
    const client = new TestPeer();
    relay.track(client);
    // Corrupt the Finished that werift *clients* compute; the relay (server) computes its own
    // and checks the client's with the PRF directly, so only the client's message is wrong.
    const proto = CipherContext.prototype as unknown as {
      sessionType: number;
      verifyData(buf: Buffer): Buffer;
    };
    const original = proto.verifyData;
    proto.verifyData = function (this: { sessionType: number }, buf: Buffer) {
      const data = original.call(this, buf);
      return this.sessionType === 1 ? Buffer.alloc(data.length, 0x42) : data;
    };
    try {
      expect((await client.call(relay.url)).status).toBe(201);
      const call = callOf(client)!;
      await waitFor(() => call.state === "ended", 10_000, "the relay to end the call");
      expect(call.endReason).toBe("dtls_failed");
      expect(call.connectedAt).toBeUndefined();
    } finally {
      proto.verifyData = original;
    }
  });
});

describe("a werift peer as DTLS client", () => {
  it("refuses a server that presents a certificate without its private key (ServerKeyExchange)", async () => {
    const net = {
      iceServers: [],
      iceUseIpv6: false,
      iceInterfaceAddresses: { udp4: "127.0.0.1" },
      iceAdditionalHostAddresses: ["127.0.0.1"],
    };
    const server = new RTCPeerConnection({ ...net, dtls: { keys: await stolenCertificate() } });
    const client = new RTCPeerConnection(net);
    relay.track(server, client);
    client.createDataChannel("x");
    await client.setLocalDescription(await client.createOffer());
    await server.setRemoteDescription(client.localDescription!);
    for (const t of server.dtlsTransports) t.role = "server";
    await server.setLocalDescription(await server.createAnswer());
    const clientDtls = new Promise<string>((resolve) =>
      client.dtlsTransports[0]!.onStateChange.subscribe((s) => {
        if (s === "failed" || s === "connected") resolve(s);
      }),
    );
    await client.setRemoteDescription(server.localDescription!);
    expect(await withTimeout(clientDtls, 10_000, "client DTLS outcome")).toBe("failed");
    expect(server.connectionState).not.toBe("connected");
  });
});
