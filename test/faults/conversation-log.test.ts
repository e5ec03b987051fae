// The conversation log end to end (issue 15 part 4): a werift caller places a call through a real
// edge (`wrangler dev`) onto a real relay process bridged to the built-in agent, which calls the
// session's tool; the relay streams the conversation's items to the edge with its call events,
// and the call's project reads them from GET /v1/realtime/calls/{id}/log after the hang-up.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LogItem } from "../../protocol/relay-api.ts";
import { MAX_LOG_TEXT_CHARS } from "../../protocol/relay-api.ts";
import { waitForRelayAtEdge } from "../support/relays.ts";
import {
  connectViaEdge,
  startEdgeOn,
  startRelayProc,
  waitUntil,
  type EdgeProcess,
  type EventClient,
  type RelayProcess,
} from "./fixtures.ts";

let edge: EdgeProcess;
let relay: RelayProcess;
const clients: EventClient[] = [];

beforeAll(async () => {
  edge = await startEdgeOn();
  relay = await startRelayProc({ edgeUrl: edge.url, secret: edge.relaySecret });
  await waitForRelayAtEdge(edge, relay.id);
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await relay?.stop("SIGKILL");
  await edge?.stop();
});

const send = (client: EventClient, event: Record<string, unknown>) =>
  client.channel.send(JSON.stringify(event));

describe("the conversation log of a real call", () => {
  it("reaches the edge in order: the user's message, the agent's function call, the output, the agent's reply", async () => {
    const client = await connectViaEdge(edge, clients);
    send(client, {
      type: "session.update",
      session: {
        type: "realtime",
        tools: [
          {
            type: "function",
            name: "get_weather",
            description: "The weather in a city",
            parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
          },
        ],
        tool_choice: "auto",
      },
    });
    await client.waitEvent("session.updated", (e) => JSON.stringify(e).includes("get_weather"));
    // A question longer than a log text field may be: the log keeps its first 4096 characters.
    const question = `What is the weather in Paris? ${"Please answer. ".repeat(400)}`;
    send(client, {
      type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text: question }] },
    });
    send(client, { type: "response.create" });
    const call = await client.waitEvent("response.function_call_arguments.done", () => true, 15_000);
    send(client, {
      type: "conversation.item.create",
      item: { type: "function_call_output", call_id: call.call_id, output: '{"temperature_c":18}' },
    });
    send(client, { type: "response.create" });
    await client.waitEvent(
      "response.done",
      (e) => (e.response as { output?: { type?: string }[] }).output?.[0]?.type === "message",
      20_000,
    );
    const hangup = await fetch(`${edge.url}/v1/realtime/calls/${client.edgeCallId}/hangup`, {
      method: "POST",
      headers: { authorization: `Bearer ${edge.apiKey}` },
    });
    expect(hangup.status).toBe(200);

    const log = await waitUntil(
      "the call's log at the edge",
      async () => {
        const response = await fetch(`${edge.url}/v1/realtime/calls/${client.edgeCallId}/log`, {
          headers: { authorization: `Bearer ${edge.apiKey}` },
        });
        expect(response.status).toBe(200);
        const body = (await response.json()) as { items: LogItem[] };
        const assistant = body.items.find((i) => i.type === "message" && i.role === "assistant" && i.text);
        return assistant ? body : undefined;
      },
      15_000,
    );
    const types = log.items.map((item) => `${item.type}${item.role ? `:${item.role}` : ""}`);
    expect(types).toEqual(["message:user", "function_call", "function_call_output", "message:assistant"]);
    const [user, fn, output, reply] = log.items;
    expect(user!.text).toBe(question.slice(0, MAX_LOG_TEXT_CHARS));
    expect(fn).toMatchObject({ name: "get_weather", call_id: call.call_id, previous_item_id: user!.id });
    expect(JSON.parse(fn!.arguments!)).toHaveProperty("city");
    expect(output).toMatchObject({
      call_id: call.call_id,
      output: '{"temperature_c":18}',
      previous_item_id: fn!.id,
    });
    expect(reply).toMatchObject({ previous_item_id: output!.id });
    expect(reply!.text!.length).toBeGreaterThan(0);
    // Never audio.
    expect(JSON.stringify(log)).not.toMatch(/"audio"|"delta"/);

    // The record has what the call used, and the project's listing shows the call.
    const listing = (await (
      await fetch(`${edge.url}/admin/calls?since=${Math.floor(Date.now() / 1000) - 600}`, {
        headers: { authorization: `Bearer ${edge.apiKey}` },
      })
    ).json()) as { data: { id: string; usage: { turns: number } | null }[] };
    expect(listing.data.map((record) => record.id)).toContain(client.edgeCallId);
    const record = await waitUntil(
      "the call's usage at the edge",
      async () => {
        const response = await fetch(`${edge.url}/v1/realtime/calls/${client.edgeCallId}`, {
          headers: { authorization: `Bearer ${edge.apiKey}` },
        });
        const body = (await response.json()) as {
          usage: { turns: number; barge_ins?: number } | null;
          setup: { relay_answer_ms: number | null; relay_connect_ms: number | null };
        };
        return body.usage ? body : undefined;
      },
      15_000,
    );
    expect(record.usage).toMatchObject({ turns: 2, barge_ins: 0 });
    expect(record.setup.relay_connect_ms).toBeGreaterThan(0);
    expect(record.setup.relay_answer_ms).toBeGreaterThanOrEqual(0);
  }, 90_000);
});
