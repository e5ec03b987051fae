// The relay's record of the conversation for the edge's log: items from the model's events, in
// order, each reported again when it changes, never audio, bounded per item and per event.
import { afterEach, describe, expect, it, vi } from "vitest";
import { LogItem, MAX_LOG_ITEMS_PER_EVENT, MAX_LOG_TEXT_CHARS } from "../../../protocol/relay-api.ts";
import { parseServerEvent, type ServerEvent } from "../../../protocol/realtime.ts";
import {
  ConversationRecorder,
  LOG_FLUSH_MS,
  MAX_LOG_EVENT_BYTES,
} from "../../../relay/inference/conversation-recorder.ts";

afterEach(() => {
  vi.useRealTimers();
});

function recording() {
  const reports: LogItem[][] = [];
  const recorder = new ConversationRecorder({ report: (items) => reports.push(items) });
  /** Feeds a model event as the bridge does: parsed first, unknown types by their text. */
  const feed = (event: Record<string, unknown>) => {
    const text = JSON.stringify({ event_id: "event_1", ...event });
    const parsed = parseServerEvent(text);
    if (parsed.kind === "known") recorder.observe(parsed.event as ServerEvent);
    else if (parsed.kind === "unknown") recorder.observeUnknown(parsed.type, text);
    else throw new Error(`not a server event: ${parsed.message}`);
  };
  return { reports, recorder, feed };
}

describe("the conversation recorder", () => {
  it("reports user and assistant messages, a function call and its output, with transcripts and truncation, after a pause", () => {
    vi.useFakeTimers();
    const { reports, recorder, feed } = recording();
    feed({
      type: "conversation.item.added",
      previous_item_id: null,
      item: {
        id: "item_u",
        type: "message",
        role: "user",
        content: [{ type: "input_audio", transcript: null }],
      },
    });
    feed({
      type: "conversation.item.input_audio_transcription.completed",
      item_id: "item_u",
      content_index: 0,
      transcript: "weather in Paris?",
    });
    feed({
      type: "conversation.item.added",
      previous_item_id: "item_u",
      item: { id: "item_f", type: "function_call", call_id: "call_1", name: "get_weather", arguments: "" },
    });
    feed({
      type: "response.output_item.done",
      response_id: "resp_1",
      output_index: 0,
      item: {
        id: "item_f",
        type: "function_call",
        call_id: "call_1",
        name: "get_weather",
        arguments: '{"city":"Paris"}',
      },
    });
    feed({
      type: "conversation.item.added",
      previous_item_id: "item_f",
      item: { id: "item_o", type: "function_call_output", call_id: "call_1", output: '{"temp":18}' },
    });
    feed({
      type: "conversation.item.done",
      previous_item_id: "item_o",
      item: {
        id: "item_a",
        type: "message",
        role: "assistant",
        content: [{ type: "output_audio", audio: "AAAA", transcript: "It is 18 degrees in Paris" }],
      },
    });
    feed({ type: "conversation.item.truncated", item_id: "item_a", content_index: 0, audio_end_ms: 640 });
    expect(reports).toEqual([]);
    vi.advanceTimersByTime(LOG_FLUSH_MS);
    expect(reports).toHaveLength(1);
    expect(reports[0]).toEqual([
      { id: "item_u", previous_item_id: null, type: "message", role: "user", text: "weather in Paris?" },
      // Added with empty arguments, then done with them: the done's, at the added's place.
      {
        id: "item_f",
        previous_item_id: "item_u",
        type: "function_call",
        call_id: "call_1",
        name: "get_weather",
        arguments: '{"city":"Paris"}',
      },
      {
        id: "item_o",
        previous_item_id: "item_f",
        type: "function_call_output",
        call_id: "call_1",
        output: '{"temp":18}',
      },
      {
        id: "item_a",
        previous_item_id: "item_o",
        type: "message",
        role: "assistant",
        text: "It is 18 degrees in Paris",
        truncated_at_ms: 640,
      },
    ]);
    for (const item of reports[0]!) expect(LogItem.safeParse(item).success).toBe(true);
    expect(JSON.stringify(reports)).not.toContain("AAAA"); // never audio
    recorder.close();
    expect(reports).toHaveLength(1);
  });

  it(`cuts a text at ${MAX_LOG_TEXT_CHARS} characters and reports at most ${MAX_LOG_ITEMS_PER_EVENT} items or ${MAX_LOG_EVENT_BYTES / 1024} KiB an event; close reports what is left`, () => {
    const { reports, recorder, feed } = recording();
    const long = "é".repeat(MAX_LOG_TEXT_CHARS + 1);
    for (let i = 0; i < MAX_LOG_ITEMS_PER_EVENT + 1; i++) {
      feed({
        type: "conversation.item.added",
        previous_item_id: i === 0 ? null : `item_${i - 1}`,
        item: {
          id: `item_${i}`,
          type: "message",
          role: "user",
          content: [{ type: "input_text", text: long }],
        },
      });
    }
    recorder.close();
    const items = reports.flat();
    expect(items.map((item) => item.id)).toEqual(
      Array.from({ length: MAX_LOG_ITEMS_PER_EVENT + 1 }, (_, i) => `item_${i}`),
    );
    expect(items.every((item) => item.text!.length === MAX_LOG_TEXT_CHARS)).toBe(true);
    for (const report of reports) {
      expect(report.length).toBeLessThanOrEqual(MAX_LOG_ITEMS_PER_EVENT);
      expect(Buffer.byteLength(JSON.stringify(report))).toBeLessThanOrEqual(MAX_LOG_EVENT_BYTES);
    }
    // 8 KiB of UTF-8 an item: three items an event.
    expect(reports.map((report) => report.length)).toEqual([3, 3, 3, 3, 3, 3, 3]);
    // Nothing after close.
    feed({
      type: "conversation.item.added",
      previous_item_id: null,
      item: { id: "item_late", type: "message", role: "user" },
    });
    recorder.close();
    expect(reports.flat()).toHaveLength(MAX_LOG_ITEMS_PER_EVENT + 1);
  });

  it("ignores what it cannot name or read: items of other types, ids over 64 characters, a transcript for an unknown item, bad JSON", () => {
    const { reports, recorder, feed } = recording();
    feed({
      type: "conversation.item.added",
      previous_item_id: null,
      item: { id: "x".repeat(65), type: "message", role: "user" },
    });
    feed({
      type: "conversation.item.added",
      previous_item_id: null,
      item: { id: "item_m", type: "mcp_list_tools" },
    });
    feed({
      type: "conversation.item.input_audio_transcription.completed",
      item_id: "item_none",
      transcript: "hi",
    });
    recorder.observeUnknown("conversation.item.input_audio_transcription.completed", "{not json");
    recorder.close();
    expect(reports).toEqual([]);
  });
});

describe("a barged-in reply", () => {
  it("keeps the words the caller heard, by the share of its audio played, and where it was cut", () => {
    const reports: LogItem[][] = [];
    const recorder = new ConversationRecorder({
      report: (items) => reports.push(items),
      generatedMs: (itemId) => (itemId === "item_a" ? 2000 : 0),
    });
    const observe = (event: Record<string, unknown>) => {
      const parsed = parseServerEvent(JSON.stringify({ event_id: "event_1", ...event }));
      if (parsed.kind === "known") recorder.observe(parsed.event as ServerEvent);
    };
    const reply = (transcript: string | null) => ({
      type: "conversation.item.done",
      previous_item_id: null,
      item: {
        id: "item_a",
        type: "message",
        role: "assistant",
        content: [{ type: "output_audio", transcript }],
      },
    });
    observe(reply(null));
    // Half of two seconds heard; the transcript arrives after the truncation.
    observe({ type: "conversation.item.truncated", item_id: "item_a", content_index: 0, audio_end_ms: 1000 });
    observe({ type: "conversation.item.truncated", item_id: "item_a", content_index: 0, audio_end_ms: 1000 });
    observe(reply("one two three four five six seven eight"));
    recorder.close();
    expect(reports.flat()).toEqual([
      {
        id: "item_a",
        previous_item_id: null,
        type: "message",
        role: "assistant",
        text: "one two three four",
        truncated_at_ms: 1000,
      },
    ]);
  });
});
