// What a new model session is primed with: the recent items within the token budget, with
// their ids; older turns as one system message; a tool call never split from its output.
import { describe, expect, it } from "vitest";
import type { LogItem } from "../../../protocol/relay-api.ts";
import { estimateTokens, planReplay, withModalities } from "../../../relay/inference/conversation-replay.ts";

const say = (id: string, role: "user" | "assistant", text: string): LogItem => ({
  id,
  previous_item_id: null,
  type: "message",
  role,
  text,
});
const items = (plan: { events: string[] }) =>
  plan.events.map((e) => (JSON.parse(e) as { item: Record<string, unknown> }).item);

describe("planReplay", () => {
  it("replays a short conversation whole, in order, with the original ids", () => {
    const log = [say("u1", "user", "Hi, I am Ada."), say("a1", "assistant", "Hello Ada.")];
    const plan = planReplay(log, 8000);
    expect(plan).toMatchObject({ replayed: 2, summarised: 0, dropped: 0, itemIds: ["u1", "a1"] });
    expect(items(plan)).toEqual([
      { id: "u1", type: "message", role: "user", content: [{ type: "input_text", text: "Hi, I am Ada." }] },
      {
        id: "a1",
        type: "message",
        role: "assistant",
        content: [{ type: "output_text", text: "Hello Ada." }],
      },
    ]);
    for (const event of plan.events) expect(JSON.parse(event).event_id).toMatch(/^event_relay_/);
  });

  it("keeps the budget: the newest turns as items, older ones as one system message, the oldest dropped", () => {
    const words = "x".repeat(396); // 100 tokens with the item's overhead
    const log = Array.from({ length: 40 }, (_, n) => say(`i${n}`, n % 2 ? "assistant" : "user", words));
    expect(estimateTokens(log[0]!)).toBe(103);
    const plan = planReplay(log, 1000);
    // 800 tokens for items (7 of 103), 200 for the summary (about 800 characters: 1 line of 400+).
    expect(plan.replayed).toBe(7);
    expect(plan.itemIds.slice(1)).toEqual(["i33", "i34", "i35", "i36", "i37", "i38", "i39"]);
    const summary = items(plan)[0]!;
    expect(summary).toMatchObject({ type: "message", role: "system" });
    const text = (summary.content as { text: string }[])[0]!.text;
    expect(text).toMatch(/^Conversation so far/);
    expect(text.length).toBeLessThanOrEqual((1000 - 7 * 103) * 4);
    expect(plan.summarised).toBeGreaterThan(0);
    expect(plan.replayed + plan.summarised + plan.dropped).toBe(40);
    const total = plan.events.reduce((n, e) => n + JSON.parse(e).item.content[0].text.length / 4, 0);
    expect(total).toBeLessThanOrEqual(1000);
  });

  it("never splits a tool call from its output, and leaves out what cannot be told", () => {
    const log: LogItem[] = [
      say("u1", "user", "x".repeat(2000)),
      {
        id: "fc",
        previous_item_id: null,
        type: "function_call",
        call_id: "call_1",
        name: "f",
        arguments: "{}",
      },
      {
        id: "fo",
        previous_item_id: null,
        type: "function_call_output",
        call_id: "call_1",
        output: "y".repeat(400),
      },
      {
        id: "orphan",
        previous_item_id: null,
        type: "function_call_output",
        call_id: "call_gone",
        output: "z",
      },
      { id: "u2", previous_item_id: null, type: "message", role: "user" }, // never transcribed
      say("a1", "assistant", "Done."),
    ];
    // Room for a1 and the output, not for the call too: both go to the summary together.
    const tight = planReplay(log, (estimateTokens(log[5]!) + estimateTokens(log[2]!) + 4) / 0.8);
    expect(tight.itemIds.slice(-1)).toEqual(["a1"]);
    expect(tight.itemIds).not.toContain("fo");
    const roomy = planReplay(log, 8000);
    expect(roomy.itemIds).toEqual(["u1", "fc", "fo", "a1"]);
  });

  it("skips items a session already has (a rollover's catch-up)", () => {
    const log = [say("u1", "user", "one"), say("a1", "assistant", "two"), say("u2", "user", "three")];
    expect(planReplay(log, Number.POSITIVE_INFINITY, new Set(["u1", "a1"])).itemIds).toEqual(["u2"]);
  });
});

describe("withModalities", () => {
  it("says a realtime session speaks unless it chose otherwise", () => {
    expect(withModalities({ instructions: "hi" })).toEqual({
      instructions: "hi",
      output_modalities: ["audio"],
    });
    expect(withModalities({ output_modalities: ["text"] })).toEqual({ output_modalities: ["text"] });
    expect(withModalities({ type: "transcription" })).toEqual({ type: "transcription" });
  });
});
