// Chromium on a network that blocks UDP, to a relay with RELAY_TCP_PORT: the test drops the UDP
// candidates from the offer before the relay sees it and from the answer before the page applies
// it, so neither side can check a UDP pair and the only working path is Chromium's
// `tcptype active` candidate to the relay's passive one. The relay hears the fake microphone's
// speech and the page hears the relay's tone, both over that TCP connection.
import { createServer, type Server } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium, writeSpeechWav } from "./fixtures.ts";
import { rms, sine } from "../support/audio.ts";
import { waitFor, waitUntil } from "../support/loopback.ts";
import { withoutUdpCandidates } from "../support/peer.ts";
import { bootIdOf, newCallId, postCall, ticketFor } from "../support/relay-api.ts";
import { startRelay, type InProcessRelay } from "../support/relays.ts";
import { RecordingBridge } from "../relay/fixtures.ts";

describe("Chromium through ICE-TCP only", { timeout: 90_000 }, () => {
  let dir: string;
  let relay: InProcessRelay;
  let browser: Browser;
  let page: Page;
  let server: Server;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "earshot-ice-tcp-"));
    const wav = join(dir, "speech.wav");
    await writeSpeechWav(wav, "Hello agent, can you hear me over TCP?", 0.5);
    relay = await startRelay({
      bridgeFactory: RecordingBridge.factory,
      env: { RELAY_UDP_PORT: "0", RELAY_UDP_PORTS: "", RELAY_TCP_PORT: "0", RELAY_VAD: "off" },
    });
    // getUserMedia needs a secure context: an empty page from http://127.0.0.1 is one.
    server = createServer((_req, res) => res.end("<!doctype html><title>ice-tcp</title>"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    browser = await launchChromium(wav, join(dir, "profile"));
    page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${(server.address() as { port: number }).port}/`);
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await relay?.close();
    await new Promise((resolve) => server?.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  it("connects over the passive TCP candidate, with audio both ways", async () => {
    const offer = await page.evaluate(async () => {
      const pc = new RTCPeerConnection();
      (globalThis as unknown as { pc: RTCPeerConnection }).pc = pc;
      // Played out, so Chromium measures what it hears (inbound-rtp totalAudioEnergy).
      pc.ontrack = (event) => {
        const audio = new Audio();
        audio.srcObject = new MediaStream([event.track]);
        void audio.play();
      };
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      pc.addTrack(stream.getAudioTracks()[0]!, stream);
      pc.createDataChannel("oai-events");
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise<void>((resolve) => {
        if (pc.iceGatheringState === "complete") resolve();
        pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
      });
      return pc.localDescription!.sdp;
    });
    // With the microphone granted Chromium offers its real host addresses, which the relay would
    // check over UDP: a network that drops UDP never lets those checks through either.
    const tcpOffer = withoutUdpCandidates(offer);
    const callId = newCallId();
    const ticket = await ticketFor(callId, tcpOffer, {}, { bootId: await bootIdOf(relay.url) });
    const response = await postCall(relay.url, { call_id: callId, offer_sdp: tcpOffer }, ticket);
    expect(response.status).toBe(201);
    const { answer_sdp } = (await response.json()) as { answer_sdp: string };
    const selected = await page.evaluate(async (sdp) => {
      const pc = (globalThis as unknown as { pc: RTCPeerConnection }).pc;
      await pc.setRemoteDescription({ type: "answer", sdp });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`ICE ${pc.iceConnectionState}`)), 20_000);
        pc.onconnectionstatechange = () => {
          if (pc.connectionState === "connected") resolve(clearTimeout(timer));
        };
      });
      const stats = await pc.getStats();
      for (const s of stats.values()) {
        if (s.type !== "transport" || !s.selectedCandidatePairId) continue;
        const local = stats.get(stats.get(s.selectedCandidatePairId).localCandidateId);
        return { protocol: local.protocol as string, tcpType: local.tcpType as string };
      }
      return undefined;
    }, withoutUdpCandidates(answer_sdp));
    expect(selected).toEqual({ protocol: "tcp", tcpType: "active" });
    const call = relay.calls.get(callId)!;
    expect(call.stats().transport).toBe("tcp");

    // Uplink: the fake microphone's speech reaches the relay.
    const bridge = RecordingBridge.of(callId);
    await waitFor(() => bridge.frames.length >= 150, 10_000, "uplink frames");
    expect(rms(bridge.pcm())).toBeGreaterThan(300);
    // Downlink: a tone from the relay reaches the page (the audio energy Chromium decoded).
    const tone = sine(440, 2000, 8000);
    for (let at = 0; at < tone.length; at += 2400)
      bridge.ctx.downlink.push("item_tcp", 0, tone.subarray(at, at + 2400));
    const energy = () =>
      page.evaluate(async () => {
        const stats = await (globalThis as unknown as { pc: RTCPeerConnection }).pc.getStats();
        for (const s of stats.values())
          if (s.type === "inbound-rtp" && s.kind === "audio") return s.totalAudioEnergy as number;
        return 0;
      });
    // A 2 s tone at amplitude 8000 (about -12 dBFS) carries about 2 × 0.24² ≈ 0.12.
    await waitUntil(
      "the tone's energy at the page",
      async () => ((await energy()) > 0.05 ? true : undefined),
      10_000,
    );
    expect(relay.tcpMux!.stats).toMatchObject({ connections: 1 });
  });
});
