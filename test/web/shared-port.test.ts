// A Chromium call through the edge (wrangler dev on workerd) to a relay on its shared UDP port
// (RELAY_UDP_PORT): the browser's offer (BUNDLE, rtcp-mux, mDNS host candidates the edge strips)
// connects through the ufrag router, the agent hears the fake microphone and the page hears the
// agent, and the relay holds no UDP socket but the shared one.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium, writeSpeechWav } from "./fixtures.ts";
import { freePort, freeUdpPort, type ManagedProcess, startProcess } from "../support/loopback.ts";
import {
  type Edge,
  type RelayProcess,
  startEdge,
  startRelayProcess,
  udpPortsOf,
  waitForRelayAtEdge,
} from "../support/relays.ts";

interface DemoState {
  peakOutputLevel: number;
  events: string[];
}

describe("Chromium through the edge to a relay's shared UDP port", { timeout: 120_000 }, () => {
  let dir: string;
  let agent: ManagedProcess;
  let edge: Edge;
  let relay: RelayProcess;
  let browser: Browser;
  let udpPort: number;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "earshot-shared-port-"));
    const wav = join(dir, "speech.wav");
    await writeSpeechWav(wav, "Hello agent, can you hear me?", 2.5);
    const agentPort = await freePort();
    agent = startProcess("agent", ["agent/main.ts"], { AGENT_PORT: String(agentPort), AGENT_REPLY: "speak" });
    udpPort = await freeUdpPort();
    edge = await startEdge();
    relay = await startRelayProcess({
      edge,
      inferenceUrl: `ws://127.0.0.1:${agentPort}/v1/realtime`,
      env: { RELAY_UDP_PORT: String(udpPort) },
    });
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

  it("talks and hears the agent, with every packet on the one port", async () => {
    expect(udpPortsOf(relay.pid)).toEqual([udpPort]);
    const page = await browser.newPage();
    const pageErrors: string[] = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));
    await page.goto(`${edge.url}/`);
    await page.click("#talk");
    await page.waitForFunction(() => document.querySelector("#talk")?.textContent === "Hang up", null, {
      timeout: 20_000,
    });
    // The agent answers what it heard (uplink), and the page's analyser hears it (downlink).
    await page.waitForFunction(
      () => (window as unknown as { earshotDemo: DemoState }).earshotDemo.peakOutputLevel > 0.05,
      null,
      { timeout: 30_000 },
    );
    const state = await page.evaluate(() => (window as unknown as { earshotDemo: DemoState }).earshotDemo);
    expect(state.events).toContain("input_audio_buffer.speech_started");
    expect(state.events).toContain("output_audio_buffer.started");
    // During the call, the relay holds the shared socket and no other.
    expect((await relay.health()).active_calls).toBe(1);
    expect(udpPortsOf(relay.pid)).toEqual([udpPort]);
    await page.click("#talk");
    expect(pageErrors).toEqual([]);
  });
});
