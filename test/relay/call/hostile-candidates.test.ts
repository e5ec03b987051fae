// Remote ICE candidates are capped per call (MAX_REMOTE_CANDIDATES), in the offer and through
// PATCH, and `.local` (mDNS) names are refused without being resolved.
import { describe, expect, it } from "vitest";
import type { CreateCallResponse } from "../../../protocol/relay-api.ts";
import { SIGNATURE_HEADER, signRequest } from "../../../protocol/signed-request.ts";
import type { Call } from "../../../relay/call/call.ts";
import { MAX_REMOTE_CANDIDATES } from "../../../relay/call/peer-config.ts";
import { RecordingBridge } from "../fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { TestPeer } from "../../support/peer.ts";
import { bootIdOf, postCall, relayKeyOf, ticketFor } from "../../support/relay-api.ts";
import { useRelay } from "../../support/relays.ts";

const relay = useRelay({ bridgeFactory: RecordingBridge.factory });

/** `count` host candidates on 127.0.0.1 ports nobody listens on, below the real one's priority. */
function fakeCandidates(count: number, host = (_i: number) => "127.0.0.1"): string[] {
  return Array.from(
    { length: count },
    (_, i) => `a=candidate:fake${i} 1 udp ${1000 + i} ${host(i)} ${20000 + i} typ host`,
  );
}

/** Offers with the client's own candidate(s) first, then `extra`, and applies the answer. */
async function callWith(extra: string[]): Promise<{ client: TestPeer; call: Call; offered: number }> {
  const client = new TestPeer();
  relay.track(client);
  let offer = await client.offer();
  offer = offer.replace(/((?:^a=candidate:.*\r\n)+)/m, (own) => own + extra.map((l) => `${l}\r\n`).join(""));
  const offered = firstSectionCandidates(offer);
  const response = await postCall(
    relay.url,
    { call_id: client.callId, offer_sdp: offer },
    await ticketFor(client.callId, offer, {}, { bootId: await bootIdOf(relay.url) }),
  );
  expect(response.status).toBe(201);
  const body = (await response.json()) as CreateCallResponse;
  client.answerSdp = body.answer_sdp;
  await client.pc.setRemoteDescription({ type: "answer", sdp: body.answer_sdp });
  return { client, call: relay.calls.get(client.callId)!, offered };
}

/** Candidate lines of the first (audio) m-section: the bundle transport the relay uses. */
function firstSectionCandidates(sdp: string): number {
  const audio = /^m=audio[\s\S]*?(?=^m=|(?![\s\S]))/m.exec(sdp)![0];
  return (audio.match(/^a=candidate:/gm) ?? []).length;
}

function ownCandidates(client: TestPeer): number {
  return firstSectionCandidates(client.pc.localDescription!.sdp);
}

describe("remote candidates in the offer", () => {
  it("are all kept at the cap, and the call connects", async () => {
    const probe = new TestPeer();
    await probe.offer();
    const own = ownCandidates(probe);
    await probe.close();
    const { client, call, offered } = await callWith(fakeCandidates(MAX_REMOTE_CANDIDATES - own));
    expect(offered).toBe(MAX_REMOTE_CANDIDATES);
    await client.connected();
    await waitFor(() => call.udpGuard.remoteCandidates === MAX_REMOTE_CANDIDATES, 3000, "candidates applied");
    expect(call.udpGuard.refusedCandidates).toBe(0);
  });

  it("past the cap are refused (and counted), and the call still connects", async () => {
    const { client, call, offered } = await callWith(fakeCandidates(MAX_REMOTE_CANDIDATES + 8));
    expect(offered).toBeGreaterThan(MAX_REMOTE_CANDIDATES + 1);
    await client.connected();
    await client.channelOpen();
    await waitFor(
      () => call.udpGuard.refusedCandidates === offered - MAX_REMOTE_CANDIDATES,
      3000,
      "refusals",
    );
    expect(call.udpGuard.remoteCandidates).toBe(MAX_REMOTE_CANDIDATES);
    expect(call.state).toBe("connected");
  });

  it("with .local names are refused at once, not resolved over mDNS", async () => {
    const mdns = fakeCandidates(4, (i) => `${crypto.randomUUID()}-${i}.local`);
    const start = performance.now();
    const { client, call } = await callWith(mdns);
    await client.connected();
    // werift would otherwise query mDNS and wait up to 10 s per name before giving up.
    expect(performance.now() - start).toBeLessThan(5000);
    await waitFor(() => call.udpGuard.refusedCandidates === 4, 3000, "mDNS refusals");
    expect(call.udpGuard.remoteCandidates).toBe(ownCandidates(client));
  });
});

describe("remote candidates trickled through PATCH (ICE restart sdpfrag)", () => {
  async function patch(callId: string, fragment: string): Promise<Response> {
    const path = `/calls/${callId}`;
    return fetch(`${relay.url}${path}`, {
      method: "PATCH",
      headers: {
        "content-type": "application/trickle-ice-sdpfrag",
        [SIGNATURE_HEADER]: await signRequest(await relayKeyOf(), "PATCH", path, fragment),
      },
      body: fragment,
    });
  }

  function sdpfrag(candidates: string[]): string {
    return ["a=ice-ufrag:rstr", "a=ice-pwd:restartpasswordrestart12", ...candidates, ""].join("\r\n");
  }

  it("are kept at the cap", async () => {
    const { client, call } = await callWith([]);
    await client.connected();
    const response = await patch(client.callId, sdpfrag(fakeCandidates(MAX_REMOTE_CANDIDATES)));
    expect(response.status).toBe(200);
    await waitFor(() => call.udpGuard.remoteCandidates >= MAX_REMOTE_CANDIDATES, 3000, "restart candidates");
    expect(call.udpGuard.refusedCandidates).toBe(0);
  });

  it("none yet (a browser that trickles them): the call waits for them instead of failing ICE", async () => {
    const { client, call } = await callWith([]);
    await client.connected();
    const response = await patch(client.callId, sdpfrag([]));
    expect(response.status).toBe(200);
    // The old offer's a=end-of-candidates, left in place, made werift fail ICE at once.
    await new Promise((r) => setTimeout(r, 1500));
    expect(call.state).not.toBe("ended");
  });

  it("past the cap are refused", async () => {
    const { client, call } = await callWith([]);
    await client.connected();
    const response = await patch(client.callId, sdpfrag(fakeCandidates(MAX_REMOTE_CANDIDATES + 10)));
    expect(response.status).toBe(200);
    await waitFor(() => call.udpGuard.refusedCandidates === 10, 3000, "refusals");
    expect(call.state).not.toBe("ended");
  });
});
