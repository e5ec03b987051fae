// A call outlives its relay (issue 18, part 1): two real relay processes behind a real edge
// (`wrangler dev`), a werift caller, a scripted model that records what each session receives.
// Three relays. The serving relay gets SIGKILL; the caller offers again on POST …/{id}/resume;
// the other relay answers, primes a new model session with the caller's session as it last
// changed it and the conversation from the edge's log
// and says so (`earshot.call.resumed`); the caller hears the next reply; the record shows both
// relays. Then the faults: someone else's key, a key the edge does not know; the relay the call
// resumed on dies too (it resumes again, on the third, with everything said on both); no relay
// left to resume on (the call ends relay_lost); an ended call.
import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EventClient, connectViaEdge, type Event } from "../faults/fixtures.ts";
import { dominantFrequency, isKeepalive, rms } from "../support/audio.ts";
import { waitFor, waitUntil } from "../support/loopback.ts";
import {
  startEdge,
  startRelayProcess,
  waitForRelayAtEdge,
  type Edge,
  type RelayProcess,
} from "../support/relays.ts";
import { ScriptedModel } from "../support/scripted-model.ts";
import { SidebandClient } from "../support/sideband-client.ts";

const KEY = `sk_e2e_${randomBytes(18).toString("base64url")}`;
const OTHER_KEY = `sk_e2e_${randomBytes(18).toString("base64url")}`;

let model: ScriptedModel;
let edge: Edge;
const relays: RelayProcess[] = [];
const clients: EventClient[] = [];
const sidebands: SidebandClient[] = [];

beforeAll(async () => {
  model = await ScriptedModel.start();
  const started = await startEdge({ vars: { EARSHOT_API_KEYS: `${KEY},${OTHER_KEY}` } });
  edge = { ...started, apiKey: KEY };
  relays.push(
    ...(await Promise.all(
      [0, 1, 2].map(() =>
        startRelayProcess({
          edge: { url: edge.url, relaySecret: edge.relaySecret },
          inferenceUrl: model.url,
          env: { RELAY_VAD: "off", LOG_LEVEL: "warn" },
        }),
      ),
    )),
  );
  await Promise.all(relays.map((relay) => waitForRelayAtEdge(edge, relay.id)));
}, 120_000);
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(relays.map((relay) => relay.stop("SIGKILL")));
  await edge?.stop();
  await model?.close();
});
afterEach(async () => {
  await Promise.all([...clients.splice(0), ...sidebands.splice(0)].map((c) => c.close()));
});

interface CallView {
  state: string;
  end_reason: string | null;
  end_message: string | null;
  relay: { id: string };
  relays: { id: string }[];
}

async function view(callId: string): Promise<CallView> {
  const response = await fetch(`${edge.url}/v1/realtime/calls/${callId}`, {
    headers: { authorization: `Bearer ${KEY}` },
  });
  expect(response.status).toBe(200);
  return (await response.json()) as CallView;
}

/** A new PeerConnection offering on the call's resume route; its answer applied on 201. */
async function resume(callId: string, bearer = KEY): Promise<{ response: Response; client: EventClient }> {
  const client = new EventClient();
  clients.push(client);
  const response = await fetch(`${edge.url}/v1/realtime/calls/${callId}/resume`, {
    method: "POST",
    headers: { authorization: `Bearer ${bearer}`, "content-type": "application/sdp" },
    body: await client.offer(),
  });
  if (response.status === 201) await client.applyAnswer(await response.clone().text());
  return { response, client };
}

const send = (client: EventClient, event: object) => client.channel.send(JSON.stringify(event));

/** The user's words and the model's spoken answer; returns the reply's item id. */
async function turn(client: EventClient, itemId: string, text: string): Promise<string> {
  const isReply = (e: Event) =>
    e.type === "response.output_item.done" && (e.item as { role?: string }).role === "assistant";
  const earlier = client.events.filter(isReply).length;
  send(client, {
    type: "conversation.item.create",
    item: { id: itemId, type: "message", role: "user", content: [{ type: "input_text", text }] },
  });
  send(client, { type: "response.create" });
  await waitFor(() => client.events.filter(isReply).length > earlier, 10_000, "the model's reply");
  return (client.events.filter(isReply)[earlier]!.item as { id: string }).id;
}

/** Waits until the edge's log of the call holds `ids` (the relay reports every 500 ms). */
async function logged(callId: string, ids: string[]): Promise<void> {
  await waitUntil(
    "the conversation in the edge's log",
    async () => {
      const response = await fetch(`${edge.url}/v1/realtime/calls/${callId}/log`, {
        headers: { authorization: `Bearer ${KEY}` },
      });
      const log = (await response.json()) as { items: { id: string }[] };
      return ids.every((id) => log.items.some((item) => item.id === id)) || undefined;
    },
    10_000,
  );
}

/** The first packet at or after `from` that is audio, not the relay's idle keepalive. */
function firstSound(client: EventClient, from: number): number {
  const index = client.received.findIndex((p, n) => n >= from && !isKeepalive(p));
  return index < 0 ? client.received.length : index;
}

/** The reply heard from packet `from` on: a tone of `hz` at speaking level. */
async function hearsReply(client: EventClient, from: number, hz: number): Promise<void> {
  let heard: Int16Array = new Int16Array(0);
  await waitFor(
    () => {
      const start = firstSound(client, from);
      if (client.received.length - start < 30) return false;
      heard = client.decodeReceived(start);
      return true;
    },
    10_000,
    "the reply's audio",
  );
  const reply = heard.subarray(0, 24_000 * 0.5);
  expect(rms(reply)).toBeGreaterThan(2000);
  expect(Math.abs(dominantFrequency(reply) - hz)).toBeLessThanOrEqual(15);
}

describe("a call whose relay is killed", () => {
  it("resumes on the other relay with its conversation, and the caller hears the next reply under its changed session", async () => {
    const caller = await connectViaEdge(edge, clients);
    const callId = caller.edgeCallId;
    // The caller changes its session: the resumed call must run the changed one.
    send(caller, { type: "session.update", session: { type: "realtime", instructions: "tone:660" } });
    await caller.waitEvent("session.updated");
    const replyId = await turn(caller, "item_user_ada", "I am Ada.");
    await logged(callId, ["item_user_ada", replyId]);
    const before = await view(callId);
    const serving = relays.find((r) => r.id === before.relay.id)!;
    // An app server's sideband on the call: it is told (its socket closes) when the relay dies,
    // and reattaches on the same URL to the relay the call resumed on.
    const sideband = SidebandClient.viaEdge(edge.url, callId, KEY);
    sidebands.push(sideband);
    await sideband.opened;

    const killedAt = performance.now();
    await serving.stop("SIGKILL");
    const { response, client } = await resume(callId);
    expect(response.status, await response.clone().text()).toBe(201);
    expect(response.headers.get("location")).toBe(`/v1/realtime/calls/${callId}`);
    await client.connected();
    await client.channelOpen();
    const resumed = await client.waitEvent("earshot.call.resumed");
    expect(resumed).toMatchObject({ previous_relay_id: serving.id, replayed_items: 2 });
    expect(client.events[0]!.type).toBe("session.created");

    // The new relay's model session was told the conversation, with the original ids.
    const fresh = model.sessions.at(-1)!;
    const told = fresh.received.filter((r) => r.type === "conversation.item.create").map((r) => r.event.item);
    expect(told).toEqual([
      {
        id: "item_user_ada",
        type: "message",
        role: "user",
        content: [{ type: "input_text", text: "I am Ada." }],
      },
      {
        id: replyId,
        type: "message",
        role: "assistant",
        content: [{ type: "output_text", text: "tone 660" }],
      },
    ]);
    expect(fresh.received[0]!.event).toMatchObject({
      type: "session.update",
      session: { instructions: "tone:660" },
    });
    // None of the replay's echoes reached the caller.
    expect(client.events.filter((e: Event) => e.type.startsWith("conversation.item."))).toEqual([]);

    // The caller speaks on; the reply comes from the new session, and is heard.
    const from = client.received.length;
    send(client, { type: "response.create" });
    await hearsReply(client, from, 660);
    await sideband.closed;
    const reattached = SidebandClient.viaEdge(edge.url, callId, KEY);
    sidebands.push(reattached);
    await reattached.opened;
    const session = await reattached.waitFor("session.created");
    expect(session.session).toMatchObject({ instructions: "tone:660" });
    const heardAfterMs = client.received[firstSound(client, from)]!.at - killedAt;
    expect(heardAfterMs).toBeLessThan(10_000); // a generous bound; the figure is in bench/
    expect(fresh.received.some((r) => r.type === "response.create")).toBe(true);

    const after = await view(callId);
    expect(after.state).toBe("connected");
    const second = relays.find((r) => r.id === after.relay.id)!;
    expect(second).not.toBe(serving);
    expect(after.relays.map((r) => r.id)).toEqual([serving.id, second.id]);

    // Faults on a live call: someone else's key finds no call; a key the edge does not know is refused.
    expect((await resume(callId, OTHER_KEY)).response.status).toBe(404);
    const stale = await resume(callId, `sk_e2e_${randomBytes(18).toString("base64url")}`);
    expect(stale.response.status).toBe(401);
    expect((await view(callId)).relay.id).toBe(second.id);

    // The relay it resumed on dies too, after another turn: it resumes again, on the third,
    // whose model session is told what was said on both.
    const afterResumeReply = (
      client.events.find((e) => e.type === "response.output_item.done")!.item as { id: string }
    ).id;
    const bobReply = await turn(client, "item_user_bob", "Still there?");
    await logged(callId, ["item_user_bob", bobReply]);
    await second.stop("SIGKILL");
    const again = await resume(callId);
    expect(again.response.status, await again.response.clone().text()).toBe(201);
    await again.client.connected();
    await again.client.channelOpen();
    expect(await again.client.waitEvent("earshot.call.resumed")).toMatchObject({
      previous_relay_id: second.id,
      replayed_items: 5,
    });
    const third = relays.find((r) => r !== serving && r !== second)!;
    const toldAgain = model.sessions
      .at(-1)!
      .received.filter((r) => r.type === "conversation.item.create")
      .map((r) => (r.event.item as { id: string }).id);
    expect(toldAgain).toEqual(["item_user_ada", replyId, afterResumeReply, "item_user_bob", bobReply]);
    expect((await view(callId)).relays.map((r) => r.id)).toEqual([serving.id, second.id, third.id]);

    // The last relay dies too: a resume finds no relay left; the call ends relay_lost, saying why.
    await third.stop("SIGKILL");
    const last = await resume(callId);
    expect(last.response.status).toBe(503);
    expect(await last.response.json()).toMatchObject({ error: { code: "no_relay_available" } });
    const ended = await view(callId);
    expect(ended.state).toBe("failed");
    expect(ended.end_reason).toBe("relay_lost");
    expect(ended.end_message).toMatch(/no other relay/);
    // An ended call does not resume.
    expect((await resume(callId)).response.status).toBe(410);
  }, 90_000);
});
