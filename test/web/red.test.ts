// RFC 2198 redundancy with a real browser: Debian's Chromium offers audio/red, the relay answers
// it first, and from then on Chromium sends RED and takes the relay's RED, checked on the wire (an
// impairment proxy between them counts RTP payload types; SRTP leaves the header in clear) and
// in the relay's counters. At 10 % loss each way the relay fills lost uplink frames from
// Chromium's redundant blocks, the model hears the microphone's speech and the page the reply.
import { createServer, type Server } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SpeechSynthesizer } from "../../agent/tts.ts";
import { launchChromium, writeSpeechWav } from "./fixtures.ts";
import { voicedMs } from "../support/audio.ts";
import {
  hostCandidatePort,
  routeAnswerThroughProxy,
  startImpairmentProxy,
  type ImpairmentProxy,
} from "../support/impairment.ts";
import { NetworkModel } from "../support/network-call.ts";
import { bootIdOf, newCallId, postCall, ticketFor } from "../support/relay-api.ts";
import { metricValue, startRelayProcess, type RelayProcess } from "../support/relays.ts";
import { metricsAuth } from "../support/relay-api.ts";
import { waitUntil } from "../support/loopback.ts";

interface PageAudio {
  /** Ms of 20 ms windows the page heard above -40 dBFS from the relay. */
  loudMs: number;
  connectionState: string;
}

declare global {
  interface Window {
    redCall: { pc: RTCPeerConnection; audio: PageAudio };
  }
}

describe("Chromium with audio/red through the relay", { timeout: 120_000 }, () => {
  let dir: string;
  let model: NetworkModel;
  let relay: RelayProcess;
  let browser: Browser;
  let server: Server;
  let proxy: ImpairmentProxy | undefined;
  let reply: Int16Array;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "earshot-red-"));
    const wav = join(dir, "speech.wav");
    // Speech, then a pause long enough for the reply to play out before the file loops.
    await writeSpeechWav(wav, "Hello agent, can you hear me? I would like a table for four.", 9);
    reply = await new SpeechSynthesizer().speak(
      "Sure. The train leaves at seven fifteen from platform two, and it takes about an hour.",
    );
    model = await NetworkModel.start();
    relay = await startRelayProcess({
      inferenceUrl: model.url,
      env: { LOG_LEVEL: "warn", RELAY_RED_DISTANCE: "2" },
    });
    // A page on http://127.0.0.1 (a secure context, so getUserMedia works).
    server = createServer((_, res) => res.end("<!doctype html><title>red</title>"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    browser = await launchChromium(wav, join(dir, "profile"));
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await proxy?.close();
    await relay?.stop();
    await model?.close();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  /** The page's half: microphone in, the relay's audio measured, an offer out. */
  async function offerFromPage(page: Page): Promise<string> {
    return page.evaluate(async () => {
      const pc = new RTCPeerConnection();
      const audio: PageAudio = { loudMs: 0, connectionState: "new" };
      window.redCall = { pc, audio };
      pc.onconnectionstatechange = () => (audio.connectionState = pc.connectionState);
      const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
      pc.addTrack(mic.getAudioTracks()[0]!, mic);
      pc.createDataChannel("oai-events");
      pc.ontrack = (event) => {
        const stream = new MediaStream([event.track]);
        // Chromium feeds a remote track to Web Audio only while a media element plays it.
        const element = new Audio();
        element.srcObject = stream;
        element.muted = true;
        void element.play();
        const context = new AudioContext();
        const analyser = context.createAnalyser();
        analyser.fftSize = 1024;
        context.createMediaStreamSource(stream).connect(analyser);
        const samples = new Float32Array(analyser.fftSize);
        setInterval(() => {
          analyser.getFloatTimeDomainData(samples);
          let sum = 0;
          for (const s of samples) sum += s * s;
          if (Math.sqrt(sum / samples.length) > 0.01) audio.loudMs += 20;
        }, 20);
      };
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise<void>((resolve) => {
        if (pc.iceGatheringState === "complete") return resolve();
        pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
        setTimeout(resolve, 3000);
      });
      return pc.localDescription!.sdp;
    });
  }

  it("negotiates red first, sends and receives RED, and fills lost uplink frames from it at 10 % loss", async () => {
    const page = await browser.newPage();
    const pageErrors: string[] = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));
    const address = server.address();
    if (!address || typeof address === "string") throw new Error("no page server");
    await page.goto(`http://127.0.0.1:${address.port}/`);
    // No candidates: the relay can only reach the page through the proxy (as from behind a NAT).
    const offer = (await offerFromPage(page))
      .split("\r\n")
      .filter((line) => !line.startsWith("a=candidate:"))
      .join("\r\n");
    const redPayloadType = Number(/^a=rtpmap:(\d+) red\/48000\/2/m.exec(offer)?.[1]);
    const opusPayloadType = Number(/^a=rtpmap:(\d+) opus\/48000\/2/m.exec(offer)?.[1]);
    expect(redPayloadType).toBeGreaterThan(0); // Debian's Chromium offers RED for Opus

    const callId = newCallId();
    const sessions = model.sessions;
    const response = await postCall(
      relay.url,
      { call_id: callId, offer_sdp: offer },
      await ticketFor(callId, offer, {}, { bootId: await bootIdOf(relay.url), relayId: relay.id }),
    );
    expect(response.status).toBe(201);
    const answer = ((await response.json()) as { answer_sdp: string }).answer_sdp;
    // red first in the answer's codec list: Chromium sends RED only then.
    expect(/^m=audio \d+ \S+ (\d+)/m.exec(answer)?.[1]).toBe(String(redPayloadType));
    expect(answer).toMatch(
      new RegExp(`^a=fmtp:${redPayloadType} ${opusPayloadType}/${opusPayloadType}`, "m"),
    );

    const relayPort = hostCandidatePort(answer);
    proxy = await startImpairmentProxy({ targetPort: relayPort, seed: 2198 });
    await page.evaluate(
      (sdp) => window.redCall.pc.setRemoteDescription({ type: "answer", sdp }),
      routeAnswerThroughProxy(answer, proxy.port, relayPort),
    );
    await page.waitForFunction(() => window.redCall.audio.connectionState === "connected", null, {
      timeout: 20_000,
    });
    await model.opened(sessions);
    proxy.up.profile = { loss: 0.1 };
    proxy.down.profile = { loss: 0.1 };
    const metrics = async () => (await fetch(`${relay.url}/metrics`, { headers: metricsAuth })).text();
    const before = await metrics();
    const heardFrom = model.heard.length;
    // The microphone's speech reaches the model; the reply goes in the pause after it (speech
    // over the reply would barge in and stop it).
    const heardSince = (from: number) => voicedMs(model.heardPcm(from));
    await waitUntil("the model to hear speech", () => heardSince(heardFrom) >= 1500, 25_000);
    await waitUntil(
      "the speech to end",
      () => heardSince(Math.max(heardFrom, model.heard.length - 8)) === 0,
      10_000,
    );
    model.reply(reply);
    const replyMs = (reply.length / 24_000) * 1000;
    await page.waitForTimeout(replyMs + 1500);
    const after = await metrics();
    const pageAudio = await page.evaluate(() => window.redCall.audio);

    // On the wire: RED each way, and next to nothing as plain Opus.
    const up = proxy.up.rtpPayloadTypes;
    const down = proxy.down.rtpPayloadTypes;
    expect(up.get(redPayloadType) ?? 0).toBeGreaterThan(150);
    expect(up.get(opusPayloadType) ?? 0).toBeLessThan(5);
    expect(down.get(redPayloadType) ?? 0).toBeGreaterThan(150);
    expect(down.get(opusPayloadType) ?? 0).toBeLessThan(5);
    // The relay parsed Chromium's RED and took lost frames from its redundant blocks.
    const delta = (name: string) => metricValue(after, name) - metricValue(before, name);
    expect(delta("earshot_relay_uplink_red_packets_total")).toBeGreaterThan(150);
    expect(delta("earshot_relay_uplink_red_recovered_frames_total")).toBeGreaterThan(0);
    // Audio intact: the model heard the microphone's speech (above), the page most of the reply.
    expect(pageAudio.loudMs).toBeGreaterThan(replyMs * 0.5);
    expect(pageErrors).toEqual([]);
    await page.evaluate(() => window.redCall.pc.close());
  });
});
