// The built-in agent's conversation store keeps its bounds: items (MAX_ITEMS) and the audio it
// retains for conversation.item.retrieve (MAX_RETAINED_AUDIO_SAMPLES), each at the limit and
// one past it.
import { describe, expect, it } from "vitest";
import { Conversation, MAX_ITEMS, MAX_RETAINED_AUDIO_SAMPLES } from "../../agent/conversation.ts";

const userItem = (id: string) => ({
  id,
  type: "message",
  object: "realtime.item",
  role: "user",
  content: [{ type: "input_audio", transcript: null }],
});

const audioOf = (id: string, conversation: Conversation) =>
  (conversation.retrieve(id)?.content as { audio?: string }[] | undefined)?.[0]?.audio;

describe("the agent's conversation", () => {
  it(`keeps ${MAX_ITEMS} items; one more drops the oldest`, () => {
    const conversation = new Conversation();
    for (let i = 0; i < MAX_ITEMS; i++) conversation.add(userItem(`item_${i}`));
    expect(conversation.has("item_0")).toBe(true);
    conversation.add(userItem("item_last"));
    expect(conversation.has("item_0")).toBe(false);
    expect(conversation.has("item_1")).toBe(true);
    expect(conversation.lastItemId).toBe("item_last");
  });

  it("keeps audio up to the retention limit; past it the oldest item loses its audio, not the item", () => {
    const conversation = new Conversation();
    const half = MAX_RETAINED_AUDIO_SAMPLES / 2;
    conversation.add(userItem("a"), new Int16Array(half).fill(1));
    conversation.add(userItem("b"), new Int16Array(half).fill(2));
    // Exactly at the limit: both keep their audio.
    expect(Buffer.from(audioOf("a", conversation)!, "base64").length).toBe(half * 2);
    expect(Buffer.from(audioOf("b", conversation)!, "base64").length).toBe(half * 2);
    // One sample past it: the oldest item's audio goes.
    conversation.add(userItem("c"), new Int16Array(1).fill(3));
    expect(conversation.has("a")).toBe(true);
    expect(audioOf("a", conversation)).toBeUndefined();
    expect(Buffer.from(audioOf("b", conversation)!, "base64").length).toBe(half * 2);
  });

  it("inserts after previous_item_id and reports the item it follows", () => {
    const conversation = new Conversation();
    expect(conversation.add(userItem("a"))).toBeNull();
    expect(conversation.add(userItem("c"))).toBe("a");
    expect(conversation.add(userItem("b"), null, "a")).toBe("a");
    expect(conversation.add(userItem("first"), null, null)).toBeNull();
    expect(conversation.lastItemId).toBe("c");
    expect(conversation.delete("b")).toBe(true);
    expect(conversation.delete("b")).toBe(false);
  });
});
