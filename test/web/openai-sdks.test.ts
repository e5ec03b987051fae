// OpenAI's own clients against Earshot with only the base URL changed, as a real app runs them:
// the app's server mints with the `openai` package (Node), and its page, on an origin other than
// the edge's, runs `@openai/agents-realtime` and the `openai` package bundled by esbuild, in
// Debian's Chromium with a fake microphone. Through the edge (wrangler dev), relay processes,
// and the built-in agent or a scripted upstream that calls the session's tool.
import { build } from "esbuild";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import type { Browser, Page, Request as PageRequest } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium, writeSpeechWav } from "./fixtures.ts";
import { ScriptedUpstream } from "./scripted-upstream.ts";
import type { AgentsRunOptions, AgentsRunResult, OpenAICallOptions, PlacedCall } from "./sdk-page.ts";
import { freePort, root, startProcess, waitUntil, type ManagedProcess } from "../support/loopback.ts";
import {
  startEdge,
  startRelayProcess,
  waitForRelayAtEdge,
  type Edge,
  type RelayProcess,
} from "../support/relays.ts";

/** Each relay serves one region, so a test picks its upstream with `?region=`. */
const AGENT_REGION = "agent";
const SCRIPTED_REGION = "scripted";

const MINTED_SESSION = {
  type: "realtime",
  model: "gpt-realtime",
  instructions: "You are the assistant of Earshot's SDK test. Answer briefly.",
  audio: { output: { voice: "marin" } },
} as const;

/** The app's own origin: its page and its bundle of OpenAI's clients, nothing from the edge. */
async function startAppServer(bundle: string): Promise<{ url: string; server: Server }> {
  const page = `<!doctype html><title>app</title><script type="module" src="/sdk-page.js"></script>`;
  const server = createServer((req, res) => {
    if (req.url === "/sdk-page.js") res.writeHead(200, { "content-type": "text/javascript" }).end(bundle);
    else res.writeHead(200, { "content-type": "text/html" }).end(page);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, server };
}

/** The page's bundle, built as an app would build it (and as scripts/build-web.ts builds web/). */
async function bundlePage(outdir: string): Promise<string> {
  await build({
    entryPoints: { "sdk-page": join(root, "test/web/sdk-page.ts") },
    outdir,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    logLevel: "warning",
  });
  return readFileSync(join(outdir, "sdk-page.js"), "utf8");
}

describe(
  "OpenAI's own clients, from the app's own origin, with only the base URL changed",
  { timeout: 120_000 },
  () => {
    let dir: string;
    let agent: ManagedProcess;
    let scripted: ScriptedUpstream;
    let edge: Edge;
    let relays: RelayProcess[] = [];
    let app: { url: string; server: Server };
    let browser: Browser;
    /** The app's server: the `openai` package with the edge as its base URL and the API key. */
    let server: OpenAI;

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "earshot-sdks-"));
      // A question, then a pause long enough for the longest reply (the built-in agent reads a
      // tool result out in about 4 s) before the file loops and the question barges in.
      const wav = join(dir, "speech.wav");
      const [bundle] = await Promise.all([
        bundlePage(join(dir, "build")),
        writeSpeechWav(wav, "What is the weather in Paris?", 10),
      ]);
      const agentPort = await freePort();
      agent = startProcess("agent", ["agent/main.ts"], {
        AGENT_PORT: String(agentPort),
        AGENT_REPLY: "speak",
      });
      scripted = await ScriptedUpstream.start(() => ({ city: "Paris" }));
      edge = await startEdge();
      relays = await Promise.all([
        startRelayProcess({
          edge,
          region: AGENT_REGION,
          inferenceUrl: `ws://127.0.0.1:${agentPort}/v1/realtime`,
        }),
        // The scripted model answers on its own schedule: no barge-in from the relay's VAD.
        startRelayProcess({
          edge,
          region: SCRIPTED_REGION,
          inferenceUrl: scripted.url,
          env: { RELAY_VAD: "off" },
        }),
      ]);
      await Promise.all(relays.map((relay) => waitForRelayAtEdge(edge, relay.id)));
      app = await startAppServer(bundle);
      browser = await launchChromium(wav, join(dir, "profile"));
      server = new OpenAI({ apiKey: edge.apiKey, baseURL: `${edge.url}/v1`, maxRetries: 0 });
    }, 120_000);

    afterAll(async () => {
      await browser?.close();
      app?.server.close();
      await Promise.all(relays.map((relay) => relay.stop()));
      await edge?.stop();
      await scripted?.close();
      await agent?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    async function appPage(): Promise<{ page: Page; errors: string[]; requests: PageRequest[] }> {
      const page = await browser.newPage();
      const errors: string[] = [];
      const requests: PageRequest[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
      page.on("request", (r) => r.url().startsWith(edge.url) && requests.push(r));
      await page.goto(app.url);
      await page.waitForFunction(() => "sdkPage" in window);
      expect(new URL(page.url()).origin).not.toBe(new URL(edge.url).origin);
      return { page, errors, requests };
    }

    function runAgents(page: Page, options: AgentsRunOptions): Promise<AgentsRunResult> {
      return page.evaluate((o) => window.sdkPage.runAgentsSession(o), options);
    }

    it("@openai/agents-realtime: a RealtimeSession over WebRTC connects with a secret the openai package minted, and hears the agent's reply", async () => {
      const minted = await server.realtime.clientSecrets.create({ session: MINTED_SESSION });
      expect(minted.value).toMatch(/^ek_/);
      const { page, errors, requests } = await appPage();
      const result = await runAgents(page, {
        callsUrl: `${edge.url}/v1/realtime/calls?region=${AGENT_REGION}`,
        clientSecret: minted.value,
        instructions: MINTED_SESSION.instructions,
        voicedMs: 400,
        timeoutMs: 20_000,
      });
      await page.close();
      expect(result.error).toBeUndefined();
      expect(result.callId).toMatch(/^rtc_/);
      // Its SDP POST crossed origins with the SDK's own header (the preflight let it through).
      const post = requests.find((r) => r.method() === "POST");
      expect(post?.headers()["x-openai-agents-sdk"]).toMatch(/^openai-agents-sdk\./);
      // The agent's reply, heard by the page's analyser on the SDK's audio element.
      expect(result.heard.peakRms).toBeGreaterThan(0.05);
      expect(result.heard.voicedMs).toBeGreaterThanOrEqual(400);
      // The SDK saw the reply start and end (over WebRTC, its audio stays on the media track).
      const types = result.events.map((e) => e.type);
      expect(types).toContain("output_audio_buffer.started");
      expect(types).toContain("response.done");
      // The SDK's view of the session is the minted one, from the first event.
      const created = result.events.find((e) => e.type === "session.created") as
        { session: Record<string, unknown> & { audio?: { output?: { voice?: unknown } } } } | undefined;
      expect(created).toBeDefined();
      expect(types.indexOf("session.created")).toBe(0);
      expect(created!.session).toMatchObject({
        type: "realtime",
        model: MINTED_SESSION.model,
        instructions: MINTED_SESSION.instructions,
      });
      expect(created!.session.audio?.output?.voice).toBe(MINTED_SESSION.audio.output.voice);
      expect(errors).toEqual([]);
    });

    /** The call's state as the app's server reads it, once it has ended. */
    async function endedCall(callId: string): Promise<{ state: string; end_reason: string | null }> {
      return waitUntil("the call to end", async () => {
        const res = await fetch(`${edge.url}/v1/realtime/calls/${callId}`, {
          headers: { authorization: `Bearer ${edge.apiKey}` },
        });
        const call = (await res.json()) as { state: string; end_reason: string | null };
        return call.state === "ended" ? call : undefined;
      });
    }

    it("the openai package in the browser, with the client secret: calls.create places the call, calls.hangup ends it", async () => {
      const minted = await server.realtime.clientSecrets.create({ session: MINTED_SESSION });
      const { page, errors, requests } = await appPage();
      const options: OpenAICallOptions = {
        placedBy: "browser",
        baseURL: `${edge.url}/v1`,
        clientSecret: minted.value,
        region: AGENT_REGION,
        voicedMs: 300,
        timeoutMs: 20_000,
      };
      const result = await page.evaluate((o) => window.sdkPage.runOpenAICall(o), options);
      await page.close();
      expect(result.error).toBeUndefined();
      expect(result.callId).toMatch(/^rtc_/);
      expect(result.answerType).toBe("application/sdp");
      // With only an sdp, the package sends it raw (its "raw multipart alternative"), with its
      // X-Stainless-* headers, across origins.
      const create = requests.find((r) => r.method() === "POST" && r.url().includes("/v1/realtime/calls?"));
      expect(create, requests.map((r) => `${r.method()} ${r.url()}`).join("\n")).toBeDefined();
      const headers = create!.headers();
      expect(headers["content-type"]).toBe("application/sdp");
      expect(headers["x-stainless-lang"]).toBe("js");
      expect(headers["x-stainless-runtime"]).toMatch(/^browser:/);
      expect(create!.postData()).toMatch(/^v=0\r\n/);
      const hangup = requests.find((r) => r.url().endsWith(`/v1/realtime/calls/${result.callId}/hangup`));
      expect(hangup?.method()).toBe("POST");

      expect(result.events[0]?.type).toBe("session.created");
      expect(result.heard.voicedMs).toBeGreaterThanOrEqual(300);
      expect(result.hangup).toEqual({ ok: true });
      expect(result.channelClosedAfterHangup).toBe(true);
      expect((await endedCall(result.callId!)).end_reason).toBe("hangup");
      expect(errors).toEqual([]);
    });

    it("the openai package on the app's server: calls.create with its multipart body (sdp and session), then calls.hangup", async () => {
      // What the package puts on the wire, read at its fetch.
      const sent: { contentType: string | null; parts: Record<string, { type: string; text: string }> }[] =
        [];
      const placing = new OpenAI({
        apiKey: edge.apiKey,
        baseURL: `${edge.url}/v1`,
        maxRetries: 0,
        fetch: async (url: string | URL | Request, init?: RequestInit) => {
          if (init?.body instanceof FormData) {
            const parts: Record<string, { type: string; text: string }> = {};
            for (const [name, value] of init.body.entries()) {
              parts[name] =
                typeof value === "string"
                  ? { type: "", text: value }
                  : { type: value.type, text: await value.text() };
            }
            sent.push({ contentType: new Headers(init.headers).get("content-type"), parts });
          }
          return fetch(url, init);
        },
      });
      const { page, errors } = await appPage();
      await page.exposeFunction("placeCallOnAppServer", async (sdp: string): Promise<PlacedCall> => {
        const { data, response } = await placing.realtime.calls
          .create({ sdp, session: MINTED_SESSION }, { query: { region: AGENT_REGION } })
          .withResponse();
        return {
          sdp: await data.text(),
          contentType: data.headers.get("content-type"),
          callId: response.headers.get("location")?.split("/").pop(),
        };
      });
      await page.exposeFunction("hangUpOnAppServer", (callId: string) =>
        placing.realtime.calls.hangup(callId),
      );
      await page.evaluate(() => {
        const w = window as unknown as Record<string, (arg: string) => Promise<never>>;
        window.appServer = { placeCall: w.placeCallOnAppServer!, hangup: w.hangUpOnAppServer! };
      });
      const result = await page.evaluate((o) => window.sdkPage.runOpenAICall(o), {
        placedBy: "app-server",
        baseURL: `${edge.url}/v1`,
        voicedMs: 300,
        timeoutMs: 20_000,
      } satisfies OpenAICallOptions);
      await page.close();
      expect(result.error).toBeUndefined();
      expect(sent).toHaveLength(1);
      // The multipart body: the offer as application/sdp, the session as application/json.
      expect(sent[0]!.contentType).toBeNull(); // fetch sets multipart/form-data with its boundary
      expect(sent[0]!.parts.sdp).toMatchObject({ type: "application/sdp" });
      expect(sent[0]!.parts.sdp!.text).toMatch(/^v=0\r\n/);
      expect(sent[0]!.parts.session!.type).toBe("application/json");
      expect(JSON.parse(sent[0]!.parts.session!.text)).toEqual(MINTED_SESSION);

      expect(result.callId).toMatch(/^rtc_/);
      expect(result.answerType).toBe("application/sdp");
      expect(result.heard.voicedMs).toBeGreaterThanOrEqual(300);
      expect(result.hangup).toEqual({ ok: true });
      expect(result.channelClosedAfterHangup).toBe(true);
      expect((await endedCall(result.callId!)).end_reason).toBe("hangup");
      // The call runs under the session the server sent.
      const created = result.events.find((e) => e.type === "session.created") as
        { session: Record<string, unknown> } | undefined;
      expect(created?.session).toMatchObject({ instructions: MINTED_SESSION.instructions });
      expect(errors).toEqual([]);
    });

    /** A tool call through the Agents SDK in the page: a secret minted, the call placed in `region`. */
    async function toolCall(region: string) {
      const minted = await server.realtime.clientSecrets.create({ session: MINTED_SESSION });
      const { page, errors } = await appPage();
      const result = await runAgents(page, {
        callsUrl: `${edge.url}/v1/realtime/calls?region=${region}`,
        clientSecret: minted.value,
        instructions: MINTED_SESSION.instructions,
        weatherReport: "Sunny and 21 degrees in",
        voicedMs: 800,
        timeoutMs: 20_000,
      });
      await page.close();
      expect(result.error).toBeUndefined();
      return { result, errors };
    }

    it("tools end to end: the model calls the session's tool, the SDK's tool() runs in the page, and the reply speaks its output", async () => {
      const { result, errors } = await toolCall(SCRIPTED_REGION);
      // The SDK sent its tool in session.update, through the relay, to the model.
      const offered = scripted.sessionUpdates.flatMap((u) =>
        ((u.session as { tools?: { name: string }[] }).tools ?? []).map((t) => t.name),
      );
      expect(offered).toContain("get_weather");
      // The page ran the tool with the model's arguments…
      expect(result.toolCalls).toEqual([{ city: "Paris" }]);
      // …and its output reached the model as the call's function_call_output.
      const [call] = scripted.calls;
      expect(call).toMatchObject({ tool: "get_weather", arguments: '{"city":"Paris"}' });
      expect(call!.output).toBe("Sunny and 21 degrees in Paris.");
      // The spoken reply that reads it out: heard in the page, and in the SDK's history.
      expect(result.heard.voicedMs).toBeGreaterThanOrEqual(800);
      expect(result.transcripts.join(" ")).toContain(call!.output);
      expect(errors).toEqual([]);
    });

    it("tools with the built-in agent: it calls the SDK's tool with arguments its schema accepts and speaks the output", async () => {
      const { result, errors } = await toolCall(AGENT_REGION);
      // The agent makes up a city (a string, as the schema says); the page's tool() ran with it.
      expect(result.toolCalls.length).toBeGreaterThan(0);
      const { city } = result.toolCalls[0]!;
      expect(typeof city).toBe("string");
      expect(result.heard.voicedMs).toBeGreaterThanOrEqual(800);
      expect(result.transcripts.join(" ")).toContain(`Sunny and 21 degrees in ${city}.`);
      expect(errors).toEqual([]);
    });
  },
);
