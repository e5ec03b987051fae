// A built-in agent session's conversation: its items in order, as OpenAI's `realtime.item`s, with
// the audio each carries (what `conversation.item.retrieve` returns and truncate is checked
// against). Bounded: the oldest items go past MAX_ITEMS, and audio past MAX_RETAINED_AUDIO_SAMPLES
// is dropped from the oldest items (they are still retrievable, without their audio).
import { PCM_SAMPLE_RATE } from "../relay/media/audio-format.ts";

export const MAX_ITEMS = 256;
export const MAX_RETAINED_AUDIO_SAMPLES = 120 * PCM_SAMPLE_RATE;

export type RealtimeItem = Record<string, unknown> & { id: string; type: string };

export interface ConversationEntry {
  item: RealtimeItem;
  /** User input audio or assistant output audio, shared (never copied) and read up to `audioSamples`. */
  audio: Int16Array | null;
  /** Assistant audio generated so far (or kept after a truncate), in samples. */
  audioSamples: number;
}

export class Conversation {
  readonly #entries = new Map<string, ConversationEntry>();
  /** Item ids in conversation order. */
  #order: string[] = [];
  #retainedSamples = 0;

  get lastItemId(): string | null {
    return this.#order.at(-1) ?? null;
  }

  get last(): ConversationEntry | undefined {
    const id = this.lastItemId;
    return id ? this.#entries.get(id) : undefined;
  }

  get(id: string): ConversationEntry | undefined {
    return this.#entries.get(id);
  }

  has(id: string): boolean {
    return this.#entries.has(id);
  }

  /**
   * Adds an item after `previousItemId` (null: at the start; undefined: at the end) and returns
   * the id of the item it follows.
   */
  add(item: RealtimeItem, audio: Int16Array | null = null, previousItemId?: string | null): string | null {
    if (this.#entries.has(item.id)) this.delete(item.id);
    const entry: ConversationEntry = { item, audio, audioSamples: audio?.length ?? 0 };
    this.#entries.set(item.id, entry);
    let at = this.#order.length;
    if (previousItemId === null) at = 0;
    else if (previousItemId !== undefined) at = this.#order.indexOf(previousItemId) + 1;
    const previous = at > 0 ? this.#order[at - 1]! : null;
    this.#order.splice(at, 0, item.id);
    if (this.#order.length > MAX_ITEMS) this.delete(this.#order[0]!);
    this.#retain(audio?.length ?? 0);
    return previous;
  }

  /** Replaces an item's object in place (its status or content changed), keeping its audio. */
  update(item: RealtimeItem): void {
    const entry = this.#entries.get(item.id);
    if (entry) entry.item = item;
  }

  /** The latest item matching `predicate`. */
  find(predicate: (item: RealtimeItem) => boolean): RealtimeItem | undefined {
    for (let i = this.#order.length - 1; i >= 0; i--) {
      const item = this.#entries.get(this.#order[i]!)!.item;
      if (predicate(item)) return item;
    }
    return undefined;
  }

  /** Records assistant audio as it is generated (the samples are already in `audio`). */
  setAudio(id: string, audio: Int16Array, samples: number): void {
    const entry = this.#entries.get(id);
    if (!entry) return;
    const before = entry.audio ? entry.audio.length : 0;
    entry.audio = audio;
    entry.audioSamples = samples;
    this.#retain(audio.length - before);
  }

  delete(id: string): boolean {
    const entry = this.#entries.get(id);
    if (!entry) return false;
    this.#entries.delete(id);
    this.#order = this.#order.filter((other) => other !== id);
    this.#retainedSamples -= entry.audio?.length ?? 0;
    return true;
  }

  /** The item as `conversation.item.retrieved` carries it: its content with base64 audio. */
  retrieve(id: string): RealtimeItem | undefined {
    const entry = this.#entries.get(id);
    if (!entry) return undefined;
    const content = entry.item.content;
    if (!entry.audio || !Array.isArray(content)) return entry.item;
    const pcm = entry.audio.subarray(0, entry.audioSamples);
    const audio = Buffer.from(pcm.buffer, pcm.byteOffset, pcm.byteLength).toString("base64");
    return {
      ...entry.item,
      content: content.map((part: { type?: unknown }) =>
        part.type === "input_audio" || part.type === "output_audio" ? { ...part, audio } : part,
      ),
    };
  }

  #retain(samples: number): void {
    this.#retainedSamples += samples;
    for (const id of this.#order) {
      if (this.#retainedSamples <= MAX_RETAINED_AUDIO_SAMPLES) return;
      const entry = this.#entries.get(id)!;
      if (!entry.audio || id === this.lastItemId) continue;
      this.#retainedSamples -= entry.audio.length;
      entry.audio = null;
    }
  }
}
