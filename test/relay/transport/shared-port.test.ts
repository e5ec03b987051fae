// One UDP port for all of a relay process's calls (RELAY_UDP_PORT): werift clients on loopback
// place concurrent calls on an in-process relay, every answer names the same port, and each call
// carries its own audio both ways. Forged STUN naming a live call's ufrag gets no answer and
// binds nothing; a client cannot take over another call's address; offers that cannot share a
// port are refused; nothing is left behind once the calls end.
import { parseMessage } from "werift";
import { afterEach, describe, expect, it } from "vitest";
import type { CreateCallResponse } from "../../../protocol/relay-api.ts";
import { SIGNATURE_HEADER, signRequest } from "../../../protocol/signed-request.ts";
import { UfragMint, ufragKey } from "../../../relay/transport/ufrag.ts";
import { dominantFrequency, goertzel, sine } from "../../support/audio.ts";
import { waitFor } from "../../support/loopback.ts";
import { TestPeer } from "../../support/peer.ts";
import { bootIdOf, postCall, relayKeyOf, ticketFor, TEST_SECRET } from "../../support/relay-api.ts";
import { useRelay, type UsedRelay } from "../../support/relays.ts";
import { forgeries, request } from "../../support/stun-forgery.ts";
import { closeRawSockets, rawSocket, sendUdp } from "../../support/udp.ts";
import { RecordingBridge, connectRecorded } from "../fixtures.ts";

afterEach(() => closeRawSockets());

const CANDIDATE = /^a=candidate:\S+ 1 udp \d+ (127\.0\.0\.1) (\d+) typ host/m;
const ufragOf = (sdp: string) => /^a=ice-ufrag:(\S+)/m.exec(sdp)![1]!;
const pwdOf = (sdp: string) => /^a=ice-pwd:(\S+)/m.exec(sdp)![1]!;
const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Places `client`'s call with `offer` (its own, edited) and applies a 201's answer. */
async function placeWith(relay: UsedRelay, client: TestPeer, offer: string): Promise<Response> {
  const ticket = await ticketFor(client.callId, offer, {}, { bootId: await bootIdOf(relay.url) });
  const response = await postCall(relay.url, { call_id: client.callId, offer_sdp: offer }, ticket);
  if (response.status === 201)
    await client.applyAnswer(((await response.clone().json()) as CreateCallResponse).answer_sdp);
  return response;
}

/** Uplink and downlink tones, one pair per call, all at once; checks each call heard its own. */
async function exchangeTones(calls: Awaited<ReturnType<typeof connectRecorded>>[], base = 300) {
  const up = (i: number) => base + i * 100;
  const down = (i: number) => base + 50 + i * 100;
  await Promise.all(
    calls.map(async ({ client, bridge }, i) => {
      const tone = sine(down(i), 1000, 8000);
      for (let at = 0; at < tone.length; at += 2400)
        bridge.ctx.downlink.push(`item_${base}`, 0, tone.subarray(at, at + 2400));
      await client.sendPackets(client.encodeFrames(sine(up(i), 1000, 8000)));
    }),
  );
  for (const [i, { client, bridge }] of calls.entries()) {
    const heardFrom = bridge.frames.length - 50;
    const playedFrom = client.received.length;
    await waitFor(() => bridge.frames.length >= 50, 5000, `uplink frames on call ${i}`);
    await waitFor(() => client.received.length >= 50, 5000, `downlink packets on call ${i}`);
    const heard = bridge.pcm().subarray(Math.max(0, heardFrom) * 480 + 4800);
    expect(Math.abs(dominantFrequency(heard) - up(i))).toBeLessThanOrEqual(10);
    expect(goertzel(heard, up(i))).toBeGreaterThan(8000 * 0.8);
    const played = client.decodeReceived(Math.max(0, playedFrom - 50)).subarray(2400);
    expect(Math.abs(dominantFrequency(played) - down(i))).toBeLessThanOrEqual(10);
  }
}

describe("the shared UDP port (full ICE)", () => {
  const relay = useRelay({ bridgeFactory: RecordingBridge.factory, env: { RELAY_UDP_PORT: "0" } });

  it("carries concurrent calls, each with its own audio both ways, and forgets them when they end", async () => {
    const CALLS = 8;
    const calls = await Promise.all(Array.from({ length: CALLS }, () => connectRecorded(relay)));
    const port = relay.udpMux!.port;
    const mint = new UfragMint(ufragKey(TEST_SECRET), 0);
    for (const { client } of calls) {
      // One host candidate (listed in each bundled m-line), on the shared port.
      const ports = [...client.answerSdp.matchAll(/^a=candidate:\S+ 1 udp \d+ \S+ (\d+) typ/gm)];
      expect(new Set(ports.map((m) => Number(m[1])))).toEqual(new Set([port]));
      expect(mint.owner(ufragOf(client.answerSdp))).toBe(0);
    }
    await exchangeTones(calls);
    expect(relay.udpMux!.stats).toMatchObject({ ufrags: CALLS, addresses: CALLS });
    await Promise.all(calls.map(({ client }) => client.close()));
    await waitFor(() => relay.calls.size === 0, 5000, "calls ended");
    expect(relay.udpMux!.stats).toMatchObject({ ufrags: 0, addresses: 0 });
  });

  it("answers no forged STUN naming a live call's ufrag, and binds no address for it", async () => {
    const { client, call, bridge } = await connectRecorded(relay);
    const other = await connectRecorded(relay);
    const offer = client.pc.localDescription!.sdp;
    const credentials = {
      relayUfrag: ufragOf(client.answerSdp),
      relayPwd: pwdOf(client.answerSdp),
      clientUfrag: ufragOf(offer),
      clientPwd: pwdOf(offer),
    };
    const before = relay.udpMux!.stats;
    const candidatesBefore = call.udpGuard.remoteCandidates;
    const attacker = await rawSocket();
    const cases = [
      ...forgeries(credentials),
      // Another call's live ufrag with this call's password, and with a guessed one.
      ...forgeries({ ...credentials, relayUfrag: ufragOf(other.client.answerSdp) }),
    ];
    for (const f of cases)
      for (let i = 0; i < 3; i++) await sendUdp(attacker.socket, f.bytes, relay.udpMux!.port);
    // Not STUN at all, from an address no call has answered: dropped before any call sees it.
    await sendUdp(
      attacker.socket,
      Buffer.from([0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
      relay.udpMux!.port,
    );
    await settle(300);
    expect(attacker.received.map((r) => parseMessage(r)?.messageClass)).toEqual([]);
    const after = relay.udpMux!.stats;
    expect(after.addresses).toBe(before.addresses);
    expect(after.ufrags).toBe(before.ufrags);
    expect(after.unroutable).toBeGreaterThan(before.unroutable);
    expect(call.udpGuard.remoteCandidates).toBe(candidatesBefore);

    // Control: the relay's real credentials from the same socket are answered, and only then
    // is the attacker's address bound (to that call).
    await sendUdp(
      attacker.socket,
      request({ username: `${credentials.relayUfrag}:x`, key: credentials.relayPwd }),
      relay.udpMux!.port,
    );
    const key = Buffer.from(credentials.relayPwd, "utf8");
    await waitFor(
      () => attacker.received.some((r) => parseMessage(r, key)?.messageClass === 0x100),
      2000,
      "answer",
    );
    expect(relay.udpMux!.stats.addresses).toBe(before.addresses + 1);

    // The call carries on.
    client.channel.send('{"type":"after.forgery"}');
    await waitFor(() => bridge.messages.includes('{"type":"after.forgery"}'), 5000, "message at bridge");
  });

  it("keeps a call's address with that call when another offer names it as a candidate", async () => {
    const victim = await connectRecorded(relay);
    const [, host, port] = CANDIDATE.exec(victim.client.pc.localDescription!.sdp)!;
    // The intruder's offer lists the victim's address as a candidate of its own, first.
    const intruder = relay.track(new TestPeer());
    const offer = (await intruder.offer()).replace(
      /^a=candidate:/m,
      `a=candidate:1 1 udp 2130706431 ${host} ${port} typ host\r\na=candidate:`,
    );
    const refusedBefore = relay.udpMux!.stats.refusedBindings;
    expect((await placeWith(relay, intruder, offer)).status).toBe(201);
    await intruder.connected();
    await waitFor(() => relay.udpMux!.stats.refusedBindings > refusedBefore, 3000, "a refused binding");
    // The victim still hears and is heard.
    await exchangeTones([victim], 500);
  });

  it("gives a call a new minted ufrag on ICE restart (PATCH), routed to it beside the old one", async () => {
    const call = await connectRecorded(relay);
    const { client } = call;
    const ufragsBefore = relay.udpMux!.stats.ufrags;
    client.pc.restartIce();
    await client.pc.setLocalDescription(await client.pc.createOffer());
    const local = client.pc.localDescription!.sdp;
    const candidates = [...new Set(local.split(/\r?\n/).filter((l) => l.startsWith("a=candidate:")))];
    const fragment = [`a=ice-ufrag:${ufragOf(local)}`, `a=ice-pwd:${pwdOf(local)}`, ...candidates, ""].join(
      "\r\n",
    );
    const path = `/calls/${client.callId}`;
    const patched = await fetch(`${relay.url}${path}`, {
      method: "PATCH",
      headers: {
        "content-type": "application/trickle-ice-sdpfrag",
        [SIGNATURE_HEADER]: await signRequest(await relayKeyOf(), "PATCH", path, fragment),
      },
      body: fragment,
    });
    expect(patched.status).toBe(200);
    const theirs = await patched.text();
    const ufrag = ufragOf(theirs);
    expect(ufrag).not.toBe(ufragOf(client.answerSdp));
    expect(new UfragMint(ufragKey(TEST_SECRET), 0).owner(ufrag)).toBe(0);
    // The new ufrag routes to the call too (the old one stays until the call ends).
    expect(relay.udpMux!.stats.ufrags).toBe(ufragsBefore + 1);
  });

  it("refuses an offer that does not bundle its media, with a 400 naming BUNDLE", async () => {
    const client = relay.track(new TestPeer());
    const offer = (await client.offer()).replace(/^a=group:BUNDLE.*\r?\n/m, "");
    const ufrags = relay.udpMux!.stats.ufrags;
    const response = await placeWith(relay, client, offer);
    expect(response.status).toBe(400);
    const body = (await response.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("invalid_offer");
    expect(body.error.message).toMatch(/BUNDLE/);
    // Refused before werift gathered: nothing routes to it.
    expect(relay.udpMux!.stats.ufrags).toBe(ufrags);
  });

  it("refuses an audio m-line without rtcp-mux, with a 400 naming rtcp-mux", async () => {
    const client = relay.track(new TestPeer());
    const offer = (await client.offer()).replace(/^a=rtcp-mux\r?\n/m, "");
    const response = await placeWith(relay, client, offer);
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { message: string } }).error.message).toMatch(/rtcp-mux/);
  });
});

describe("the shared UDP port (ICE-lite)", () => {
  const relay = useRelay({
    bridgeFactory: RecordingBridge.factory,
    env: { RELAY_UDP_PORT: "0", RELAY_ICE_LITE: "1" },
  });

  it("routes each call's first packet by its ufrag (the relay sends nothing first)", async () => {
    const calls = await Promise.all(Array.from({ length: 4 }, () => connectRecorded(relay)));
    expect(relay.udpMux!.stats.routedByUfrag).toBeGreaterThanOrEqual(4);
    await exchangeTones(calls);
  });
});
