// The sideband at the relay: an app server's WebSocket attached to a live call's bridge (the
// edge's pass-through is test/e2e/sideband.test.ts). A werift caller on an in-process relay whose
// bridge talks to a scripted model over a real WebSocket; the sidebands are plain `ws` clients
// with tickets signed as the edge signs them.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MAX_CLIENT_EVENT_BYTES } from "../../../protocol/realtime.ts";
import { MAX_SIDEBAND_MESSAGE_BYTES, SIDEBAND_CLOSE } from "../../../protocol/sideband.ts";
import { InferenceBridge } from "../../../relay/inference/inference-bridge.ts";
import { callRelay, EventClient } from "../../faults/fixtures.ts";
import { dominantFrequency, isKeepalive, rms, sine } from "../../support/audio.ts";
import { waitFor } from "../../support/loopback.ts";
import { bootIdOf, metricsAuth, postCall, sidebandTicketFor, ticketFor } from "../../support/relay-api.ts";
import { metricValue, startRelay, testConfig, type InProcessRelay } from "../../support/relays.ts";
import { ScriptedModel } from "../../support/scripted-model.ts";
import { SidebandClient } from "../../support/sideband-client.ts";

let model: ScriptedModel;
let relay: InProcessRelay;
const open: { close(): Promise<void> }[] = [];

beforeAll(async () => {
  model = await ScriptedModel.start();
  const inference = { ...testConfig({ INFERENCE_URL: model.url }).inference, retryBaseMs: 20, maxRetries: 1 };
  relay = await startRelay({
    bridgeFactory: (ctx) => new InferenceBridge(ctx, { config: inference }),
    // Stats (and with them the sidebands' earshot.call.quality) five times a second.
    env: { RELAY_VAD: "off", RELAY_STATS_SECONDS: "0.2" },
  });
});
afterAll(async () => {
  await relay?.close();
  await model?.close();
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

async function liveCall(): Promise<EventClient> {
  const client = await callRelay(relay.url, new EventClient());
  open.push(client);
  return client;
}

async function attach(callId: string, options: { ticket?: string } = {}): Promise<SidebandClient> {
  const sideband = await SidebandClient.onRelay(relay.url, callId, options);
  open.push(sideband);
  return sideband;
}

/** Frequency and level of what the caller heard from packet `from` on, once `ms` of it is loud. */
async function heardTone(
  client: EventClient,
  from: number,
  ms = 400,
): Promise<{ hz: number; level: number }> {
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
    15_000,
    "the model's reply audio",
  );
  const reply = pcm.subarray(start, start + (24_000 * ms) / 1000);
  return { hz: dominantFrequency(reply), level: rms(reply) };
}

const metric = async (name: string, labels: Record<string, string> = {}) =>
  metricValue(await (await fetch(`${relay.url}/metrics`, { headers: metricsAuth })).text(), name, labels);

describe("sideband at the relay", () => {
  it("gets the session and the call's state on attach, then every server event the caller gets, audio excepted", async () => {
    const client = await liveCall();
    const sideband = await attach(client.callId);
    await sideband.opened;
    expect((await sideband.waitFor("session.created")).session).toMatchObject({ type: "realtime" });
    expect(await sideband.waitFor("earshot.call.state")).toMatchObject({
      call_id: client.callId,
      state: "connected",
      reason: null,
    });
    // The caller asks for a reply on its data channel: the sideband hears what that caused.
    client.channel.send(JSON.stringify({ type: "response.create" }));
    const done = await sideband.waitFor("response.done");
    await client.waitEvent("response.done");
    expect(sideband.events.some((e) => e.type === "response.created")).toBe(true);
    expect(sideband.events.some((e) => e.type === "response.output_audio.done")).toBe(true);
    expect(sideband.events.some((e) => e.type.endsWith("audio.delta"))).toBe(false);
    const typesSeenByCaller = client.events.filter((e) => e.at <= performance.now()).map((e) => e.type);
    expect(typesSeenByCaller).toContain("response.done");
    expect(done).toMatchObject({ response: { status: "completed" } });
    // At the end, once the 1.2 s reply has played out, what the call used, before the final state.
    await waitFor(() => client.received.length >= 58, 10_000, "the whole reply");
    await new Promise((r) => setTimeout(r, 100));
    const heard = client.received.length;
    await relay.calls.get(client.callId)!.end("hangup");
    const usage = await sideband.waitFor("earshot.call.usage");
    expect(usage.usage).toMatchObject({
      turns: 1,
      model: { input_tokens: 20, output_tokens: 10, input_token_details: { audio_tokens: 8 } },
    });
    const { audio_out_seconds: out } = usage.usage as { audio_out_seconds: number };
    // Every packet sent counts 20 ms: what the caller heard, give or take the last few in flight.
    expect(out).toBeGreaterThanOrEqual(heard * 0.02);
    expect(out).toBeLessThanOrEqual((heard + 5) * 0.02);
    // …and into the relay's per-region counters.
    expect(
      await metric("earshot_relay_model_tokens_total", { region: "local", kind: "input" }),
    ).toBeGreaterThanOrEqual(20);
    expect(await metric("earshot_relay_model_turns_total", { region: "local" })).toBeGreaterThanOrEqual(1);
    expect(
      await metric("earshot_relay_call_audio_seconds_total", { region: "local", direction: "out" }),
    ).toBeGreaterThanOrEqual(out);
    const [last, beforeLast] = [sideband.events.at(-1), sideband.events.at(-2)];
    expect(beforeLast?.type).toBe("earshot.call.usage");
    expect(last).toMatchObject({ type: "earshot.call.state", state: "ended", reason: "hangup" });
  });

  it("may attach before the caller connects: it hears connecting, then connected", async () => {
    const client = new EventClient();
    open.push(client);
    // The offer is answered; the caller has not started ICE yet.
    const offerSdp = await client.offer();
    const response = await postCall(
      relay.url,
      { call_id: client.callId, offer_sdp: offerSdp, session: {} },
      await ticketFor(client.callId, offerSdp, {}, { bootId: await bootIdOf(relay.url) }),
    );
    expect(response.status).toBe(201);
    const sideband = await attach(client.callId);
    await sideband.opened;
    expect(await sideband.waitFor("earshot.call.state")).toMatchObject({ state: "connecting" });
    await client.applyAnswer(((await response.json()) as { answer_sdp: string }).answer_sdp);
    await sideband.waitFor("earshot.call.state", (e) => e.state === "connected");
    expect(sideband.events.some((e) => e.type === "session.updated" || e.type === "session.created")).toBe(
      true,
    );
  });

  it("changes what the caller hears with a session.update, as the client's own would", async () => {
    const client = await liveCall();
    const sideband = await attach(client.callId);
    await sideband.opened;
    sideband.send({ type: "session.update", session: { type: "realtime", instructions: "tone:880" } });
    await sideband.waitFor("session.updated", (e) => JSON.stringify(e.session).includes("tone:880"));
    // The relay forced its own audio format into the sideband's update, as for the client's.
    const update = await model.received("session.update", (e) => JSON.stringify(e).includes("tone:880"));
    expect(update.event.session).toMatchObject({
      audio: { input: { format: { type: "audio/pcm", rate: 24_000 } } },
    });
    const from = client.received.length;
    sideband.send({ type: "response.create" });
    const heard = await heardTone(client, from);
    expect(heard.level).toBeGreaterThan(2000);
    expect(Math.abs(heard.hz - 880)).toBeLessThanOrEqual(15);
  });

  it("runs a tool end to end: the model's call reaches the server, the server's answer is what the caller hears", async () => {
    const client = await liveCall();
    const sideband = await attach(client.callId);
    await sideband.opened;
    sideband.send({
      type: "session.update",
      session: {
        type: "realtime",
        tools: [{ type: "function", name: "weather", description: "Weather in a city", parameters: {} }],
      },
    });
    await sideband.waitFor("session.updated", (e) => JSON.stringify(e.session).includes("weather"));
    client.channel.send(JSON.stringify({ type: "response.create" }));
    const call = await sideband.waitFor("response.function_call_arguments.done");
    expect(call).toMatchObject({ name: "weather", arguments: '{"city":"Paris"}' });
    const from = client.received.length;
    sideband.send({
      type: "conversation.item.create",
      item: { type: "function_call_output", call_id: call.call_id, output: JSON.stringify({ hz: 660 }) },
    });
    sideband.send({ type: "response.create" });
    const heard = await heardTone(client, from);
    expect(Math.abs(heard.hz - 660)).toBeLessThanOrEqual(15);
    // The output reached the model, and everyone saw the item it made.
    await model.received("conversation.item.create", (e) =>
      JSON.stringify(e).includes("function_call_output"),
    );
    await client.waitEvent("conversation.item.created");
  });

  it("answers its own malformed, misshapen and oversize events to it alone, at the limits", async () => {
    const client = await liveCall();
    const sideband = await attach(client.callId);
    await sideband.opened;
    sideband.send("{not json");
    expect((await sideband.waitFor("error")).error).toMatchObject({
      type: "invalid_request_error",
      code: "invalid_json",
    });
    sideband.send({ type: "conversation.item.truncate", event_id: "evt_bad", item_id: "item_1" });
    expect(
      (await sideband.waitFor("error", (e) => (e.error as { event_id?: string }).event_id === "evt_bad"))
        .error,
    ).toMatchObject({ code: "missing_required_parameter", param: "content_index" });
    // Exactly the data channel's event limit is handled; one byte more is refused by name.
    const sized = (bytes: number, marker: string) => {
      const head = `{"type":"conversation.item.create","event_id":"${marker}","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"`;
      const tail = `"}]}}`;
      return head + "x".repeat(bytes - head.length - tail.length) + tail;
    };
    sideband.send(sized(MAX_CLIENT_EVENT_BYTES, "evt_at_limit"));
    await model.received("conversation.item.create", (e) => e.event_id === "evt_at_limit");
    sideband.send(sized(MAX_CLIENT_EVENT_BYTES + 1, "evt_past_limit"));
    expect(
      (await sideband.waitFor("error", (e) => JSON.stringify(e).includes("message_too_large"))).error,
    ).toMatchObject({
      code: "message_too_large",
    });
    // A binary frame is named as such.
    sideband.socket.send(Buffer.from([1, 2, 3]));
    expect(
      (await sideband.waitFor("error", (e) => JSON.stringify(e).includes("binary_frame"))).error,
    ).toMatchObject({
      code: "binary_frame",
    });
    // None of its errors reached the caller: they were the sideband's own. (The caller does hear
    // that the 256 KiB item the model made from it was too large for its data channel.)
    await new Promise((r) => setTimeout(r, 200));
    const ownCodes = ["invalid_json", "invalid_value", "message_too_large", "binary_frame"];
    expect(client.errors().filter((e) => ownCodes.includes((e.error as { code: string }).code))).toEqual([]);
    expect(sideband.socket.readyState).toBe(sideband.socket.OPEN);
  });

  it("reads a message of exactly its frame cap and closes the socket on one byte more (1009)", async () => {
    const client = await liveCall();
    const sideband = await attach(client.callId);
    await sideband.opened;
    sideband.send("x".repeat(MAX_SIDEBAND_MESSAGE_BYTES));
    expect((await sideband.waitFor("error")).error).toMatchObject({ code: "message_too_large" });
    sideband.send("x".repeat(MAX_SIDEBAND_MESSAGE_BYTES + 1));
    expect((await sideband.closed).code).toBe(SIDEBAND_CLOSE.tooLarge);
    // The call goes on.
    const again = await attach(client.callId);
    await again.opened;
    expect(relay.calls.get(client.callId)?.state).toBe("connected");
  });

  it("refuses a forged, replayed or misdirected ticket, an unknown call and a third sideband", async () => {
    const client = await liveCall();
    const bootId = await bootIdOf(relay.url);
    const forged = await attach(client.callId, {
      ticket: await sidebandTicketFor(client.callId, { bootId, secret: "not-the-relay-secret-0123" }),
    });
    await expect(forged.opened).rejects.toThrow();
    expect(forged.refusal?.status).toBe(403);
    expect(JSON.parse(forged.refusal!.body)).toMatchObject({
      error: { code: "ticket_bad_signature", param: "Earshot-Ticket" },
    });
    // A call's offer ticket is not a sideband ticket.
    const ticket = await sidebandTicketFor(client.callId, { bootId });
    const first = await attach(client.callId, { ticket });
    await first.opened;
    const replayed = await attach(client.callId, { ticket });
    await expect(replayed.opened).rejects.toThrow();
    expect(JSON.parse(replayed.refusal!.body)).toMatchObject({ error: { code: "ticket_replayed" } });
    const otherCall = await attach(client.callId, {
      ticket: await sidebandTicketFor("rtc_someothercall123", { bootId }),
    });
    await expect(otherCall.opened).rejects.toThrow();
    expect(JSON.parse(otherCall.refusal!.body)).toMatchObject({ error: { code: "ticket_mismatch" } });
    const unknown = await attach("rtc_nosuchcall12345");
    await expect(unknown.opened).rejects.toThrow();
    expect(unknown.refusal?.status).toBe(404);
    // Two sidebands at once; the third is refused by name, and a place frees when one closes.
    const second = await attach(client.callId);
    await second.opened;
    const third = await attach(client.callId);
    await expect(third.opened).rejects.toThrow();
    expect(third.refusal?.status).toBe(409);
    expect(JSON.parse(third.refusal!.body)).toMatchObject({ error: { code: "too_many_sidebands" } });
    await second.close();
    const fourth = await attach(client.callId);
    await fourth.opened;
  });

  it("tells every sideband when the call ends and why, then closes them with 1000", async () => {
    const client = await liveCall();
    const sidebands = [await attach(client.callId), await attach(client.callId)];
    await Promise.all(sidebands.map((s) => s.opened));
    await relay.calls.get(client.callId)!.end("hangup");
    for (const sideband of sidebands) {
      expect(await sideband.waitFor("earshot.call.state", (e) => e.state === "ended")).toMatchObject({
        reason: "hangup",
      });
      expect((await sideband.closed).code).toBe(1000);
      expect(sideband.events.at(-1)?.type).toBe("earshot.call.state");
    }
  });

  it("hears when the caller's audio stops (its link is down) and when it comes back", async () => {
    const client = await liveCall();
    const sideband = await attach(client.callId);
    await sideband.opened;
    await sideband.waitFor("earshot.call.state", (e) => e.state === "connected");
    await client.say(sine(300, 400));
    const stoppedAt = performance.now();
    const down = await sideband.waitFor("earshot.call.state", (e) => e.state === "disconnected", 10_000);
    // Two seconds of silence on the wire, checked every quarter second.
    expect(down.at - stoppedAt).toBeGreaterThan(1900);
    expect(down.at - stoppedAt).toBeLessThan(4000);
    const before = sideband.events.length;
    await client.say(sine(300, 200));
    const up = await sideband.log.waitFor("earshot.call.state", (e) => e.state === "connected", {
      from: before,
    });
    expect(up).toMatchObject({ reason: null, call_id: client.callId });
    expect(relay.calls.get(client.callId)?.state).toBe("connected");
  }, 30_000);

  it("hears the caller's link figures (earshot.call.quality) while the call is connected", async () => {
    const client = await liveCall();
    const sideband = await attach(client.callId);
    await sideband.opened;
    await client.say(sine(300, 400));
    const quality = await sideband.waitFor(
      "earshot.call.quality",
      (e) => ((e.stats as { packets_in: number }).packets_in ?? 0) >= 15,
      5000,
    );
    // The figures the edge's call record gets: the caller's 400 ms arrived whole on loopback.
    expect(quality).toMatchObject({
      call_id: client.callId,
      stats: {
        packets_lost: 0,
        quality: {
          uplink: { loss_percent: 0, concealed_frames: 0 },
          downlink: { loss_percent: expect.any(Number) },
        },
      },
    });
    await relay.calls.get(client.callId)!.end("hangup");
    await sideband.waitFor("earshot.call.state", (e) => e.state === "ended");
    // None after the end.
    expect(sideband.events.at(-1)?.type).toBe("earshot.call.state");
  });

  it("closes a sideband that stops reading (1008) without holding up the call's audio or the other sideband", async () => {
    const client = await liveCall();
    const slow = await attach(client.callId);
    const reader = await attach(client.callId);
    await Promise.all([slow.opened, reader.opened]);
    slow.pause();
    const from = client.received.length;
    client.channel.send(JSON.stringify({ type: "response.create" }));
    // The model floods events the caller's data channel cannot take (over its 64 KiB limit) while
    // it talks: only the sidebands carry them.
    const big = "y".repeat(300 * 1024);
    // Paced as a model streams (about 15 MB/s): the reading sideband, in this same process, keeps up.
    for (let i = 0; i < 80; i++) {
      model.inject({ type: "earshot.test.bulk", n: i, pad: big });
      await new Promise((r) => setTimeout(r, 20));
    }
    await waitFor(
      () => reader.events.filter((e) => e.type === "earshot.test.bulk").length === 80,
      20_000,
      "all bulk events at the reading sideband",
    );
    await waitFor(
      () => relay.calls.get(client.callId)!.sidebands === 1,
      10_000,
      "the slow sideband to be dropped",
    );
    expect(await metric("earshot_relay_sidebands_too_slow_total")).toBeGreaterThanOrEqual(1);
    // The caller's audio went on at its pace through all of it.
    const heard = await heardTone(client, from);
    expect(heard.level).toBeGreaterThan(2000);
    // The reply's packets (the idle keepalive before it comes every 300 ms by design).
    const packets = client.received.slice(from).filter((p) => !isKeepalive(p));
    let worstGap = 0;
    for (let i = 1; i < packets.length; i++)
      worstGap = Math.max(worstGap, packets[i]!.at - packets[i - 1]!.at);
    // Relay, caller, model and sidebands share this process and its 24 MB of JSON: a stalled
    // call would go silent until the slow sideband was cut; this one only jitters.
    expect(worstGap).toBeLessThan(300);
    await waitFor(() => client.received.length - from >= 58, 10_000, "the whole 1.2 s reply");
    // Once it reads again it finds why it was closed.
    slow.resume();
    const closed = await slow.closed;
    expect(closed.code).toBe(1008);
    expect(closed.reason).toMatch(/sideband_too_slow/);
  }, 60_000);
});
