// UdpMux on its own, with raw sockets for clients and a recording stand-in for werift's STUN
// protocol (the shared-port tests run it under real calls): what binds an address, the per-call
// address cap at the limit and just past it, and the cleanup on close.
import type { StunProtocol } from "werift";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MAX_ADDRESSES_PER_CALL, UdpMux } from "../../../relay/transport/udp-mux.ts";
import { waitFor } from "../../support/loopback.ts";
import { request } from "../../support/stun-forgery.ts";
import { closeRawSockets, rawSocket, sendUdp } from "../../support/udp.ts";

let mux: UdpMux;
beforeAll(async () => {
  mux = await UdpMux.open("127.0.0.1", 0);
});
afterAll(() => mux.close());
afterEach(() => closeRawSockets());

/** What werift's StunProtocol is to the mux: something datagrams are delivered to. */
function recordingProtocol() {
  const heard: { from: number; data: Buffer }[] = [];
  const protocol = {
    datagramReceived: (data: Buffer, addr: readonly [string, number]) => heard.push({ from: addr[1], data }),
  } as unknown as StunProtocol;
  return { protocol, heard };
}

describe("UdpMux", () => {
  it("routes by ufrag until the call sends to an address, then by address; forgets all on close", async () => {
    const { protocol, heard } = recordingProtocol();
    const transport = mux.attach(protocol);
    mux.addUfrag("AAAAufragOfCallA", protocol);
    const client = await rawSocket();
    await sendUdp(client.socket, Buffer.from("not stun, unknown address"), mux.port);
    await sendUdp(client.socket, request({ username: "AAAAufragOfCallA:c", key: "k" }), mux.port);
    await waitFor(() => heard.length === 1, 2000, "the request");
    expect(mux.stats).toMatchObject({ routedByUfrag: 1, unroutable: 1, addresses: 0 });
    // Hearing a request binds nothing; answering does.
    await transport.send(Buffer.from("answer"), ["127.0.0.1", client.port]);
    await waitFor(() => client.received.length === 1, 2000, "the answer");
    expect(mux.stats.addresses).toBe(1);
    await sendUdp(client.socket, Buffer.from("media"), mux.port);
    await waitFor(() => heard.length === 2, 2000, "media by address");
    expect(heard[1]!.data.toString()).toBe("media");
    await transport.close();
    expect(mux.stats).toMatchObject({ ufrags: 0, addresses: 0 });
    await sendUdp(client.socket, Buffer.from("after close"), mux.port);
    await waitFor(() => mux.stats.unroutable === 2, 2000, "dropped after close");
    expect(heard).toHaveLength(2);
  });

  it(`binds at most ${MAX_ADDRESSES_PER_CALL} addresses per call, and never another call's`, async () => {
    const a = recordingProtocol();
    const b = recordingProtocol();
    const callA = mux.attach(a.protocol);
    const callB = mux.attach(b.protocol);
    const clients = await Promise.all(Array.from({ length: MAX_ADDRESSES_PER_CALL + 1 }, () => rawSocket()));
    for (const c of clients.slice(0, MAX_ADDRESSES_PER_CALL))
      await callA.send(Buffer.from("x"), ["127.0.0.1", c.port]);
    expect(mux.stats.addresses).toBe(MAX_ADDRESSES_PER_CALL);
    // Past the cap: the send goes out, the address is not bound.
    const past = clients[MAX_ADDRESSES_PER_CALL]!;
    await callA.send(Buffer.from("x"), ["127.0.0.1", past.port]);
    await waitFor(() => past.received.length === 1, 2000, "the send past the cap");
    expect(mux.stats.addresses).toBe(MAX_ADDRESSES_PER_CALL);
    // Call B sending to call A's address does not take it over.
    const refused = mux.stats.refusedBindings;
    await callB.send(Buffer.from("x"), ["127.0.0.1", clients[0]!.port]);
    expect(mux.stats.refusedBindings).toBe(refused + 1);
    await sendUdp(clients[0]!.socket, Buffer.from("to A"), mux.port);
    await waitFor(() => a.heard.length === 1, 2000, "A's client heard by A");
    expect(b.heard).toHaveLength(0);
    await Promise.all([callA.close(), callB.close()]);
    expect(mux.stats).toMatchObject({ ufrags: 0, addresses: 0 });
  });

  it("sends nothing for a send without a destination (a shared socket has no last sender)", async () => {
    const { protocol } = recordingProtocol();
    const transport = mux.attach(protocol);
    await expect(transport.send(Buffer.from("x"))).resolves.toBeUndefined();
    expect(mux.stats.addresses).toBe(0);
    await transport.close();
  });
});
