// A call's conversation log as the edge keeps it: the items the relay reported, in the order
// they first arrived (the conversation's), each at its latest version. It is what an operator
// reads after the call and what a later relay would replay into a new model session, so ids,
// previous_item_id and truncation are always kept; only text is given up to stay bounded.
import type { LogItem } from "../protocol/relay-api.ts";

/** Most characters of text (text, arguments, output) the log keeps over all its items. */
export const MAX_LOG_TEXT_CHARS = 64 * 1024;
/** Most items the log keeps; past it the oldest items go entirely (counted in items_dropped). */
export const MAX_LOG_ITEMS = 1000;

export interface StoredLog {
  items: LogItem[];
  /** Oldest items whose text was dropped to keep the log under MAX_LOG_TEXT_CHARS. */
  text_dropped_items: number;
  /** Oldest items dropped entirely past MAX_LOG_ITEMS. */
  items_dropped: number;
}

export const emptyLog = (): StoredLog => ({ items: [], text_dropped_items: 0, items_dropped: 0 });

const textOf = (item: LogItem) =>
  (item.text?.length ?? 0) + (item.arguments?.length ?? 0) + (item.output?.length ?? 0);

/**
 * Adds new items and replaces changed ones (same id), then drops what is over the bounds: first
 * the oldest items' text (a replayed conversation needs the latest turns most), then, past
 * MAX_LOG_ITEMS, the oldest items themselves.
 */
export function mergeLog(log: StoredLog, incoming: readonly LogItem[]): StoredLog {
  const items = [...log.items];
  const index = new Map(items.map((item, i) => [item.id, i]));
  for (const item of incoming) {
    const at = index.get(item.id);
    if (at === undefined) {
      index.set(item.id, items.length);
      items.push(item);
    } else {
      // A later version keeps what the earlier one knew and the new one leaves out (a truncation
      // reported without its text, a transcript without the truncation).
      items[at] = { ...items[at]!, ...item };
    }
  }
  let itemsDropped = log.items_dropped;
  if (items.length > MAX_LOG_ITEMS) {
    const excess = items.length - MAX_LOG_ITEMS;
    items.splice(0, excess);
    itemsDropped += excess;
  }
  let textDropped = log.text_dropped_items;
  let chars = items.reduce((sum, item) => sum + textOf(item), 0);
  for (let i = 0; i < items.length && chars > MAX_LOG_TEXT_CHARS; i++) {
    const item = items[i]!;
    const size = textOf(item);
    if (size === 0) continue;
    const { text: _text, arguments: _arguments, output: _output, ...bare } = item;
    items[i] = bare;
    chars -= size;
    textDropped++;
  }
  return { items, text_dropped_items: textDropped, items_dropped: itemsDropped };
}
