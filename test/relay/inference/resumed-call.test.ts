// A call resumed on this relay after its relay was lost (issue 18): the edge hands over the
// conversation log with the offer (`resume` in POST /calls, bound by the ticket). Through a real
// relay process and a scripted model: a log at the edge's bounds (MAX_RESUME_ITEMS items, the
// edge log's MAX_LOG_TEXT_CHARS of text, every id at its longest, text that JSON escapes six bytes
// a character) is taken, primed within the token budget, and the call talks; one item past the
// bound, or a conversation the ticket was not signed for, is refused with a clear error.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MAX_RESUME_ITEMS, ticketSubject, type LogItem, type ResumeOf } from "../../../protocol/relay-api.ts";
import { MAX_LOG_TEXT_CHARS } from "../../../workers/conversation-log.ts";
import { EventClient, startRelayProc, type RelayProcess } from "../../faults/fixtures.ts";
import { bootIdOf, ticketFor, TEST_SECRET } from "../../support/relay-api.ts";
import { waitFor } from "../../support/loopback.ts";
import { ScriptedModel } from "../../support/scripted-model.ts";
import { rms } from "../../support/audio.ts";

let model: ScriptedModel;
let relay: RelayProcess;
const clients: EventClient[] = [];

beforeAll(async () => {
  model = await ScriptedModel.start();
  relay = await startRelayProc({ id: "relay-test", secret: TEST_SECRET, inferenceUrl: model.url });
}, 60_000);
afterAll(async () => {
  await relay?.stop("SIGKILL");
  await model?.close();
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

const longId = (prefix: string, n: number) => `${prefix}_${n}_`.padEnd(64, "x");

/** The worst a log at the edge's bounds can be: every field at its longest, control characters. */
function boundLog(items: number): LogItem[] {
  const perItem = Math.floor(MAX_LOG_TEXT_CHARS / MAX_RESUME_ITEMS);
  const text = "\u0001".repeat(perItem - 8);
  return Array.from({ length: items }, (_, n): LogItem => {
    const base = { id: longId("item", n), previous_item_id: longId("item", n - 1) };
    const call = longId("call", n >> 1);
    if (n % 4 === 2)
      return { ...base, type: "function_call", call_id: call, name: longId("fn", n), arguments: text };
    if (n % 4 === 3)
      return { ...base, type: "function_call_output", call_id: longId("call", (n - 1) >> 1), output: text };
    return { ...base, type: "message", role: n % 4 === 0 ? "user" : "assistant", text: `turn ${n} ${text}` };
  });
}

async function resumeOn(
  resume: ResumeOf,
  signed: ResumeOf = resume,
): Promise<{ response: Response; client: EventClient }> {
  const client = new EventClient();
  clients.push(client);
  const offer = await client.offer();
  const session = {};
  const ticket = await ticketFor(client.callId, offer, ticketSubject({ session, resume: signed }), {
    bootId: await bootIdOf(relay.url),
    relayId: "relay-test",
  });
  const response = await fetch(`${relay.url}/calls`, {
    method: "POST",
    headers: { "content-type": "application/json", "earshot-ticket": ticket },
    body: JSON.stringify({ call_id: client.callId, offer_sdp: offer, session, resume }),
  });
  if (response.status === 201)
    await client.applyAnswer(((await response.clone().json()) as { answer_sdp: string }).answer_sdp);
  return { response, client };
}

describe("a resumed call's conversation at its size bound", () => {
  it("takes a log at the edge's bounds, primes the model within the budget, and talks", async () => {
    const conversation = boundLog(MAX_RESUME_ITEMS);
    const resume = { previous_relay_id: "relay-lost", conversation };
    const body = JSON.stringify({ resume });
    expect(body.length).toBeGreaterThan(600_000); // the worst case, not a small sample
    const { response, client } = await resumeOn(resume);
    expect(response.status, await response.clone().text()).toBe(201);
    await client.connected();
    await client.channelOpen();
    const resumed = await client.waitEvent("earshot.call.resumed", () => true, 15_000);
    expect(client.events[0]!.type).toBe("session.created");
    const { replayed_items, summarised_items, dropped_items } = resumed as unknown as {
      replayed_items: number;
      summarised_items: number;
      dropped_items: number;
    };
    expect(replayed_items).toBeGreaterThan(10);
    expect(summarised_items).toBeGreaterThan(0);
    expect(replayed_items + summarised_items + dropped_items).toBe(MAX_RESUME_ITEMS);

    // The newest items went to the model with their ids, in order, each call with its output.
    const told = model.sessions.at(-1)!.received.filter((r) => r.type === "conversation.item.create");
    const ids = told.map((r) => (r.event.item as { id: string }).id);
    expect(ids.at(-1)).toBe(conversation.at(-1)!.id);
    expect(ids.slice(1)).toEqual(conversation.slice(-replayed_items).map((item) => item.id));
    expect((told[0]!.event.item as { role: string }).role).toBe("system");
    const outputs = told.filter((r) => (r.event.item as { type: string }).type === "function_call_output");
    for (const output of outputs) {
      const callId = (output.event.item as { call_id: string }).call_id;
      expect(
        told.some(
          (r) =>
            (r.event.item as { call_id?: string; type: string }).type === "function_call" &&
            (r.event.item as { call_id?: string }).call_id === callId,
        ),
      ).toBe(true);
    }
    // None of it reached the client, and the call talks.
    expect(client.events.filter((e) => e.type.startsWith("conversation.item."))).toEqual([]);
    client.channel.send(JSON.stringify({ type: "response.create" }));
    await waitFor(() => client.received.length >= 30, 10_000, "the reply's audio");
    expect(rms(client.decodeReceived(0))).toBeGreaterThan(2000);
  }, 40_000);

  it("refuses one item past the bound, naming it, and a conversation the ticket was not signed for", async () => {
    const tooLong = { previous_relay_id: "relay-lost", conversation: boundLog(MAX_RESUME_ITEMS + 1) };
    const past = await resumeOn(tooLong);
    expect(past.response.status).toBe(400);
    expect(await past.response.json()).toMatchObject({
      error: { code: "invalid_request", param: "resume.conversation" },
    });

    const signed = { previous_relay_id: "relay-lost", conversation: boundLog(4) };
    const swapped = {
      ...signed,
      conversation: [...signed.conversation.slice(0, 3), { ...signed.conversation[3]!, output: "forged" }],
    };
    const forged = await resumeOn(swapped as ResumeOf, signed);
    expect(forged.response.status).toBe(403);
    expect(await forged.response.json()).toMatchObject({ error: { code: "ticket_mismatch" } });
  });
});
