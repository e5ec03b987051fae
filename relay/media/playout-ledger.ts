// What the user has heard, to the frame. Per response item: how much audio the model generated
// and how much the pacer actually sent. Barge-in truncates the model's memory to `sentMs`, which
// is what makes `conversation.item.truncate` exact.
import { samplesToMs } from "./audio-format.ts";

interface ItemPlayout {
  contentIndex: number;
  generatedSamples: number;
  sentSamples: number;
}

export class PlayoutLedger {
  #items = new Map<string, ItemPlayout>();
  #order: string[] = [];
  static readonly MAX_ITEMS = 64;

  #item(itemId: string, contentIndex: number): ItemPlayout {
    let item = this.#items.get(itemId);
    if (!item) {
      item = { contentIndex, generatedSamples: 0, sentSamples: 0 };
      this.#items.set(itemId, item);
      this.#order.push(itemId);
      // Only recent items can be truncated; forget old ones so a long call stays small.
      if (this.#order.length > PlayoutLedger.MAX_ITEMS) this.#items.delete(this.#order.shift()!);
    }
    return item;
  }

  generated(itemId: string, contentIndex: number, samples: number): void {
    this.#item(itemId, contentIndex).generatedSamples += samples;
  }

  sent(itemId: string, contentIndex: number, samples: number): void {
    const item = this.#item(itemId, contentIndex);
    item.sentSamples = Math.min(item.generatedSamples, item.sentSamples + samples);
  }

  /** Whole ms of the item's audio that reached the wire; never more than was generated. */
  sentMs(itemId: string): number {
    const item = this.#items.get(itemId);
    return item ? Math.floor(samplesToMs(item.sentSamples)) : 0;
  }

  generatedMs(itemId: string): number {
    const item = this.#items.get(itemId);
    return item ? Math.floor(samplesToMs(item.generatedSamples)) : 0;
  }

  contentIndex(itemId: string): number {
    return this.#items.get(itemId)?.contentIndex ?? 0;
  }

  has(itemId: string): boolean {
    return this.#items.has(itemId);
  }
}
