// A real relay process bridging werift clients to the built-in agent (issue 7):
//   - hostile data-channel input through a real call: non-JSON, unknown types, messages over
//     the cap, and a 5,000-message burst. Each gets an `error` event or is dropped and counted
//     in /metrics; the call lives on and audio still flows both ways.
//   - graceful drain with calls in flight: calls that end before the deadline are never cut;
//     the one still running at the deadline ends `relay_draining`; then the process exits.
import { afterEach, describe, expect, it } from "vitest";
import { AgentServer } from "../../agent/agent-server.ts";
import { MAX_CLIENT_MESSAGE_BYTES } from "../../relay/call/peer-config.ts";
import {
  EventClient,
  callRelay,
  expectEchoOf,
  startRelayProc,
  waitUntil,
  type RelayProcess,
} from "./fixtures.ts";
import { waitFor } from "../support/loopback.ts";
import { bootIdOf, postCall, TEST_SECRET, ticketFor } from "../support/relay-api.ts";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setUp(env: Record<string, string> = {}): Promise<RelayProcess> {
  const agent = await AgentServer.start({ port: 0, reply: "echo" });
  cleanups.push(() => agent.close());
  const relay = await startRelayProc({
    id: "relay-test",
    secret: TEST_SECRET,
    inferenceUrl: `${agent.url}?reply=echo`,
    env,
  });
  cleanups.push(() => relay.stop("SIGKILL"));
  return relay;
}

async function liveCall(relay: RelayProcess): Promise<EventClient> {
  const client = new EventClient();
  cleanups.push(() => client.close());
  return callRelay(relay.url, client);
}

const codes = (client: EventClient) => client.errors().map((e) => (e.error as { code: string }).code);

describe("hostile data-channel input through a real call", () => {
  it("non-JSON, wrong shapes, unknown types, oversize and a burst (1,000; 5,000 with EARSHOT_SOAK=long): each answered or counted, the call lives on", async () => {
    const relay = await setUp();
    const client = await liveCall(relay);
    const rejectedBefore = await relay.metric("earshot_relay_client_events_rejected_total");
    const droppedBefore = await relay.metric("earshot_relay_datachannel_dropped_total");

    // Malformed: an error event each, from the relay, naming the problem.
    const malformed = ["not json", "{", "[]", "null", '"string"', "{}", '{"type":42}', '{"type":""}'];
    for (const text of malformed) client.channel.send(text);
    await waitFor(() => client.errors().length >= malformed.length, 5000, "an error per malformed message");
    expect(client.errors().length).toBe(malformed.length);
    for (const error of client.errors()) {
      expect(error.error).toMatchObject({ type: "invalid_request_error" });
      expect(String((error.error as { message: string }).message).length).toBeGreaterThan(0);
    }
    expect(await relay.metric("earshot_relay_client_events_rejected_total")).toBe(
      rejectedBefore + malformed.length,
    );

    // Unknown types go through, as OpenAI would get them; the upstream answers with an error.
    client.channel.send(JSON.stringify({ type: "no.such.event", event_id: "evt_unknown" }));
    await waitFor(() => codes(client).includes("unknown_event"), 5000, "unknown_event from upstream");

    // Over the cap: dropped by the relay before parsing, counted; nothing comes back for it.
    const errorsBefore = client.errors().length;
    client.pc.sctpTransport!.remoteMaxMessageSize = 0; // a client that ignores a=max-message-size
    client.channel.send(
      JSON.stringify({ type: "session.update", pad: "x".repeat(MAX_CLIENT_MESSAGE_BYTES) }),
    );
    client.channel.send(
      JSON.stringify({ type: "session.update", pad: "y".repeat(2 * MAX_CLIENT_MESSAGE_BYTES) }),
    );
    await waitUntil(
      "two oversize messages counted",
      async () =>
        (await relay.metric("earshot_relay_datachannel_dropped_total")) >= droppedBefore + 2 || undefined,
      10_000,
    );
    expect(client.errors().length).toBe(errorsBefore);

    // A burst of malformed messages: the relay answers or counts every one (its counters are the
    // record: the client may not get every reply, since werift's SCTP drains a flood slowly,
    // about 60 messages/s each way here). 1,000 in `npm test`, 5,000 with EARSHOT_SOAK=long.
    const burst = process.env.EARSHOT_SOAK === "long" ? 5000 : 1000;
    const rejectedBeforeBurst = await relay.metric("earshot_relay_client_events_rejected_total");
    const sentAt = performance.now();
    for (let i = 0; i < burst; i++) client.channel.send(`{"type":"x","bad":${i}`);
    const accounted = async () =>
      (await relay.metric("earshot_relay_client_events_rejected_total")) -
      rejectedBeforeBurst +
      (await relay.metric("earshot_relay_datachannel_dropped_total")) -
      droppedBefore -
      2;
    await waitUntil(
      "every burst message answered or counted",
      async () => (await accounted()) >= burst || undefined,
      burst * 40,
      250,
    ).catch(async (e: Error) => {
      throw new Error(
        `${e.message}: errors ${client.errors().length - errorsBefore}, dropped ${(await relay.metric("earshot_relay_datachannel_dropped_total")) - droppedBefore}, rejected ${await relay.metric("earshot_relay_client_events_rejected_total")}`,
      );
    });
    const burstMs = performance.now() - sentAt;
    expect(await accounted()).toBe(burst);
    await waitFor(() => client.errors().length > errorsBefore, 10_000, "error events for the burst");

    // The call is alive and well: audio both ways, events both ways.
    expect((await relay.health()).active_calls).toBe(1);
    await expectEchoOf(client, 523);
    client.channel.send(JSON.stringify({ type: "response.create" }));
    await client.waitEvent("response.created");
    expect(relay.output()).not.toMatch(/unhandled rejection|uncaughtException/i);
    console.log(
      `data channel: ${malformed.length} malformed → errors, 1 unknown → upstream error, 2 oversize dropped, ` +
        `${burst} burst accounted in ${Math.round(burstMs)} ms`,
    );
  }, 300_000);
});

describe("graceful drain with calls in flight", () => {
  it("no call that ends before the deadline is cut; the last one ends at the deadline; the process exits", async () => {
    const DRAIN_SECONDS = 6;
    const relay = await setUp({ RELAY_DRAIN_SECONDS: String(DRAIN_SECONDS) });
    const early = await liveCall(relay);
    const late = await liveCall(relay);
    const stays = await liveCall(relay);

    const drainAt = performance.now();
    relay.proc.kill("SIGTERM");
    await waitFor(() => /"draining"|draining/.test(relay.output()), 5000, "draining");
    expect((await relay.health()).status).toBe("draining");
    // No new calls while draining.
    const refused = new EventClient();
    cleanups.push(() => refused.close());
    const offer = await refused.offer();
    const response = await postCall(
      relay.url,
      { call_id: refused.callId, offer_sdp: offer, session: {} },
      await ticketFor(refused.callId, offer, {}, { bootId: await bootIdOf(relay.url) }),
    );
    expect(response.status).toBe(503);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("relay_draining");

    // Calls in flight keep working while the relay drains, right up to their own end.
    await expectEchoOf(early, 440);
    await early.close();
    await expectEchoOf(late, 600);
    await expectEchoOf(stays, 500);
    const lateEndAt = performance.now();
    expect(lateEndAt - drainAt).toBeLessThan(DRAIN_SECONDS * 1000 - 500);
    await late.close();

    const exit = await new Promise<number | null>((resolve) =>
      relay.proc.once("exit", (code) => resolve(code)),
    );
    const exitedAfterMs = performance.now() - drainAt;
    expect(exit).toBe(0);
    expect(exitedAfterMs).toBeGreaterThanOrEqual(DRAIN_SECONDS * 1000 - 200);
    expect(exitedAfterMs).toBeLessThan(DRAIN_SECONDS * 1000 + 5000);

    // From the relay's own log: how each call ended.
    const reasons = new Map<string, string>();
    for (const line of relay.output().split("\n")) {
      const match = /"call_id":"([^"]+)","reason":"([^"]+)".*"msg":"call ended"/.exec(line);
      if (match) reasons.set(match[1]!, match[2]!);
    }
    expect(reasons.get(early.callId)).toBe("client_hangup");
    expect(reasons.get(late.callId)).toBe("client_hangup");
    expect(reasons.get(stays.callId)).toBe("relay_draining");
    expect(stays.errors()).toEqual([]);
    console.log(
      `drain: last call cut at the ${DRAIN_SECONDS} s deadline; process exited after ${Math.round(exitedAfterMs)} ms`,
    );
  }, 60_000);
});
