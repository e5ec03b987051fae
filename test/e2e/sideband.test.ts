// The sideband as OpenAI's own client speaks it, through a real edge (`wrangler dev`) and a real
// relay process: `OpenAIRealtimeWS({ callID }, client)` from the `openai` package attaches to a
// call a werift caller placed, declares a tool, answers the model's call of it, changes what the
// caller hears, and hears the end when `calls.hangup` ends the call. openai-node opens only
// `wss:` sockets, so it connects through a TLS terminator in front of the edge (tls-front.ts),
// as it would through Cloudflare. The model is a scripted stand-in (scripted-model.ts).
import { randomBytes } from "node:crypto";
import OpenAI from "openai";
import { OpenAIRealtimeWS } from "openai/realtime/ws";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { connectViaEdge, getCallView, type EventClient } from "../faults/fixtures.ts";
import { dominantFrequency, lastSoundAt, rms } from "../support/audio.ts";
import type { CallUsage } from "../../protocol/relay-api.ts";
import { EventLog, waitFor, waitUntil } from "../support/loopback.ts";
import {
  startEdge,
  startRelayProcess,
  waitForRelayAtEdge,
  type Edge,
  type RelayProcess,
} from "../support/relays.ts";
import { ScriptedModel } from "../support/scripted-model.ts";
import { SidebandClient } from "../support/sideband-client.ts";
import { startTlsFront, type TlsFront } from "../support/tls-front.ts";

type Event = { type: string; [key: string]: unknown };

const KEY = `sk_e2e_${randomBytes(18).toString("base64url")}`;
const OTHER_KEY = `sk_e2e_${randomBytes(18).toString("base64url")}`;

let model: ScriptedModel;
let edge: Edge;
let relay: RelayProcess;
let front: TlsFront;
const open: { close(): unknown }[] = [];

beforeAll(async () => {
  model = await ScriptedModel.start();
  const started = await startEdge({ vars: { EARSHOT_API_KEYS: `${KEY},${OTHER_KEY}` } });
  edge = { ...started, apiKey: KEY };
  relay = await startRelayProcess({
    edge: { url: edge.url, relaySecret: edge.relaySecret },
    inferenceUrl: model.url,
    env: { RELAY_VAD: "off", LOG_LEVEL: "warn" },
  });
  await waitForRelayAtEdge(edge, relay.id);
  front = await startTlsFront(edge.url);
}, 120_000);
afterAll(async () => {
  await front?.close();
  await relay?.stop();
  await edge?.stop();
  await model?.close();
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

async function placeCall(): Promise<EventClient> {
  const client = await connectViaEdge(edge);
  open.push(client);
  return client;
}

/** OpenAI's WebSocket client attached to `callId`, its events recorded. */
async function attachOpenAI(
  callId: string,
  apiKey = KEY,
): Promise<{ rt: OpenAIRealtimeWS; events: EventLog<Event> }> {
  const rt = new OpenAIRealtimeWS(
    { callID: callId, options: { ca: front.ca } },
    { apiKey, baseURL: `${front.url}/v1` },
  );
  const events = new EventLog<Event>();
  rt.on("event", (event) => events.push(event as unknown as Event));
  rt.on("error", () => {}); // asserted through the events and the close
  open.push({ close: () => rt.close() });
  await new Promise<void>((resolve, reject) => {
    rt.socket.once("open", () => resolve());
    rt.socket.once("error", reject);
  });
  return { rt, events };
}

async function heardTone(client: EventClient, from: number, ms = 400): Promise<number> {
  let pcm: Int16Array = new Int16Array(0);
  let start = 0;
  await waitFor(
    () => {
      if (client.received.length - from < 10) return false;
      pcm = client.decodeReceived(from);
      start = 0;
      while (start + 480 < pcm.length && rms(pcm.subarray(start, start + 480)) < 500) start += 480;
      return pcm.length - start >= (24_000 * ms) / 1000;
    },
    20_000,
    "the model's reply audio",
  );
  const reply = pcm.subarray(start, start + (24_000 * ms) / 1000);
  expect(rms(reply)).toBeGreaterThan(2000);
  return dominantFrequency(reply);
}

describe("the sideband through the edge", () => {
  it("with OpenAI's client: a server-side tool, a session.update the caller hears, and calls.hangup", async () => {
    const client = await placeCall();
    const callId = client.edgeCallId;
    const { rt, events } = await attachOpenAI(callId);
    expect(rt.url.toString()).toBe(`${front.url.replace("https", "wss")}/v1/realtime?call_id=${callId}`);
    expect(rt.socket.protocol).toBe("");
    expect(await events.waitFor("earshot.call.state")).toMatchObject({ call_id: callId, state: "connected" });

    // The server declares its tool; the caller's turn makes the model call it.
    rt.send({
      type: "session.update",
      session: {
        type: "realtime",
        tools: [{ type: "function", name: "weather", description: "Weather in a city", parameters: {} }],
      },
    });
    await events.waitFor("session.updated", (e) => JSON.stringify(e).includes("weather"));
    client.channel.send(JSON.stringify({ type: "response.create" }));
    const call = await events.waitFor("response.function_call_arguments.done");
    expect(call).toMatchObject({ name: "weather", arguments: '{"city":"Paris"}' });
    let from = client.received.length;
    rt.send({
      type: "conversation.item.create",
      item: {
        type: "function_call_output",
        call_id: String(call.call_id),
        output: JSON.stringify({ hz: 660 }),
      },
    });
    rt.send({ type: "response.create" });
    expect(Math.abs((await heardTone(client, from)) - 660)).toBeLessThanOrEqual(15);
    await events.waitFor("response.done", (e) => JSON.stringify(e).includes("completed"), {
      timeoutMs: 20_000,
    });

    // New instructions from the server: the caller's next reply follows them.
    rt.send({ type: "session.update", session: { type: "realtime", instructions: "tone:880" } });
    await events.waitFor("session.updated", (e) => JSON.stringify(e).includes("tone:880"));
    await waitFor(() => performance.now() - lastSoundAt(client.received) > 300, 15_000, "quiet");
    from = client.received.length;
    client.channel.send(JSON.stringify({ type: "response.create" }));
    expect(Math.abs((await heardTone(client, from)) - 880)).toBeLessThanOrEqual(15);

    await waitFor(() => events.ofType("response.done").length === 3, 15_000, "the third response.done");
    const heard = client.received.length;
    // The server hangs up with the same client: the sideband hears why, then closes.
    const closed = new Promise<number>((resolve) => rt.socket.once("close", (code) => resolve(code)));
    const rest = new OpenAI({ apiKey: KEY, baseURL: `${edge.url}/v1` });
    await rest.realtime.calls.hangup(callId);
    expect(await events.waitFor("earshot.call.state", (e) => e.state === "ended")).toMatchObject({
      reason: "hangup",
    });
    expect(await closed).toBe(1000);
    // What the call used: three responses (the tool call and two replies) and their usage summed,
    // told to the sideband and kept in the call's record once the relay reports the end.
    const told = (await events.waitFor("earshot.call.usage")).usage as CallUsage;
    expect(told).toMatchObject({
      turns: 3,
      model: { input_tokens: 60, output_token_details: { audio_tokens: 21 } },
    });
    // Every packet the relay sent counts 20 ms; the caller heard at least these.
    expect(told.audio_out_seconds).toBeGreaterThanOrEqual(heard * 0.02);
    const recorded = await waitUntil("the call's usage at the edge", async () => {
      const view = (await getCallView(edge.url, KEY, callId)) as unknown as {
        state: string;
        usage: CallUsage | null;
      };
      return view.usage ? view : undefined;
    });
    expect(recorded).toMatchObject({ state: "ended", usage: told });
  }, 90_000);

  it("takes a browser's subprotocol form, answering with the realtime subprotocol", async () => {
    const client = await placeCall();
    const socket = new WebSocket(
      `${edge.url.replace("http", "ws")}/v1/realtime?call_id=${client.edgeCallId}`,
      ["realtime", `openai-insecure-api-key.${KEY}`],
    );
    open.push({ close: () => socket.terminate() });
    const first = await new Promise<Event>((resolve, reject) => {
      socket.once("message", (data) => resolve(JSON.parse(String(data)) as Event));
      socket.once("error", reject);
    });
    expect(socket.protocol).toBe("realtime");
    expect(first.type).toBe("session.created");
  });

  it("hears the caller hang up", async () => {
    const client = await placeCall();
    const sideband = SidebandClient.viaEdge(edge.url, client.edgeCallId, KEY);
    open.push(sideband);
    await sideband.opened;
    await client.close();
    expect(await sideband.waitFor("earshot.call.state", (e) => e.state === "ended", 20_000)).toMatchObject({
      reason: "client_hangup",
    });
    expect((await sideband.closed).code).toBe(1000);
  }, 30_000);

  it("refuses a wrong key, another key's call, an ended call and a third sideband, in OpenAI's error shape", async () => {
    const client = await placeCall();
    const callId = client.edgeCallId;
    const refused = async (sideband: SidebandClient) => {
      open.push(sideband);
      await expect(sideband.opened).rejects.toThrow();
      return {
        status: sideband.refusal!.status,
        error: (JSON.parse(sideband.refusal!.body) as { error: Event }).error,
      };
    };
    expect(await refused(SidebandClient.viaEdge(edge.url, callId, "sk_wrong"))).toMatchObject({
      status: 401,
      error: { type: "authentication_error", code: "invalid_api_key" },
    });
    expect(await refused(SidebandClient.viaEdge(edge.url, callId, OTHER_KEY))).toMatchObject({
      status: 404,
      error: { type: "invalid_request_error", code: "call_not_found" },
    });
    const first = SidebandClient.viaEdge(edge.url, callId, KEY);
    const second = SidebandClient.viaEdge(edge.url, callId, KEY);
    open.push(first, second);
    await Promise.all([first.opened, second.opened]);
    expect(await refused(SidebandClient.viaEdge(edge.url, callId, KEY))).toMatchObject({
      status: 409,
      error: { code: "too_many_sidebands", param: "call_id" },
    });
    const hangup = await fetch(`${edge.url}/v1/realtime/calls/${callId}/hangup`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}` },
    });
    expect(hangup.status).toBe(200);
    expect(await refused(SidebandClient.viaEdge(edge.url, callId, KEY))).toMatchObject({
      status: 410,
      error: { code: "call_ended" },
    });
  }, 30_000);
});
