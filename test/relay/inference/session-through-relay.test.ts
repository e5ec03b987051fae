// The call's session end to end through a real relay process: a werift client places a call
// whose ticket carries the minted session, reads `oai-events`, and sends what OpenAI's SDKs send.
// Upstream: the built-in agent (echoing), or an upstream scripted as OpenAI's server.
// (issue 14, parts 3 and 4)
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EventClient, expectEchoOf, startRelayProc, type RelayProcess } from "../../faults/fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { TEST_SECRET } from "../../support/relay-api.ts";
import { INVALID_SESSIONS, VALID_SESSIONS } from "../../protocol/session-examples.ts";
import { ScriptedOpenAI } from "./scripted-openai.ts";

const MINTED = {
  type: "realtime",
  model: "gpt-realtime",
  instructions: "You are Earshot's test assistant. Be brief.",
  audio: { output: { voice: { id: "voice_1234" }, format: { type: "audio/pcmu" } } },
};

let agentRelay: RelayProcess;
let openAIRelay: RelayProcess;
let openAI: ScriptedOpenAI;
const clients: EventClient[] = [];

beforeAll(async () => {
  openAI = await ScriptedOpenAI.start();
  [agentRelay, openAIRelay] = await Promise.all([
    startRelayProc({ id: "relay-test", secret: TEST_SECRET }),
    startRelayProc({ id: "relay-test", secret: TEST_SECRET, inferenceUrl: openAI.url }),
  ]);
}, 60_000);
afterAll(async () => {
  await agentRelay?.stop("SIGKILL");
  await openAIRelay?.stop("SIGKILL");
  await openAI?.close();
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

async function place(relay: RelayProcess, session: unknown): Promise<EventClient> {
  const client = new EventClient();
  clients.push(client);
  expect((await client.call(relay.url, session)).status).toBe(201);
  await client.connected();
  await client.channelOpen();
  return client;
}

const sendEvent = (client: EventClient, event: object) => client.channel.send(JSON.stringify(event));

describe("through a real relay and the built-in agent", () => {
  it("the first event is session.created with the minted session; the client's own update gets the first session.updated; audio flows", async () => {
    const client = await place(agentRelay, MINTED);
    // What the Agents SDK does on channel open.
    sendEvent(client, {
      type: "session.update",
      session: {
        type: "realtime",
        instructions: "Speak like a pirate.",
        audio: { output: { voice: "marin" } },
      },
    });
    const updated = await client.waitEvent("session.updated");
    const created = client.events[0]!;
    expect(created.type).toBe("session.created");
    expect(created.session).toMatchObject({
      instructions: MINTED.instructions,
      audio: { output: { voice: { id: "voice_1234" }, format: { type: "audio/pcmu" } } },
    });
    expect(client.events.map((e) => e.type).indexOf("session.updated")).toBe(1);
    expect(updated.session).toMatchObject({
      instructions: "Speak like a pirate.",
      audio: { output: { voice: "marin" } },
    });
    await expectEchoOf(client, 440);
    expect(client.events.filter((e) => e.type === "session.updated")).toHaveLength(1);
    expect(client.errors()).toEqual([]);
  }, 30_000);

  it("session.update takes every documented shape and refuses wrong ones naming the param", async () => {
    const client = await place(agentRelay, {});
    await client.waitEvent("session.created");
    const valid = Object.values(VALID_SESSIONS);
    for (const [i, session] of valid.entries()) {
      sendEvent(client, { type: "session.update", event_id: `evt_valid_${i}`, session });
      await waitFor(
        () => client.events.filter((e) => e.type === "session.updated").length === i + 1,
        5000,
        `the answer to example ${i}`,
      );
    }
    for (const [i, { session }] of INVALID_SESSIONS.entries()) {
      sendEvent(client, { type: "session.update", event_id: `evt_invalid_${i}`, session });
    }
    await waitFor(
      () => client.errors().length === INVALID_SESSIONS.length,
      5000,
      "an error for each wrong one",
    );
    expect(client.errors().map((e) => e.error)).toEqual(
      INVALID_SESSIONS.map(({ code, param }, i) =>
        expect.objectContaining({ type: "invalid_request_error", code, param, event_id: `evt_invalid_${i}` }),
      ),
    );
    // None of them reached the model: no more answers than valid updates.
    expect(client.events.filter((e) => e.type === "session.updated")).toHaveLength(valid.length);
  }, 30_000);
});

describe("through a real relay and an upstream scripted as OpenAI's server", () => {
  it("the client sees the minted session merged into OpenAI's defaults, first; the model was told PCM", async () => {
    const client = await place(openAIRelay, MINTED);
    const created = await client.waitEvent("session.created");
    expect(client.events[0]).toBe(created);
    expect(created.session).toMatchObject({
      object: "realtime.session",
      instructions: MINTED.instructions,
      model: "gpt-realtime",
      audio: {
        input: { turn_detection: { type: "server_vad", silence_duration_ms: 200 } },
        output: { voice: { id: "voice_1234" }, format: { type: "audio/pcmu" }, speed: 1 },
      },
    });
    const told = openAI.connections.at(-1)!.received[0]!;
    expect(told).toMatchObject({
      type: "session.update",
      session: { audio: { output: { format: { type: "audio/pcm", rate: 24000 } } } },
    });
    await new Promise((r) => setTimeout(r, 200));
    expect(client.events.map((e) => e.type)).toEqual(["session.created"]);
  }, 30_000);
});
