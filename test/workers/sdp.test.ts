import { describe, expect, it } from "vitest";
import { checkOffer, isForwardableCandidate, MAX_CANDIDATES } from "../../workers/sdp.ts";
import {
  API_KEY,
  callIdOf,
  edge,
  errorOf,
  mintSecret,
  offerSdp,
  postOffer,
  PUBLIC_CANDIDATE,
  soloRelay,
  stubRecords,
} from "./fixtures.ts";

describe("SDP offers at POST /v1/realtime/calls", () => {
  async function expectStatus(
    body: string | Uint8Array,
    status: number,
    code: string,
    contentType = "application/sdp",
  ) {
    const { relayId, query } = await soloRelay();
    const { value } = await mintSecret();
    const response = await edge(`/v1/realtime/calls${query}`, {
      method: "POST",
      bearer: value,
      headers: { "content-type": contentType },
      body,
    });
    expect(response.status).toBe(status);
    expect((await errorOf(response)).code).toBe(code);
    // Refused before any other work: the relay never heard of it.
    expect(await stubRecords(relayId)).toEqual([]);
  }

  it("refuses an offer over 32 KiB with 413", async () => {
    const padding = Array.from({ length: 700 }, (_, i) => `a=x-padding-${i}:${"p".repeat(40)}`).join("\r\n");
    const offer = offerSdp().replace("s=-\r\n", `s=-\r\n${padding}\r\n`);
    expect(offer.length).toBeGreaterThan(32 * 1024);
    await expectStatus(offer, 413, "payload_too_large");
  });

  it("refuses an offer without a DTLS fingerprint", async () => {
    await expectStatus(offerSdp({ fingerprint: false }), 400, "invalid_offer");
  });

  it("refuses two audio m-lines, a video m-line, or no audio at all", async () => {
    await expectStatus(offerSdp({ audioLines: 2 }), 400, "invalid_offer");
    await expectStatus(offerSdp({ video: true }), 400, "invalid_offer");
    await expectStatus(offerSdp({ audioLines: 0 }), 400, "invalid_offer");
  });

  it("refuses garbage, binary and empty bodies", async () => {
    await expectStatus("hello, relay", 400, "invalid_offer");
    await expectStatus(new Uint8Array([0xff, 0xfe, 0x00, 0x81]), 400, "invalid_encoding");
    await expectStatus("", 400, "invalid_offer");
    await expectStatus(`v=0\r\n${"\u0000".repeat(10)}\r\n`, 400, "invalid_offer");
  });

  it("refuses an offer without ICE credentials, or with too many candidates", async () => {
    await expectStatus(offerSdp({ ice: false }), 400, "invalid_offer");
    const many = Array.from({ length: MAX_CANDIDATES + 1 }, (_, i) =>
      PUBLIC_CANDIDATE.replace("a=candidate:1 ", `a=candidate:${i} `),
    );
    await expectStatus(offerSdp({ candidates: many }), 400, "invalid_offer");
  });

  it("refuses the wrong content type with 415", async () => {
    await expectStatus(offerSdp(), 415, "unsupported_media_type", "text/plain");
    await expectStatus(
      JSON.stringify({ sdp: offerSdp() }),
      415,
      "unsupported_media_type",
      "application/json",
    );
  });

  it("forwards only public candidates: .local and private addresses are stripped", async () => {
    const { relayId, query } = await soloRelay();
    const candidates = [
      "a=candidate:1 1 udp 2122260223 6b2c1f3e-1111-2222-3333-444455556666.local 50000 typ host",
      "a=candidate:2 1 udp 2122260223 192.168.1.20 50001 typ host",
      "a=candidate:3 1 udp 2122260223 10.0.0.5 50002 typ host",
      "a=candidate:4 1 udp 2122260223 172.20.1.1 50003 typ host",
      "a=candidate:5 1 udp 2122260223 127.0.0.1 50004 typ host",
      "a=candidate:6 1 udp 2122260223 fe80::1 50005 typ host",
      "a=candidate:7 1 udp 2122260223 fd00::1 50006 typ host",
      "a=candidate:8 1 udp 2122260223 169.254.10.10 50007 typ host",
      PUBLIC_CANDIDATE,
      "a=candidate:9 1 udp 1686052607 2001:db8:1::7 54401 typ srflx raddr :: rport 0",
    ];
    const response = await postOffer(offerSdp({ candidates }), { apiKey: API_KEY, query });
    expect(response.status).toBe(201);
    const [forwarded] = await stubRecords(relayId);
    const offer = (JSON.parse(forwarded!.body) as { offer_sdp: string }).offer_sdp;
    const sent = offer.split("\r\n").filter((line) => line.startsWith("a=candidate:"));
    expect(sent).toEqual([PUBLIC_CANDIDATE, candidates.at(-1)]);
    expect(forwarded!.callId).toBe(callIdOf(response));
  });

  it("accepts multipart/form-data with sdp and session from a server holding an API key", async () => {
    const { relayId, query } = await soloRelay();
    const form = new FormData();
    form.set("sdp", offerSdp());
    form.set("session", JSON.stringify({ type: "realtime", instructions: "Speak French." }));
    const response = await edge(`/v1/realtime/calls${query}`, {
      method: "POST",
      apiKey: API_KEY,
      body: form,
    });
    expect(response.status).toBe(201);
    const [forwarded] = await stubRecords(relayId);
    expect(JSON.parse(forwarded!.body)).toMatchObject({
      session: { instructions: "Speak French.", model: "gpt-realtime" },
    });

    const noSdp = new FormData();
    noSdp.set("session", "{}");
    const missing = await edge(`/v1/realtime/calls${query}`, {
      method: "POST",
      apiKey: API_KEY,
      body: noSdp,
    });
    expect(missing.status).toBe(400);
    expect((await errorOf(missing)).param).toBe("sdp");
  });
});

describe("candidate filter", () => {
  it.each([
    ["a=candidate:1 1 udp 1 8.8.8.8 1 typ host", true],
    ["a=candidate:1 1 udp 1 100.64.0.1 1 typ host", false],
    ["a=candidate:1 1 udp 1 0.0.0.0 1 typ host", false],
    ["a=candidate:1 1 udp 1 ::ffff:10.0.0.1 1 typ host", false],
    ["a=candidate:1 1 udp 1 relay.example.com 1 typ relay", false],
    ["a=candidate:garbage", false],
  ])("%s → %s", (line, forwarded) => {
    expect(isForwardableCandidate(line)).toBe(forwarded);
  });

  it("normalises line ends to CRLF", () => {
    expect(checkOffer(offerSdp().replace(/\r\n/g, "\n")).sdp).toContain("\r\nm=audio");
  });
});
