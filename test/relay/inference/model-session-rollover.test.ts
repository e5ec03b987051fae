// Model-session rollover (issue 18, part 2), through a real relay process and a werift client.
// The upstream is a scripted model that records every event each of its sessions receives.
// - Planned: with RELAY_MODEL_SESSION_MAX_SECONDS=3 the relay opens a second model session,
//   primes it with the call's session and the conversation (original ids, the tool call with its
//   output, the assistant's reply as its transcript), and switches at a quiet point. The client
//   sees one `earshot.session.rolled_over` and none of the replay's own events, hears every frame
//   of the replies on either side, and the next reply comes from the new session.
// - Unplanned: the model's socket dies mid-reply. The client is told the reply was cleared, the
//   reconnected session is primed with the conversation, and the call goes on.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EventClient, startRelayProc, type Event, type RelayProcess } from "../../faults/fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { TEST_SECRET } from "../../support/relay-api.ts";
import { ScriptedModel } from "../../support/scripted-model.ts";
import { dominantFrequency, isKeepalive, lastSoundAt, rms } from "../../support/audio.ts";

const SESSION = {
  type: "realtime",
  instructions: "tone:550",
  tools: [{ type: "function", name: "get_weather", parameters: { type: "object", properties: {} } }],
};

let model: ScriptedModel;
let rolling: RelayProcess;
let steady: RelayProcess;
const clients: EventClient[] = [];

beforeAll(async () => {
  model = await ScriptedModel.start();
  [rolling, steady] = await Promise.all([
    startRelayProc({
      id: "relay-test",
      secret: TEST_SECRET,
      inferenceUrl: model.url,
      env: { RELAY_MODEL_SESSION_MAX_SECONDS: "3" },
    }),
    startRelayProc({ id: "relay-test", secret: TEST_SECRET, inferenceUrl: model.url }),
  ]);
}, 60_000);
afterAll(async () => {
  await rolling?.stop("SIGKILL");
  await steady?.stop("SIGKILL");
  await model?.close();
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

async function place(relay: RelayProcess): Promise<EventClient> {
  const client = new EventClient();
  clients.push(client);
  expect((await client.call(relay.url, SESSION)).status).toBe(201);
  await client.connected();
  await client.channelOpen();
  await client.waitEvent("session.created");
  return client;
}

const send = (client: EventClient, event: object) => client.channel.send(JSON.stringify(event));
const responses = (client: EventClient) => client.events.filter((e) => e.type === "response.done").length;

/** A user turn, the model's tool call, its output and the spoken answer (660 Hz). */
async function converse(
  client: EventClient,
): Promise<{ callId: string; callItemId: string; replyItemId: string }> {
  send(client, {
    type: "conversation.item.create",
    item: {
      id: "item_user_ada",
      type: "message",
      role: "user",
      content: [{ type: "input_text", text: "I am Ada." }],
    },
  });
  send(client, { type: "response.create" });
  const call = await client.waitEvent("response.output_item.done");
  const callItem = call.item as { id: string; call_id: string };
  send(client, {
    type: "conversation.item.create",
    item: {
      id: "item_tool_out",
      type: "function_call_output",
      call_id: callItem.call_id,
      output: '{"hz":660}',
    },
  });
  send(client, { type: "response.create" });
  const reply = await client.waitEvent(
    "response.output_item.done",
    (e) => (e.item as { type: string }).type === "message",
  );
  return {
    callId: callItem.call_id,
    callItemId: callItem.id,
    replyItemId: (reply.item as { id: string }).id,
  };
}

/** The talkspurts the client heard (a marker bit starts one): their frame counts, gap-free. */
function talkspurts(client: EventClient): { frames: number; from: number }[] {
  const spurts: { frames: number; from: number }[] = [];
  let previous: number | undefined;
  for (const [n, packet] of client.received.entries()) {
    // The idle keepalive between replies is not a talkspurt; the reply after it has the marker.
    if (isKeepalive(packet)) {
      previous = packet.sequenceNumber;
      continue;
    }
    if (packet.marker || previous === undefined) spurts.push({ frames: 0, from: n });
    else expect((packet.sequenceNumber - previous) & 0xffff, `packet ${n} follows the one before`).toBe(1);
    spurts.at(-1)!.frames++;
    previous = packet.sequenceNumber;
  }
  return spurts;
}

/** The reply heard in the talkspurt that starts at packet `from`: its pitch, at speaking level. */
function pitchOf(client: EventClient, from: number, frames: number): number {
  const heard = client.decodeReceived(from).subarray(0, frames * 480);
  expect(rms(heard)).toBeGreaterThan(2000);
  return dominantFrequency(heard);
}

describe("a planned rollover (the model session at its age limit)", () => {
  it("primes a second session with the conversation, switches in silence, and the call goes on", async () => {
    const sessionsBefore = model.sessions.length;
    const client = await place(rolling);
    const first = model.sessions.at(-1)!;
    const { callId, callItemId, replyItemId } = await converse(client);
    const rolled = await client.waitEvent("earshot.session.rolled_over", () => true, 15_000);
    expect(model.sessions.length).toBe(sessionsBefore + 2);
    const second = model.sessions.at(-1)!;
    expect(rolled).toMatchObject({ replayed_items: 4, summarised_items: 0, dropped_items: 0 });

    // The new session was given the call's session first (speaking, not text), then the turns.
    const told = second.received.map((r) => r.event);
    expect(told[0]).toMatchObject({
      type: "session.update",
      session: { instructions: "tone:550", output_modalities: ["audio"], tools: SESSION.tools },
    });
    expect(told.slice(1).map((e) => e.type)).toEqual(Array(4).fill("conversation.item.create"));
    expect(told.slice(1, 5).map((e) => e.item)).toEqual([
      {
        id: "item_user_ada",
        type: "message",
        role: "user",
        content: [{ type: "input_text", text: "I am Ada." }],
      },
      {
        id: callItemId,
        type: "function_call",
        call_id: callId,
        name: "get_weather",
        arguments: '{"city":"Paris"}',
      },
      { id: "item_tool_out", type: "function_call_output", call_id: callId, output: '{"hz":660}' },
      {
        id: replyItemId,
        type: "message",
        role: "assistant",
        content: [{ type: "output_text", text: "tone 660" }],
      },
    ]);
    // The old session was closed at the switch, after its reply had played out.
    await waitFor(() => first.socket.readyState === first.socket.CLOSED, 5000, "the old session closed");

    // Nothing of the replay reached the client: no echo of its items, no second session event.
    const types = client.events.map((e) => e.type);
    expect(types.filter((t) => t === "session.created")).toHaveLength(1);
    expect(types).not.toContain("session.updated");
    expect(client.events.filter((e) => echoes(e, "item_user_ada"))).toHaveLength(1);
    expect(client.errors()).toEqual([]);

    // The next reply comes from the new session, which knew the tool's answer.
    const before = responses(client);
    send(client, { type: "response.create" });
    await waitFor(() => responses(client) > before, 10_000, "the reply after the rollover");
    expect(second.received.some((r) => r.type === "response.create")).toBe(true);
    await waitFor(() => performance.now() - lastSoundAt(client.received) > 300, 10_000, "playout");
    // Every frame of both replies was heard: two 1.2 s talkspurts, no sequence gap.
    const spurts = talkspurts(client);
    expect(spurts.map((s) => s.frames)).toEqual([60, 60]);
    expect(Math.abs(pitchOf(client, spurts[0]!.from, 60) - 660)).toBeLessThanOrEqual(15);
    expect(Math.abs(pitchOf(client, spurts[1]!.from, 60) - 660)).toBeLessThanOrEqual(15);
  }, 40_000);
});

describe("a rollover the cap forces (no quiet point before the old session closes)", () => {
  it("switches to the primed session at once when the old one drops: no reconnect, one rolled_over", async () => {
    const client = await place(rolling);
    const old = model.sessions.at(-1)!;
    const sessionsBefore = model.sessions.length;
    send(client, {
      type: "conversation.item.create",
      item: {
        id: "item_user_cap",
        type: "message",
        role: "user",
        content: [{ type: "input_text", text: "Hi." }],
      },
    });
    // The user starts talking and never stops (as far as the model says): no quiet point comes.
    model.inject(
      { type: "input_audio_buffer.speech_started", audio_start_ms: 0, item_id: "item_talking" },
      old,
    );
    await waitFor(() => model.sessions.length === sessionsBefore + 1, 10_000, "the standby session");
    const standby = model.sessions.at(-1)!;
    await waitFor(
      () => standby.received.some((r) => r.type === "conversation.item.create"),
      5000,
      "the standby primed",
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(client.events.map((e) => e.type)).not.toContain("earshot.session.rolled_over");
    // The old session's cap: it closes. The primed one takes over at once.
    old.socket.close(1000);
    await client.waitEvent("earshot.session.rolled_over");
    expect(model.sessions.length).toBe(sessionsBefore + 1); // no reconnect: the standby is the session
    expect(client.events.map((e) => e.type)).not.toContain("earshot.inference.reconnected");
    const before = responses(client);
    send(client, { type: "response.create" });
    await waitFor(() => responses(client) > before, 10_000, "a reply from the new session");
    expect(standby.received.some((r) => r.type === "response.create")).toBe(true);
    expect(client.errors()).toEqual([]);
  }, 30_000);
});

describe("an unplanned rollover (the model's socket dies mid-reply)", () => {
  it("cuts the reply, primes the reconnected session with the conversation, and answers again", async () => {
    const client = await place(steady);
    const { replyItemId } = await converse(client);
    await waitFor(() => performance.now() - lastSoundAt(client.received) > 300, 10_000, "playout");
    const sessionsBefore = model.sessions.length;
    const started = () => client.events.filter((e) => e.type === "output_audio_buffer.started").length;
    const playedBefore = started();
    send(client, { type: "response.create" });
    await waitFor(() => started() > playedBefore, 10_000, "the next reply playing");
    model.sessions.at(-1)!.socket.terminate();
    await client.waitEvent("output_audio_buffer.cleared");
    const reconnected = await client.waitEvent("earshot.inference.reconnected");
    expect(reconnected).toMatchObject({ replayed_items: 4 });
    expect(model.sessions.length).toBe(sessionsBefore + 1);
    const fresh = model.sessions.at(-1)!;
    const replayed = fresh.received
      .filter((r) => r.type === "conversation.item.create")
      .map((r) => (r.event.item as { id: string }).id);
    expect(replayed).toContain("item_user_ada");
    expect(replayed).toContain(replyItemId);
    expect(client.events.filter((e) => echoes(e, "item_user_ada"))).toHaveLength(1);
    const before = responses(client);
    send(client, { type: "response.create" });
    await waitFor(() => responses(client) > before, 10_000, "the reply after the reconnect");
    expect(fresh.received.some((r) => r.type === "response.create")).toBe(true);
  }, 40_000);
});

function echoes(event: Event, itemId: string): boolean {
  return (
    event.type.startsWith("conversation.item.") && (event.item as { id?: string } | undefined)?.id === itemId
  );
}
