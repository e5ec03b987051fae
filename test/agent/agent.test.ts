import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentServer } from "../../agent/agent-server.ts";
import { RealtimeTestClient } from "./realtime-client.ts";
import { concat, dbfs, dominantFrequency, sine, voicedMs } from "../support/audio.ts";

let agent: AgentServer;
const clients: RealtimeTestClient[] = [];

beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, speed: 20 });
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await agent.close();
  await agent.close();
});

async function connect(query = ""): Promise<RealtimeTestClient> {
  const client = await RealtimeTestClient.connect(agent.url + query);
  clients.push(client);
  await client.waitFor("session.created");
  return client;
}

/** A user "utterance": 200 ms silence, a tone, then 800 ms silence (ends the turn). */
function utterance(frequency: number, seconds: number): Int16Array {
  return concat([new Int16Array(4800), sine(frequency, seconds * 1000, 8000), new Int16Array(19_200)]);
}

describe("built-in agent: session", () => {
  it("accepts audio/pcm at 24 kHz and rejects other formats with an error naming the field", async () => {
    const client = await connect();
    client.send({
      type: "session.update",
      session: { type: "realtime", audio: { input: { format: { type: "audio/pcm", rate: 24000 } } } },
    });
    await client.waitFor("session.updated");
    client.send({
      type: "session.update",
      event_id: "evt_rate",
      session: { audio: { output: { format: { type: "audio/pcm", rate: 16000 } } } },
    });
    const error = await client.waitFor("error");
    // OpenAI's PCM is 24 kHz only: the shared schema names the rate itself.
    expect(error.error).toMatchObject({
      type: "invalid_request_error",
      param: "session.audio.output.format.rate",
      event_id: "evt_rate",
    });
    // A valid format the agent does not speak is its own refusal.
    client.send({
      type: "session.update",
      event_id: "evt_ulaw",
      session: { audio: { output: { format: { type: "audio/pcmu" } } } },
    });
    const ulaw = await client.waitFor(
      "error",
      (e) => (e.error as { event_id: string }).event_id === "evt_ulaw",
    );
    expect(ulaw.error).toMatchObject({ param: "session.audio.output.format" });
  });

  it("answers malformed events with error events and keeps the session", async () => {
    const client = await connect();
    client.send("{not json");
    client.send({ no_type: true });
    client.send({ type: "input_audio_buffer.append", audio: "***" });
    client.send({ type: "conversation.item.truncate", item_id: "x", content_index: -1, audio_end_ms: 0 });
    client.send({ type: "made.up.event" });
    for (let n = 1; n <= 5; n++) await client.waitFor("error", () => client.ofType("error").length >= n);
    expect(client.ofType("error").map((e) => (e.error as { code: string }).code)).toEqual([
      "invalid_json",
      "missing_type",
      "invalid_value",
      "invalid_value",
      "unknown_event",
    ]);
    client.send({ type: "input_audio_buffer.clear" });
    await client.waitFor("input_audio_buffer.cleared");
  });
});

describe("built-in agent: server VAD and replies", () => {
  it("detects a spoken turn and echoes it back: same pitch, same length, audible", async () => {
    const client = await connect("?reply=echo");
    client.appendAudio(utterance(440, 1.0));
    const started = await client.waitFor("input_audio_buffer.speech_started");
    const stopped = await client.waitFor("input_audio_buffer.speech_stopped");
    const committed = await client.waitFor("input_audio_buffer.committed");
    // Onset at 200 ms, reported with the 300 ms prefix padding (clamped at the buffer start).
    expect(started.audio_start_ms).toBe(0);
    // The tone ends at 1200 ms; the turn ends after 500 ms of silence.
    expect(stopped.audio_end_ms).toBeGreaterThanOrEqual(1680);
    expect(stopped.audio_end_ms).toBeLessThanOrEqual(1760);
    expect(committed.item_id).toBe(started.item_id);
    const created = await client.waitFor("response.created");
    const responseId = (created.response as { id: string }).id;
    const done = await client.waitFor("response.done");
    expect((done.response as { status: string }).status).toBe("completed");
    const reply = client.responseAudio(responseId);
    // The echoed segment: the tone plus up to the padding before it.
    expect(reply.length / 24).toBeGreaterThanOrEqual(1000);
    expect(reply.length / 24).toBeLessThanOrEqual(1260);
    expect(voicedMs(reply)).toBeGreaterThanOrEqual(980);
    expect(dominantFrequency(reply, [220, 330, 440, 550, 660, 880])).toBe(440);
    expect(dbfs(reply.subarray(4800, 24_000))).toBeGreaterThan(-16);
  });

  it("echoes a different pitch when the user speaks a different pitch", async () => {
    const client = await connect("?reply=echo");
    client.appendAudio(utterance(660, 0.6));
    const created = await client.waitFor("response.created");
    await client.waitFor("response.done");
    const reply = client.responseAudio((created.response as { id: string }).id);
    expect(dominantFrequency(reply, [220, 330, 440, 550, 660, 880])).toBe(660);
  });

  it("speaks a sentence with eSpeak by default, with a transcript", async () => {
    const client = await connect();
    client.appendAudio(utterance(300, 0.8));
    const created = await client.waitFor("response.created");
    const done = await client.waitFor("response.done");
    expect((done.response as { status: string }).status).toBe("completed");
    const reply = client.responseAudio((created.response as { id: string }).id);
    const transcriptDone = await client.waitFor("response.output_audio_transcript.done");
    const deltas = client
      .ofType("response.output_audio_transcript.delta")
      .map((e) => e.delta)
      .join("");
    expect(deltas).toBe(transcriptDone.transcript);
    expect(transcriptDone.transcript).toMatch(/Earshot's built-in agent/);
    // A sentence of ~25 words: several seconds of speech, mostly voiced, at a speaking level.
    expect(reply.length / 24).toBeGreaterThan(3000);
    expect(voicedMs(reply)).toBeGreaterThan(0.5 * (reply.length / 24));
    expect(dbfs(reply)).toBeGreaterThan(-30);
    expect(agent.tts.lastSynthesisMs).toBeGreaterThan(0);
    console.log(
      `agent TTS: ${reply.length / 24} ms of speech synthesised in ${agent.tts.lastSynthesisMs.toFixed(0)} ms`,
    );
    // Event order of a GA response.
    const order = client.events
      .map((e) => e.type)
      .filter((t) => t.startsWith("response.") && !t.endsWith(".delta"));
    expect(order).toEqual([
      "response.created",
      "response.output_item.added",
      "response.content_part.added",
      "response.output_audio.done",
      "response.output_audio_transcript.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.done",
    ]);
  });
});

describe("built-in agent: cancel and truncate", () => {
  it("stops a response on response.cancel and sends no more of its audio", async () => {
    const slow = await AgentServer.start({ port: 0, speed: 1 });
    try {
      const client = await RealtimeTestClient.connect(slow.url);
      clients.push(client);
      client.send({ type: "response.create" });
      const firstDelta = await client.waitFor("response.output_audio.delta");
      client.send({ type: "response.cancel" });
      const done = await client.waitFor("response.done");
      expect(done.response).toMatchObject({
        status: "cancelled",
        status_details: { type: "cancelled", reason: "client_cancelled" },
      });
      const cancelledAt = client.events.indexOf(done);
      // Another full response proves time passed; none of the first one's deltas came after.
      client.send({ type: "response.cancel" });
      const notActive = await client.waitFor("error", undefined, { from: cancelledAt });
      expect((notActive.error as { code: string }).code).toBe("response_cancel_not_active");
      client.send({ type: "response.create" });
      const second = await client.waitFor(
        "response.output_audio.delta",
        (e) => e.response_id !== firstDelta.response_id,
      );
      client.send({ type: "response.cancel" });
      await client.waitFor("response.done", (e) => (e.response as { id: string }).id === second.response_id);
      const late = client.events
        .slice(cancelledAt)
        .filter((e) => e.type === "response.output_audio.delta" && e.response_id === firstDelta.response_id);
      expect(late).toEqual([]);
    } finally {
      await slow.close();
    }
  });

  it("truncates to audio_end_ms, at the generated length, and rejects one ms past it", async () => {
    const client = await connect();
    client.send({ type: "response.create" });
    const created = await client.waitFor("response.created");
    await client.waitFor("response.done");
    const responseId = (created.response as { id: string }).id;
    const itemId = client
      .ofType("response.output_audio.delta")
      .find((e) => e.response_id === responseId)!.item_id;
    const generatedMs = Math.floor(client.responseAudio(responseId).length / 24);

    client.send({
      type: "conversation.item.truncate",
      item_id: itemId,
      content_index: 0,
      audio_end_ms: generatedMs + 1,
    });
    const error = await client.waitFor("error");
    expect(error.error).toMatchObject({
      type: "invalid_request_error",
      param: "audio_end_ms",
      message: `Audio content of ${generatedMs}ms is already shorter than ${generatedMs + 1}ms`,
    });
    client.send({
      type: "conversation.item.truncate",
      item_id: itemId,
      content_index: 0,
      audio_end_ms: generatedMs,
    });
    await client.waitFor("conversation.item.truncated", (e) => e.audio_end_ms === generatedMs);
    client.send({ type: "conversation.item.truncate", item_id: itemId, content_index: 0, audio_end_ms: 500 });
    const truncated = await client.waitFor("conversation.item.truncated", (e) => e.audio_end_ms === 500);
    expect(truncated).toMatchObject({ item_id: itemId, content_index: 0 });
    // The item is now 500 ms long: 501 is past its end.
    client.send({ type: "conversation.item.truncate", item_id: itemId, content_index: 0, audio_end_ms: 501 });
    await client.waitFor(
      "error",
      (e) =>
        (e.error as { message: string }).message === "Audio content of 500ms is already shorter than 501ms",
    );
    client.send({
      type: "conversation.item.truncate",
      item_id: "item_nope",
      content_index: 0,
      audio_end_ms: 0,
    });
    await client.waitFor(
      "error",
      (e) => (e.error as { code: string }).code === "item_truncate_invalid_item_id",
    );
  });
});
