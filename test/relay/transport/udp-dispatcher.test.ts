// The host's UDP dispatcher on its own, with raw sockets for clients, and a pinned-mode UdpMux
// beside it on the same port (SO_REUSEPORT), as a relay process holds it: which first packets are
// handed off and to whom, that nothing else is, and that a flow the mux has pinned no longer
// reaches the dispatcher (the kernel delivers it to the connected socket), until the call ends.
import { Message, type StunProtocol } from "werift";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { UdpDispatcher } from "../../../relay/transport/udp-dispatcher.ts";
import { UdpMux } from "../../../relay/transport/udp-mux.ts";
import { UfragMint, ufragKey } from "../../../relay/transport/ufrag.ts";
import { waitFor } from "../../support/loopback.ts";
import { TEST_SECRET } from "../../support/relay-api.ts";
import { request } from "../../support/stun-forgery.ts";
import { closeRawSockets, rawSocket, sendUdp } from "../../support/udp.ts";

const key = ufragKey(TEST_SECRET);
/** A STUN Binding success response: what werift sends to a check it authenticated. */
const answer = () => Buffer.from(new Message(0x001, 0x100).bytes);
const handedOff: { owner: number; data: Buffer; port: number }[] = [];
let dispatcher: UdpDispatcher;
beforeAll(async () => {
  dispatcher = await UdpDispatcher.open("127.0.0.1", 0, new UfragMint(key, 0), (owner, data, _host, port) =>
    handedOff.push({ owner, data, port }),
  );
});
afterAll(() => dispatcher.close());
afterEach(() => closeRawSockets());

describe("UdpDispatcher", () => {
  it("hands a Binding request with one of the host's ufrags to the process it names, and drops the rest", async () => {
    const ufrag = new UfragMint(key, 3).mint();
    const client = await rawSocket();
    const before = dispatcher.stats;
    await sendUdp(client.socket, request({ username: `${ufrag}:c`, key: "k" }), dispatcher.port);
    await waitFor(() => handedOff.length === 1, 2000, "the hand-off");
    expect(handedOff[0]).toMatchObject({ owner: 3, port: client.port });
    const flipped = ufrag.slice(0, 15) + (ufrag[15] === "A" ? "B" : "A");
    const drops = [
      Buffer.from("media from nobody"),
      request({ username: `${flipped}:c`, key: "k" }), // the tag fails
      request({ username: `${new UfragMint(ufragKey("another secret"), 3).mint()}:c`, key: "k" }),
      request({ username: `${new UfragMint(key, 0).mint()}:c`, key: "k" }), // process 0: a lone relay's
      request({ username: "abcd:c", key: "k" }),
    ];
    for (const d of drops) await sendUdp(client.socket, d, dispatcher.port);
    await waitFor(() => dispatcher.stats.dropped === before.dropped + drops.length, 2000, "the drops");
    expect(dispatcher.stats.handedOff).toBe(before.handedOff + 1);
    expect(handedOff).toHaveLength(1);
    expect(client.received).toEqual([]);
    handedOff.length = 0;
  });

  it("stops seeing a flow once a pinned mux has answered it, and sees it again after the call ends", async () => {
    const mux = UdpMux.pinned("127.0.0.1", dispatcher.port);
    const heard: Buffer[] = [];
    const protocol = { datagramReceived: (data: Buffer) => heard.push(data) } as unknown as StunProtocol;
    const transport = mux.attach(protocol);
    const client = await rawSocket();
    await transport.send(answer(), ["127.0.0.1", client.port]);
    await waitFor(() => client.received.length === 1, 2000, "the answer from the shared port");
    expect(mux.stats).toMatchObject({ addresses: 1, connectedSockets: 1 });
    const before = dispatcher.stats.dropped;
    await sendUdp(client.socket, Buffer.from("media"), dispatcher.port);
    await waitFor(() => heard.length === 1, 2000, "media on the connected socket");
    expect(dispatcher.stats.dropped).toBe(before);
    await transport.close();
    expect(mux.stats).toMatchObject({ addresses: 0, connectedSockets: 0 });
    await sendUdp(client.socket, Buffer.from("media after the call"), dispatcher.port);
    await waitFor(() => dispatcher.stats.dropped === before + 1, 2000, "the dispatcher's drop");
    expect(heard).toHaveLength(1);
    await mux.close();
  });

  it("pins a flow only by answering a check: the call's own checks to an address that never checked in are dropped", async () => {
    const mux = UdpMux.pinned("127.0.0.1", dispatcher.port);
    const transport = mux.attach({ datagramReceived: () => {} } as unknown as StunProtocol);
    // An address signalled in the offer, perhaps another client's (another process may own it).
    const signalled = await rawSocket();
    await transport.send(request({ username: "c:r", key: "k" }), ["127.0.0.1", signalled.port]);
    await transport.send(Buffer.from("media"), ["127.0.0.1", signalled.port]);
    expect(mux.stats).toMatchObject({ addresses: 0, connectedSockets: 0, unverifiedSends: 2 });
    // Once the call has answered it, the address is the call's, checks and media included.
    await transport.send(answer(), ["127.0.0.1", signalled.port]);
    await transport.send(request({ username: "c:r", key: "k" }), ["127.0.0.1", signalled.port]);
    await waitFor(() => signalled.received.length === 2, 2000, "the answer and the check");
    expect(mux.stats).toMatchObject({ addresses: 1, connectedSockets: 1, unverifiedSends: 2 });
    await transport.close();
    await mux.close();
  });

  it("says so when a flow cannot be pinned (the port is held without SO_REUSEPORT), and holds no socket", async () => {
    const squatter = await rawSocket();
    const failures: string[] = [];
    const mux = UdpMux.pinned("127.0.0.1", squatter.port, (error, [, port]) =>
      failures.push(`${port}: ${error.message}`),
    );
    const transport = mux.attach({ datagramReceived: () => {} } as unknown as StunProtocol);
    const client = await rawSocket();
    await transport.send(answer(), ["127.0.0.1", client.port]);
    await waitFor(() => failures.length === 1, 2000, "the pin failure");
    expect(failures[0]).toMatch(new RegExp(`^${client.port}: .*EADDRINUSE`));
    expect(mux.stats).toMatchObject({ pinFailures: 1, connectedSockets: 0, addresses: 1 });
    await transport.send(Buffer.from("more"), ["127.0.0.1", client.port]);
    await transport.close();
    expect(mux.stats).toMatchObject({ addresses: 0, connectedSockets: 0 });
    expect(client.received).toEqual([]);
    await mux.close();
  });
});
