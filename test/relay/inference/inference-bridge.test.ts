import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { createServer as createTcpServer } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { WebSocketServer } from "ws";
import { MAX_CLIENT_EVENT_BYTES } from "../../../protocol/realtime.ts";
import { AgentServer } from "../../../agent/agent-server.ts";
import {
  ERROR_REPLIES_PER_SECOND,
  ERROR_REPLY_BURST,
  InferenceBridge,
  MAX_OPEN_RESPONSES,
} from "../../../relay/inference/inference-bridge.ts";
import { ScriptedModel } from "../../support/scripted-model.ts";
import { ConfigError, loadConfig, type InferenceConfig } from "../../../relay/config.ts";
import { testConfig } from "../../support/relays.ts";
import { speakInto, testCall, testMetrics, type TestCall } from "./bridge-fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { concat, dbfs, dominantFrequency, sine } from "../../support/audio.ts";

let agent: AgentServer;
const cleanups: (() => void | Promise<void>)[] = [];

beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, speed: 4 });
});
afterAll(() => agent.close());
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function config(url: string, overrides: Partial<InferenceConfig> = {}): InferenceConfig {
  return {
    ...testConfig({ INFERENCE_URL: url }).inference,
    retryBaseMs: 20,
    retryMaxMs: 100,
    ...overrides,
  };
}

function start(
  url: string,
  overrides: Partial<InferenceConfig> = {},
): { call: TestCall; bridge: InferenceBridge } {
  const call = testCall();
  const bridge = new InferenceBridge(call.ctx, { config: config(url, overrides) });
  call.downlink.bridge = bridge;
  cleanups.push(() => {
    bridge.close();
    bridge.close();
    call.close();
  });
  return { call, bridge };
}

function openChannel(call: TestCall, bridge: InferenceBridge): void {
  call.channel.open = true;
  bridge.onChannelOpen();
}

/** A call on the built-in agent whose client has asked for a reply and seen it start. */
async function replying(): Promise<{ call: TestCall; bridge: InferenceBridge; responseId: string }> {
  const { call, bridge } = start(agent.url);
  openChannel(call, bridge);
  await call.channel.waitFor("session.created");
  bridge.onClientMessage(JSON.stringify({ type: "response.create" }));
  const created = await call.channel.waitFor("response.created");
  return { call, bridge, responseId: (created.response as { id: string }).id };
}

async function counter(name: string, labels: Record<string, string>): Promise<number> {
  const metric = await testMetrics.registry.getSingleMetric(name)!.get();
  return metric.values
    .filter((v) => Object.entries(labels).every(([k, value]) => v.labels[k] === value))
    .reduce((n, v) => n + v.value, 0);
}

const utterance = (hz: number, seconds: number) =>
  concat([sine(hz, seconds * 1000, 8000), new Int16Array(24_000 * 0.8)]);

describe("InferenceBridge against the built-in agent", () => {
  it("opens the model session before the channel opens and delivers its events once it does", async () => {
    const { call, bridge } = start(agent.url);
    await waitFor(() => bridge.upstreamAttempts === 1 && agent.connections > 0, 5000, "upstream connection");
    // Nothing is sent on a closed channel; events wait.
    await new Promise((r) => setTimeout(r, 100));
    expect(call.channel.events).toEqual([]);
    openChannel(call, bridge);
    const created = await call.channel.waitFor("session.created");
    expect(call.channel.events[0]!.type).toBe("session.created");
    expect(created.session).toMatchObject({
      instructions: "Be brief.",
      audio: {
        input: { format: { type: "audio/pcm", rate: 24000 } },
        output: { format: { type: "audio/pcm", rate: 24000 } },
      },
    });
  });

  it("carries the user's speech up and the reply's audio down the downlink, never the channel", async () => {
    const { call, bridge } = start(agent.url + "?reply=echo");
    openChannel(call, bridge);
    await call.channel.waitFor("session.created");
    await speakInto(bridge, utterance(550, 0.8), false);
    await call.channel.waitFor("input_audio_buffer.speech_started");
    await call.channel.waitFor("response.done");
    await waitFor(() => call.downlink.queuedMs === 0, 5000, "playout");
    const heard = concat(call.downlink.sent.map((f) => f.pcm));
    expect(heard.length / 24).toBeGreaterThanOrEqual(780);
    expect(dominantFrequency(heard, [330, 440, 550, 660])).toBe(550);
    expect(dbfs(heard)).toBeGreaterThan(-20);
    expect(call.channel.ofType("response.output_audio.delta")).toEqual([]);
    expect(call.channel.ofType("response.audio.delta")).toEqual([]);
    // The relay reports playout as OpenAI does over WebRTC.
    const responseId = (call.channel.ofType("response.created")[0]!.response as { id: string }).id;
    await call.channel.waitFor("output_audio_buffer.started", (e) => e.response_id === responseId);
    await call.channel.waitFor("output_audio_buffer.stopped", (e) => e.response_id === responseId);
  });

  it("barges in on speech_started: flushes at once, truncates to exactly what was sent, clears", async () => {
    const { call, bridge, responseId } = await replying();
    await waitFor(() => call.downlink.sent.length >= 40, 10_000, "800 ms of reply played");
    // The user talks over the assistant.
    void speakInto(bridge, utterance(440, 0.6));
    const started = await call.channel.waitFor("input_audio_buffer.speech_started");
    const flush = call.downlink.flushes[0]!;
    expect(flush).toBeDefined();
    expect(flush.at).toBeLessThanOrEqual(started.at);
    // No assistant frame left the pacer after the flush.
    const lastSent = call.downlink.sent.at(-1)!;
    expect(lastSent.at).toBeLessThanOrEqual(flush.at);
    const truncated = await call.channel.waitFor("conversation.item.truncated");
    const itemId = truncated.item_id as string;
    expect(truncated.audio_end_ms).toBe(call.downlink.ledger.sentMs(itemId));
    const heardMs = call.downlink.sent.filter((f) => f.itemId === itemId).length * 20;
    expect(Math.abs((truncated.audio_end_ms as number) - heardMs)).toBeLessThanOrEqual(20);
    expect(truncated.audio_end_ms).toBeLessThan(call.downlink.ledger.generatedMs(itemId));
    await call.channel.waitFor("output_audio_buffer.cleared", (e) => e.response_id === responseId);
    const done = await call.channel.waitFor(
      "response.done",
      (e) => (e.response as { id: string }).id === responseId,
    );
    expect((done.response as { status: string }).status).toBe("cancelled");
    // The relay's own cancel raced the agent's; its error is not the client's business.
    expect(call.channel.ofType("error")).toEqual([]);
    expect(
      call.channel.ofType("output_audio_buffer.stopped").filter((e) => e.response_id === responseId),
    ).toEqual([]);
  });

  it("on output_audio_buffer.clear drops the rest of the reply, including late deltas", async () => {
    const { call, bridge, responseId } = await replying();
    await waitFor(() => call.downlink.pushes.length >= 2, 10_000, "first deltas");
    const droppedBefore = await counter("earshot_relay_inference_audio_dropped_total", {
      reason: "cancelled_response",
    });
    bridge.onClientMessage(JSON.stringify({ type: "output_audio_buffer.clear" }));
    const clearedAt = performance.now();
    expect(call.downlink.queuedMs).toBe(0);
    await call.channel.waitFor("output_audio_buffer.cleared");
    // The agent keeps generating (the client did not cancel); none of it is played.
    await call.channel.waitFor("response.done", (e) => (e.response as { id: string }).id === responseId);
    expect(call.downlink.pushes.filter((p) => p.at > clearedAt)).toEqual([]);
    expect(call.downlink.sent.filter((f) => f.at > clearedAt + 20)).toEqual([]);
    const droppedAfter = await counter("earshot_relay_inference_audio_dropped_total", {
      reason: "cancelled_response",
    });
    expect(droppedAfter).toBeGreaterThan(droppedBefore);
  });

  it("answers malformed client events with error events and keeps the call", async () => {
    const { call, bridge } = start(agent.url);
    openChannel(call, bridge);
    await call.channel.waitFor("session.created");
    bridge.onClientMessage("{oops");
    bridge.onClientMessage("[1,2]");
    bridge.onClientMessage(JSON.stringify({ type: 7 }));
    bridge.onClientMessage(
      JSON.stringify({
        type: "conversation.item.truncate",
        item_id: "i",
        content_index: 0,
        audio_end_ms: "5",
      }),
    );
    // The size cap: one byte past it is refused...
    const padding = (size: number) => {
      const skeleton = JSON.stringify({
        type: "conversation.item.create",
        item: { type: "message", role: "user", content: [{ type: "input_text", text: "" }] },
      });
      return JSON.stringify({
        type: "conversation.item.create",
        item: {
          type: "message",
          role: "user",
          content: [{ type: "input_text", text: "x".repeat(size - skeleton.length) }],
        },
      });
    };
    const atLimit = padding(MAX_CLIENT_EVENT_BYTES);
    expect(Buffer.byteLength(atLimit)).toBe(MAX_CLIENT_EVENT_BYTES);
    bridge.onClientMessage(padding(MAX_CLIENT_EVENT_BYTES + 1));
    await waitFor(() => call.channel.ofType("error").length >= 5, 5000, "five errors");
    expect(call.channel.ofType("error").map((e) => (e.error as { code: string }).code)).toEqual([
      "invalid_json",
      "invalid_event",
      "missing_type",
      "invalid_type", // a string where OpenAI takes an integer
      "message_too_large",
    ]);
    expect((call.channel.ofType("error")[3]!.error as { param: string }).param).toBe("audio_end_ms");
    // ...and one at the cap goes through to the model.
    bridge.onClientMessage(atLimit);
    await call.channel.waitFor(
      "conversation.item.added",
      (e) => (e.item as { role: string }).role === "user",
    );
    bridge.onClientMessage(JSON.stringify({ type: "response.create" }));
    await call.channel.waitFor("response.created");
    expect(call.endings).toEqual([]);
  });

  it("answers a flood of malformed events up to its error budget, counts them all, and keeps the call", async () => {
    const { call, bridge } = start(agent.url);
    openChannel(call, bridge);
    await call.channel.waitFor("session.created");
    const rejected = await counter("earshot_relay_client_events_rejected_total", { code: "invalid_json" });
    const unanswered = await counter("earshot_relay_client_error_replies_suppressed_total", {});
    // Sent in one go, faster than the budget refills: the burst is answered, one more is not.
    for (let i = 0; i < ERROR_REPLY_BURST; i++) bridge.onClientMessage(`{bad ${i}`);
    bridge.onClientMessage("{one too many");
    await waitFor(() => call.channel.ofType("error").length >= ERROR_REPLY_BURST, 5000, "the burst");
    await new Promise((r) => setTimeout(r, 50));
    expect(call.channel.ofType("error").length).toBe(ERROR_REPLY_BURST);
    for (let i = 0; i < 200; i++) bridge.onClientMessage("{flood");
    expect(await counter("earshot_relay_client_events_rejected_total", { code: "invalid_json" })).toBe(
      rejected + ERROR_REPLY_BURST + 201,
    );
    // At most one token came back while waiting above; the rest of the flood went unanswered.
    expect(await counter("earshot_relay_client_error_replies_suppressed_total", {})).toBeGreaterThanOrEqual(
      unanswered + 200,
    );
    // The budget refills: a second later the client's next mistake is answered again...
    await new Promise((r) => setTimeout(r, 1000 / ERROR_REPLIES_PER_SECOND + 50));
    const before = call.channel.ofType("error").length;
    bridge.onClientMessage("[1]");
    await waitFor(() => call.channel.ofType("error").length === before + 1, 5000, "answered again");
    expect((call.channel.ofType("error").at(-1)!.error as { code: string }).code).toBe("invalid_event");
    // ...and valid events went on working throughout.
    bridge.onClientMessage(JSON.stringify({ type: "response.create" }));
    await call.channel.waitFor("response.created");
    expect(call.endings).toEqual([]);
  });

  it("reconnects after a dropped upstream and re-sends the session", async () => {
    const { call, bridge } = start(agent.url);
    openChannel(call, bridge);
    await call.channel.waitFor("session.created");
    agent.dropConnections();
    const reconnected = await call.channel.waitFor("earshot.inference.reconnected");
    expect(reconnected.session).toMatchObject({ instructions: "Be brief." });
    expect(bridge.upstreamAttempts).toBe(2);
    expect(call.channel.ofType("session.created")).toHaveLength(1);
    expect(call.channel.ofType("session.updated")).toEqual([]);
    expect(call.endings).toEqual([]);
  });
  it("a reply cut by a dropped upstream ends for the client: response.done failed, then the reconnect", async () => {
    const { call, bridge, responseId } = await replying();
    await waitFor(() => call.downlink.sent.length >= 10, 10_000, "the reply playing");
    agent.dropConnections();
    await call.channel.waitFor("earshot.inference.reconnected");
    const done = call.channel.ofType("response.done");
    expect(done).toHaveLength(1);
    expect(done[0]!.response).toMatchObject({
      id: responseId,
      object: "realtime.response",
      status: "failed",
      status_details: { type: "failed", error: { type: "server_error", code: "inference_lost" } },
      usage: null,
    });
    // It comes after the audio was cleared and before the new model session is announced.
    const types = call.channel.events.map((e) => e.type);
    expect(types.indexOf("output_audio_buffer.cleared")).toBeLessThan(types.indexOf("response.done"));
    expect(types.indexOf("response.done")).toBeLessThan(types.indexOf("earshot.inference.reconnected"));
    // A later reply from the new session is followed as usual: nothing more is made up.
    bridge.onClientMessage(JSON.stringify({ type: "response.create" }));
    await call.channel.waitFor("response.done", (e) => (e.response as { id: string }).id !== responseId);
    expect(
      call.channel.ofType("response.done").map((e) => (e.response as { status: string }).status),
    ).toEqual(["failed", "completed"]);
  });
});

describe("InferenceBridge: responses a lost model session leaves open", () => {
  it(`are ended for the client up to ${MAX_OPEN_RESPONSES} at once; one past the limit is not followed`, async () => {
    const model = await ScriptedModel.start();
    cleanups.push(() => model.close());
    const { call, bridge } = start(model.url);
    openChannel(call, bridge);
    await call.channel.waitFor("session.created");
    const opened = MAX_OPEN_RESPONSES + 1;
    for (let i = 0; i < opened; i++) {
      model.inject({ type: "response.created", response: { id: `resp_open${i}`, status: "in_progress" } });
    }
    await waitFor(() => call.channel.ofType("response.created").length === opened, 5000, "responses opened");
    for (const session of model.sessions) session.socket.terminate();
    await call.channel.waitFor("earshot.inference.reconnected");
    const failed = call.channel
      .ofType("response.done")
      .map((e) => e.response as { id: string; status: string });
    expect(failed.map((r) => r.id)).toEqual(
      Array.from({ length: MAX_OPEN_RESPONSES }, (_, i) => `resp_open${i}`),
    );
    expect(new Set(failed.map((r) => r.status))).toEqual(new Set(["failed"]));
  });
});

describe("InferenceBridge when the upstream fails", () => {
  it("an upstream that goes away mid-call: bounded retries, an error event, the call ends inference_lost", async () => {
    const own = await AgentServer.start({ port: 0 });
    const { call, bridge } = start(own.url, { maxRetries: 2 });
    openChannel(call, bridge);
    await call.channel.waitFor("session.created");
    const droppedAt = performance.now();
    await own.close();
    const ended = await call.ended;
    expect(ended.reason).toBe("inference_lost");
    expect(bridge.upstreamAttempts).toBe(3); // the first connection and two retries
    expect(performance.now() - droppedAt).toBeLessThan(2000);
    const error = await call.channel.waitFor("error");
    expect(error.error).toMatchObject({ type: "server_error", code: "inference_lost" });
    expect(call.endings).toHaveLength(1);
  });

  async function httpUpstream(
    status: number,
  ): Promise<{ url: string; requests: () => number; close: () => Promise<void> }> {
    let requests = 0;
    const server: Server = createServer((_req, res) => res.writeHead(status).end());
    server.on("upgrade", (_req, socket: Socket) => {
      requests++;
      socket.end(`HTTP/1.1 ${status} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    return {
      url: `ws://127.0.0.1:${port}/v1/realtime`,
      requests: () => requests,
      close: () => new Promise((r) => server.close(() => r())),
    };
  }

  it("a refused key is fatal: no retry, inference_error", async () => {
    const upstream = await httpUpstream(401);
    cleanups.push(upstream.close);
    const { call, bridge } = start(upstream.url, { maxRetries: 3 });
    openChannel(call, bridge);
    expect((await call.ended).reason).toBe("inference_error");
    expect(upstream.requests()).toBe(1);
    expect(bridge.upstreamAttempts).toBe(1);
    expect((await call.channel.waitFor("error")).error).toMatchObject({ code: "inference_error" });
  });

  it("a 503 is retried exactly maxRetries times with backoff, then inference_lost", async () => {
    const upstream = await httpUpstream(503);
    cleanups.push(upstream.close);
    const started = performance.now();
    const { call } = start(upstream.url, { maxRetries: 3, retryBaseMs: 40, retryMaxMs: 1000 });
    expect((await call.ended).reason).toBe("inference_lost");
    expect(upstream.requests()).toBe(4);
    // Backoff 40, 80, 160 ms with jitter down to half: at least 140 ms in all.
    expect(performance.now() - started).toBeGreaterThanOrEqual(140);
  });

  it("does not offer permessage-deflate, even to an upstream that would take it", async () => {
    const upstream = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: true });
    cleanups.push(() => new Promise((r) => upstream.close(() => r())));
    const offered: (string | undefined)[] = [];
    const firstEvent = new Promise<string>((resolve) =>
      upstream.on("connection", (socket, request) => {
        offered.push(request.headers["sec-websocket-extensions"]);
        socket.once("message", (data) => resolve(String(data)));
      }),
    );
    await new Promise((r) => upstream.once("listening", r));
    start(`ws://127.0.0.1:${(upstream.address() as AddressInfo).port}/`);
    // The bridge's first event, its session.update, arrives uncompressed over a plain socket.
    expect(JSON.parse(await firstEvent)).toMatchObject({ type: "session.update" });
    expect(offered).toEqual([undefined]);
  });

  it("a connect that never completes times out and counts as retryable", async () => {
    const sockets: Socket[] = [];
    const silent = createTcpServer((socket) => sockets.push(socket));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    cleanups.push(() => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => silent.close(() => r()));
    });
    const url = `ws://127.0.0.1:${(silent.address() as AddressInfo).port}/`;
    const started = performance.now();
    const { call, bridge } = start(url, { maxRetries: 1, connectTimeoutMs: 150 });
    expect((await call.ended).reason).toBe("inference_lost");
    expect(bridge.upstreamAttempts).toBe(2);
    expect(performance.now() - started).toBeGreaterThanOrEqual(300);
    expect(call.endings[0]!.message).toMatch(/timed out after 150 ms/);
  });

  it("uplink audio while the upstream is not open is counted as dropped, never silently lost", async () => {
    const upstream = await httpUpstream(401);
    cleanups.push(upstream.close);
    const { call, bridge } = start(upstream.url, { maxRetries: 0 });
    await call.ended;
    const before = await counter("earshot_relay_inference_audio_dropped_total", {
      direction: "uplink",
      reason: "upstream_not_open",
    });
    await speakInto(bridge, sine(440, 100, 8000), false);
    const after = await counter("earshot_relay_inference_audio_dropped_total", {
      direction: "uplink",
      reason: "upstream_not_open",
    });
    expect(after - before).toBe(5);
  });
});

describe("inference config", () => {
  const inference = (env: Record<string, string>) =>
    loadConfig({ EARSHOT_RELAY_SECRET: "a-secret-of-16-chars", ...env }).inference;
  it("defaults to the built-in agent and names a bad variable", () => {
    expect(inference({}).url).toBe("ws://127.0.0.1:8791/v1/realtime");
    expect(() => inference({ INFERENCE_URL: "http://x" })).toThrow(/INFERENCE_URL/);
    expect(() => inference({ INFERENCE_HEADERS: "nope" })).toThrow(/INFERENCE_HEADERS/);
    expect(() => inference({ INFERENCE_MAX_RETRIES: "11" })).toThrow(ConfigError);
    expect(() => inference({ INFERENCE_MAX_RETRIES: "11" })).toThrow(/INFERENCE_MAX_RETRIES/);
    expect(inference({ INFERENCE_MAX_RETRIES: "10" }).maxRetries).toBe(10);
    expect(inference({ INFERENCE_HEADERS: '{"OpenAI-Beta":"realtime=v1"}' }).headers).toEqual({
      "OpenAI-Beta": "realtime=v1",
    });
  });
});
