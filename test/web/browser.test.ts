// The whole path in a real browser: Debian's Chromium with a fake microphone playing speech,
// through the edge (wrangler dev on workerd) and a relay process to the built-in agent.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium, writeSpeechWav } from "./fixtures.ts";
import { freePort, type ManagedProcess, root, startProcess } from "../support/loopback.ts";
import {
  type Edge,
  type RelayProcess,
  startEdge,
  startRelayProcess,
  waitForRelayAtEdge,
} from "../support/relays.ts";

const ARTIFACTS = join(root, "test-artifacts");

interface DemoState {
  inputLevel: number;
  outputLevel: number;
  peakOutputLevel: number;
  events: string[];
  bargeIns: number;
  quality: { lossPercent: number; rttMs?: number; jitterMs?: number }[];
}

describe("browser, through the edge and a relay to the built-in agent", { timeout: 120_000 }, () => {
  let dir: string;
  let agent: ManagedProcess;
  let edge: Edge;
  let relay: RelayProcess;
  let browser: Browser;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "earshot-browser-"));
    mkdirSync(ARTIFACTS, { recursive: true });
    // About 1.5 s of speech, then a pause long enough for the agent to answer and to be
    // interrupted by the next loop of the file.
    const wav = join(dir, "speech.wav");
    await writeSpeechWav(wav, "Hello agent, can you hear me?", 2.5);
    const agentPort = await freePort();
    agent = startProcess("agent", ["agent/main.ts"], {
      AGENT_PORT: String(agentPort),
      AGENT_REPLY: "speak",
    });
    edge = await startEdge();
    relay = await startRelayProcess({
      edge,
      inferenceUrl: `ws://127.0.0.1:${agentPort}/v1/realtime`,
      // Frequent heartbeats, so the edge notices quickly when the last test kills the relay.
      env: { RELAY_HEARTBEAT_SECONDS: "1" },
    });
    // The relay is usable once its heartbeat reached the edge's registry.
    await waitForRelayAtEdge(edge, relay.id);
    browser = await launchChromium(wav, join(dir, "profile"));
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await relay?.stop();
    await edge?.stop();
    await agent?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("talks on the demo page, hears the reply, a barge-in clears it, and the call's quality shows live", async () => {
    const page: Page = await browser.newPage();
    const pageErrors: string[] = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));
    await page.goto(`${edge.url}/`);
    await page.click("#talk");
    await page.waitForFunction(() => document.querySelector("#talk")?.textContent === "Hang up", null, {
      timeout: 20_000,
    });
    const demo = () => page.evaluate(() => (window as unknown as { earshotDemo: DemoState }).earshotDemo);

    // The agent's reply, measured by the page's WebAudio analyser on the remote track.
    await page.waitForFunction(
      () => (window as unknown as { earshotDemo: DemoState }).earshotDemo.peakOutputLevel > 0.05,
      null,
      { timeout: 30_000 },
    );
    // The next loop of the speech file talks over the agent: the relay clears its output.
    await page.waitForFunction(
      () => (window as unknown as { earshotDemo: DemoState }).earshotDemo.bargeIns > 0,
      null,
      {
        timeout: 30_000,
      },
    );
    const state = await demo();
    expect(state.events).toContain("input_audio_buffer.speech_started");
    expect(state.events).toContain("output_audio_buffer.started");
    expect(state.events).toContain("output_audio_buffer.cleared");
    // After the clear, the output falls silent within a few analyser periods.
    await page.waitForFunction(
      () => (window as unknown as { earshotDemo: DemoState }).earshotDemo.outputLevel < 0.01,
      null,
      { timeout: 2000 },
    );
    for (const id of ["#t-secret", "#t-answer", "#t-ice", "#t-audio"]) {
      expect(Number(await page.textContent(id))).toBeGreaterThan(0);
    }
    // The call-quality panel draws live: a few seconds of samples with a round trip, both lines
    // on the chart (pixels in the loss and RTT colours), the latest figures beside it.
    await page.waitForFunction(
      () => {
        const q = (window as unknown as { earshotDemo: DemoState }).earshotDemo.quality;
        return q.length >= 3 && q.some((s) => s.rttMs !== undefined);
      },
      null,
      { timeout: 15_000 },
    );
    const drawn = await page.evaluate(() => {
      const canvas = document.querySelector<HTMLCanvasElement>("#quality-chart")!;
      const pixels = canvas.getContext("2d")!.getImageData(0, 0, canvas.width, canvas.height).data;
      let loss = 0;
      let rtt = 0;
      for (let i = 0; i < pixels.length; i += 4) {
        const [r, g, b] = [pixels[i]!, pixels[i + 1]!, pixels[i + 2]!];
        if (r > 150 && g < 100 && b < 100) loss++;
        if (r < 100 && g < 130 && b > 150) rtt++;
      }
      return { loss, rtt };
    });
    // Each line is a few dozen pixels of its colour on a clean loopback call (47–50 seen, so a
    // bound of 50 failed in CI); nothing drawn is 0.
    expect(drawn.loss).toBeGreaterThan(20);
    expect(drawn.rtt).toBeGreaterThan(20);
    expect(await page.textContent("#quality-figures")).toMatch(
      /^loss \d+\.\d % · RTT \d+ ms · jitter \d+ ms$/,
    );
    await page.locator("section.quality").screenshot({ path: join(ARTIFACTS, "demo-quality-panel.png") });
    await page.screenshot({ path: join(ARTIFACTS, "demo-page.png"), fullPage: true });
    await page.click("#talk");
    expect(pageErrors).toEqual([]);
  });

  it("runs plain code written for OpenAI's endpoint, with only the base URL changed", async () => {
    // The app's own page, on another origin than the edge, as a real app would be.
    const appServer: Server = createServer((_req, res) => res.end("<!doctype html><title>app</title>"));
    await new Promise<void>((r) => appServer.listen(0, "127.0.0.1", r));
    const appUrl = `http://127.0.0.1:${(appServer.address() as { port: number }).port}/`;
    try {
      // The app's server mints the client secret with its API key, as with OpenAI.
      const minted = await fetch(`${edge.url}/v1/realtime/client_secrets`, {
        method: "POST",
        headers: { Authorization: `Bearer ${edge.apiKey}`, "Content-Type": "application/json" },
        body: JSON.stringify({ session: { type: "realtime", model: "gpt-realtime" } }),
      });
      expect(minted.status).toBe(200);
      const { value: ephemeralKey } = (await minted.json()) as { value: string };
      expect(ephemeralKey).toMatch(/^ek_/);

      const page = await browser.newPage();
      await page.goto(appUrl);
      const result = await page.evaluate(
        async ({ baseUrl, EPHEMERAL_KEY }) => {
          // OpenAI's published browser example, verbatim but for baseUrl.
          const pc = new RTCPeerConnection();
          const audioEl = document.createElement("audio");
          audioEl.autoplay = true;
          let remote: MediaStream | undefined;
          pc.ontrack = (e) => {
            remote = e.streams[0];
            audioEl.srcObject = e.streams[0]!;
          };
          const ms = await navigator.mediaDevices.getUserMedia({ audio: true });
          pc.addTrack(ms.getTracks()[0]!);
          const dc = pc.createDataChannel("oai-events");
          const events: string[] = [];
          dc.addEventListener("message", (e) => events.push(JSON.parse(e.data).type));
          const offer = await pc.createOffer();
          await pc.setLocalDescription(offer);
          const sdpResponse = await fetch(`${baseUrl}/v1/realtime/calls`, {
            method: "POST",
            body: offer.sdp,
            headers: { Authorization: `Bearer ${EPHEMERAL_KEY}`, "Content-Type": "application/sdp" },
          });
          const location = sdpResponse.headers.get("Location");
          await pc.setRemoteDescription({ type: "answer", sdp: await sdpResponse.text() });

          // Measure what arrives: the peak level of the remote track over time.
          await new Promise((r) => setTimeout(r, 100));
          const ctx = new AudioContext();
          if (!remote) return { error: "no remote stream (ontrack with streams[0] never fired)" };
          const analyser = ctx.createAnalyser();
          ctx.createMediaStreamSource(remote).connect(analyser);
          const buf = new Float32Array(analyser.fftSize);
          let peak = 0;
          const deadline = performance.now() + 20_000;
          while (performance.now() < deadline && peak < 0.02) {
            await new Promise((r) => setTimeout(r, 50));
            analyser.getFloatTimeDomainData(buf);
            let sum = 0;
            for (const x of buf) sum += x * x;
            peak = Math.max(peak, Math.sqrt(sum / buf.length));
          }
          dc.send(JSON.stringify({ type: "response.cancel" }));
          pc.close();
          return { status: sdpResponse.status, location, peak, events };
        },
        { baseUrl: edge.url, EPHEMERAL_KEY: ephemeralKey },
      );
      expect(result).not.toHaveProperty("error");
      expect(result.status).toBe(201);
      expect(result.location).toMatch(/^\/v1\/realtime\/calls\/rtc_/);
      expect(result.peak).toBeGreaterThan(0.02);
      expect(result.events).toContain("session.created");
    } finally {
      appServer.close();
    }
  });
  it("Chromium's own 256 KiB data channel limit: an item that comes back larger is refused with an error, and the relay lives on", async () => {
    const minted = await fetch(`${edge.url}/v1/realtime/client_secrets`, {
      method: "POST",
      headers: { Authorization: `Bearer ${edge.apiKey}`, "Content-Type": "application/json" },
      body: JSON.stringify({ session: { type: "realtime", model: "gpt-realtime" } }),
    });
    const { value: ephemeralKey } = (await minted.json()) as { value: string };
    // The app's page on its own origin, as in the test above.
    const appServer: Server = createServer((_req, res) => res.end("<!doctype html><title>app</title>"));
    await new Promise<void>((r) => appServer.listen(0, "127.0.0.1", r));
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${(appServer.address() as { port: number }).port}/`);
    const result = await page.evaluate(
      async ({ baseUrl, key }) => {
        const pc = new RTCPeerConnection();
        const ms = await navigator.mediaDevices.getUserMedia({ audio: true });
        pc.addTrack(ms.getTracks()[0]!);
        const dc = pc.createDataChannel("oai-events");
        const events: { type: string; error?: { code: string; message: string } }[] = [];
        dc.addEventListener("message", (e) => events.push(JSON.parse(e.data)));
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        const limit = Number(/a=max-message-size:(\d+)/.exec(offer.sdp!)?.[1]);
        const answer = await fetch(`${baseUrl}/v1/realtime/calls`, {
          method: "POST",
          body: offer.sdp,
          headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/sdp" },
        });
        await pc.setRemoteDescription({ type: "answer", sdp: await answer.text() });
        const until = async (check: () => boolean, ms: number) => {
          const deadline = performance.now() + ms;
          while (!check() && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
          return check();
        };
        if (!(await until(() => events.some((e) => e.type === "session.created"), 15_000)))
          return { error: "no session.created", limit, events: events.map((e) => e.type) };
        // 262,063 bytes: under the relay's limit on the way in, over Chrome's once the model
        // echoes the item back in conversation.item.added / .done.
        const create = (text: string) =>
          JSON.stringify({
            type: "conversation.item.create",
            item: { type: "message", role: "user", content: [{ type: "input_text", text }] },
          });
        dc.send(create("y".repeat(262_063 - create("").length)));
        await until(() => events.some((e) => e.type === "error"), 10_000);
        // The call goes on: the next event still gets its answer.
        dc.send(JSON.stringify({ type: "input_audio_buffer.clear" }));
        await until(() => events.some((e) => e.type === "input_audio_buffer.cleared"), 10_000);
        pc.close();
        return {
          limit,
          events: events.map((e) => e.type),
          errors: events.filter((e) => e.error).map((e) => e.error!),
        };
      },
      { baseUrl: edge.url, key: ephemeralKey },
    );
    await page.close();
    appServer.close();
    expect(result).not.toHaveProperty("error");
    expect(result.limit).toBe(262_144);
    expect(result.errors!.length).toBeGreaterThan(0);
    expect(result.errors![0]).toMatchObject({ code: "event_too_large" });
    expect(result.errors![0]!.message).toMatch(
      /conversation\.item\.\w+ \(\d+ bytes\).*max-message-size:262144/,
    );
    expect(result.events).toContain("input_audio_buffer.cleared");
    expect((await fetch(`${relay.url}/healthz`)).status).toBe(200);
  });

  it("tells the user when the microphone is refused", async () => {
    const page = await browser.newPage();
    await page.addInitScript(() => {
      // What the browser does when the user clicks "Block" on the microphone prompt.
      navigator.mediaDevices.getUserMedia = () =>
        Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
    });
    await page.goto(`${edge.url}/`);
    await page.click("#talk");
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.textContent("#error")).toMatch(/microphone is blocked/i);
    expect(await page.textContent("#talk")).toBe("Talk");
    await page.close();
  });

  // Last: it kills the relay.
  it("tells the user when the call drops and when no relay is available", async () => {
    const page = await browser.newPage();
    await page.goto(`${edge.url}/`);
    await page.click("#talk");
    await page.waitForFunction(() => document.querySelector("#talk")?.textContent === "Hang up", null, {
      timeout: 20_000,
    });
    await relay.stop("SIGKILL");
    await page.waitForSelector("#error:not([hidden])", { timeout: 30_000 });
    // The demo tries to resume the call; with its only relay gone, it says it could not.
    expect(await page.textContent("#error")).toMatch(/relay was lost and the call could not resume/i);
    expect(await page.textContent("#talk")).toBe("Talk");

    // Once the edge has missed three heartbeats, a new call is refused with a clear message.
    await waitForRelayAtEdge(edge, relay.id, false);
    await page.click("#talk");
    await page.waitForFunction(
      () => /no relay/i.test(document.querySelector("#error")?.textContent ?? ""),
      null,
      {
        timeout: 20_000,
      },
    );
    await page.screenshot({ path: join(ARTIFACTS, "demo-no-relay.png") });
    await page.close();
  });
});
