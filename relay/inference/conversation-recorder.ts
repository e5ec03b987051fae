// The call's conversation, as the edge keeps it (its CallSession's log): each item the model's
// events describe, reduced to ids, roles, text and transcripts, function calls and outputs, never
// audio. Items that changed are sent a while later in one `log` event (or several, each within
// MAX_LOG_EVENT_BYTES), so a reply's many events cost one report, batched by the edge client
// with the call's other events. Fed from the bridge's server-event path, never the media path.
import { MAX_LOG_ITEMS_PER_EVENT, MAX_LOG_TEXT_CHARS, type LogItem } from "../../protocol/relay-api.ts";
import type { ServerEvent } from "../../protocol/realtime.ts";

/** How long a changed item waits for more changes before it is reported. */
export const LOG_FLUSH_MS = 500;
/** Most bytes of JSON one `log` event's items take (a batch to the edge holds 128 KiB). */
export const MAX_LOG_EVENT_BYTES = 32 * 1024;
/** Changed items held before they are reported at once, whatever the timer. */
const MAX_PENDING_ITEMS = 100;
/** Items whose place (previous_item_id) and content the recorder remembers, most recent kept. */
const MAX_KNOWN_ITEMS = 1000;

export interface ConversationRecorderOptions {
  /** Reports items that are new or changed, in conversation order. Never throws. */
  report: (items: LogItem[]) => void;
  /** How much of an item's audio the model generated, in ms (the PlayoutLedger's); 0 if unknown. */
  generatedMs?: (itemId: string) => number;
  flushMs?: number;
}

export class ConversationRecorder {
  readonly #options: ConversationRecorderOptions;
  /** Every item seen, at its latest version, in the order first seen (bounded). */
  readonly #known = new Map<string, LogItem>();
  /** A barged-in reply's share of its audio the caller heard (0..1), to cut its transcript. */
  readonly #heard = new Map<string, { share: number; cut?: string }>();
  /** Ids changed since the last report, in the order they changed first. */
  readonly #changed = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: ConversationRecorderOptions) {
    this.#options = options;
  }

  /** A server event from the model (any type; those that say nothing about items are ignored). */
  observe(event: ServerEvent): void {
    if (this.#closed) return;
    switch (event.type) {
      case "conversation.item.added":
      case "conversation.item.created":
      case "conversation.item.done":
        this.#item(event.item, event.previous_item_id);
        return;
      case "response.output_item.done":
        this.#item(event.item, undefined);
        return;
      case "conversation.item.truncated": {
        const generated = this.#options.generatedMs?.(event.item_id) ?? 0;
        if (generated > 0 && this.#heard.size < MAX_KNOWN_ITEMS)
          this.#heard.set(event.item_id, { share: Math.min(1, event.audio_end_ms / generated) });
        this.#update(event.item_id, { truncated_at_ms: Math.round(event.audio_end_ms) });
        return;
      }
      default:
        return;
    }
  }

  /** An event the protocol module does not know: the user's transcript arrives as one. */
  observeUnknown(type: string, text: string): void {
    if (this.#closed || type !== "conversation.item.input_audio_transcription.completed") return;
    let event: unknown;
    try {
      event = JSON.parse(text);
    } catch {
      return;
    }
    if (!isRecord(event) || typeof event.item_id !== "string" || typeof event.transcript !== "string") return;
    this.#update(event.item_id, { text: clip(event.transcript) });
  }

  /**
   * Items the call had before it came to this relay (a resumed call): known, so a rollover
   * replays them and their later changes are reported whole, but not reported again as they are.
   */
  adopt(items: readonly LogItem[]): void {
    for (const item of items) if (this.#known.size < MAX_KNOWN_ITEMS) this.#known.set(item.id, item);
  }

  /** The conversation as recorded, oldest first (the most recent MAX_KNOWN_ITEMS items). */
  items(): LogItem[] {
    return [...this.#known.values()];
  }

  /** Reports what is left; nothing after. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.flush();
    this.#closed = true;
  }

  flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#changed.size === 0) return;
    const items: LogItem[] = [];
    for (const id of this.#changed) {
      const item = this.#known.get(id);
      if (item) items.push(item);
    }
    this.#changed.clear();
    let chunk: LogItem[] = [];
    let bytes = 0;
    for (const item of items) {
      const size = Buffer.byteLength(JSON.stringify(item)) + 1;
      if (
        chunk.length > 0 &&
        (chunk.length === MAX_LOG_ITEMS_PER_EVENT || bytes + size > MAX_LOG_EVENT_BYTES)
      ) {
        this.#options.report(chunk);
        chunk = [];
        bytes = 0;
      }
      chunk.push(item);
      bytes += size;
    }
    if (chunk.length > 0) this.#options.report(chunk);
  }

  #item(raw: Record<string, unknown> & { id: string }, previous: string | null | undefined): void {
    const known = this.#known.get(raw.id);
    const item = toLogItem(raw, previous !== undefined ? previous : (known?.previous_item_id ?? null));
    if (!item) return;
    // A later version may leave out what an earlier one had (an item's `done` without its
    // transcript yet): keep both.
    this.#put({ ...known, ...item, ...(item.text === undefined && known?.text ? { text: known.text } : {}) });
  }

  #update(id: string, change: Partial<LogItem>): void {
    const known = this.#known.get(id);
    if (!known) return;
    this.#put({ ...known, ...change });
  }

  #put(item: LogItem): void {
    const heard = this.#heard.get(item.id);
    // Cut each new transcript once: a text that is already the cut one stays as it is.
    if (heard && item.text !== undefined && item.text !== heard.cut) {
      heard.cut = cutAt(item.text, heard.share);
      item = { ...item, text: heard.cut };
    }
    if (!this.#known.has(item.id) && this.#known.size >= MAX_KNOWN_ITEMS) {
      this.#known.delete(this.#known.keys().next().value!);
    }
    this.#known.set(item.id, item);
    this.#changed.add(item.id);
    if (this.#changed.size >= MAX_PENDING_ITEMS) this.flush();
    else this.#timer ??= setTimeout(() => this.flush(), this.#options.flushMs ?? LOG_FLUSH_MS);
  }
}

const ID = /^.{1,64}$/s;

/** The item as the log keeps it, or undefined for an item it cannot name (an id too long). */
function toLogItem(
  raw: Record<string, unknown> & { id: string },
  previous: string | null,
): LogItem | undefined {
  if (!ID.test(raw.id)) return undefined;
  const previousItemId = previous !== null && ID.test(previous) ? previous : null;
  const base = { id: raw.id, previous_item_id: previousItemId };
  switch (raw.type) {
    case "function_call":
      return {
        ...base,
        type: "function_call",
        ...shortString("call_id", raw.call_id),
        ...shortString("name", raw.name),
        ...(typeof raw.arguments === "string" ? { arguments: clip(raw.arguments) } : {}),
      };
    case "function_call_output":
      return {
        ...base,
        type: "function_call_output",
        ...shortString("call_id", raw.call_id),
        ...(typeof raw.output === "string" ? { output: clip(raw.output) } : {}),
      };
    case "message": {
      const role =
        raw.role === "user" || raw.role === "assistant" || raw.role === "system" ? raw.role : undefined;
      const text = contentText(raw.content);
      return {
        ...base,
        type: "message",
        ...(role ? { role } : {}),
        ...(text === undefined ? {} : { text: clip(text) }),
      };
    }
    default:
      return undefined;
  }
}

/** A message's words: its text parts, or its audio parts' transcripts; undefined if none yet. */
function contentText(content: unknown): string | undefined {
  if (!Array.isArray(content)) return undefined;
  const parts: string[] = [];
  for (const part of content) {
    if (!isRecord(part)) continue;
    if (typeof part.text === "string") parts.push(part.text);
    else if (typeof part.transcript === "string") parts.push(part.transcript);
  }
  return parts.length > 0 ? parts.join("") : undefined;
}

function shortString<K extends string>(key: K, value: unknown): Partial<Record<K, string>> {
  return typeof value === "string" && ID.test(value) ? ({ [key]: value } as Record<K, string>) : {};
}

/**
 * The words of a transcript the caller heard, if its speech was even: the share `heard` of its
 * characters, back to the last word boundary. Speech rate varies, so this is an estimate; the
 * relay knows only how much audio was generated and how much was played.
 */
function cutAt(text: string, heard: number): string {
  if (heard >= 1) return text;
  const end = Math.round(text.length * heard);
  const space = text.lastIndexOf(" ", end);
  return text.slice(0, space > 0 ? space : end);
}

const clip = (text: string) => (text.length > MAX_LOG_TEXT_CHARS ? text.slice(0, MAX_LOG_TEXT_CHARS) : text);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
