// What a new model session is told of the call's conversation so far (a rollover, a reconnect).
// OpenAI's Realtime API has no way to resume a session, so the relay primes the new one with
// `conversation.item.create` events built from the conversation log (conversation-recorder.ts):
//
// - the most recent items, newest first, until the token budget is spent, replayed with their
//   original ids, so a client's later `conversation.item.truncate` or `delete` of an item it
//   knows still finds it;
// - older turns as ONE system message ("Conversation so far: …", the newest part of them, within
//   SUMMARY_SHARE of the budget): nothing more is known of them than their words, and one message
//   costs the model less than many;
// - a `function_call_output` only with its `function_call` (the model refuses an output whose
//   call it has not seen), so the window's edge never splits a pair; an unanswered call is kept,
//   since its output may still come from the client or a sideband;
// - assistant turns as `output_text` (their transcript, cut at what the caller heard when a
//   barge-in truncated them). Replayed text can make a model answer in text only (livekit/agents
//   #2471), so the new session is told its `output_modalities` explicitly (withModalities).
//
// Tokens are estimated, not counted: about 4 characters a token for English text, plus a few
// per item. Messages with no words (a user turn whose audio was never transcribed) cannot be
// replayed and are left out.
import type { LogItem } from "../../protocol/relay-api.ts";
import type { SessionConfig } from "../../protocol/session.ts";
import { newId } from "../../protocol/realtime.ts";
import { RELAY_EVENT_PREFIX } from "../barge-in/barge-in.ts";

/** Estimated tokens an item costs beyond its text (role, type, framing). */
const ITEM_OVERHEAD_TOKENS = 4;
/** The share of the budget the summary of older turns may take. */
export const SUMMARY_SHARE = 0.2;
const SUMMARY_HEADER = "Conversation so far, earlier turns (abridged):\n";

export interface ReplayPlan {
  /** The replay's `conversation.item.create` events, in order, each with a relay event id. */
  events: string[];
  /** Ids of the items the events create (their echoes are the relay's, never the client's). */
  itemIds: string[];
  /** Items replayed as themselves, and older ones folded into the summary or dropped. */
  replayed: number;
  summarised: number;
  dropped: number;
}

export function estimateTokens(item: LogItem): number {
  const chars =
    (item.text?.length ?? 0) +
    (item.arguments?.length ?? 0) +
    (item.output?.length ?? 0) +
    (item.name?.length ?? 0);
  return Math.ceil(chars / 4) + ITEM_OVERHEAD_TOKENS;
}

/** Whether the item can be told to a model: a message needs words, a call its call_id. */
function replayable(item: LogItem): boolean {
  if (item.type === "message") return item.role !== undefined && (item.text ?? "") !== "";
  return item.call_id !== undefined && (item.type === "function_call_output" || item.name !== undefined);
}

/**
 * The replay of `log` (oldest first) within `budgetTokens`. `skip` names items the new session
 * has already been given (a rollover's catch-up); those are neither replayed nor summarised.
 */
export function planReplay(
  log: readonly LogItem[],
  budgetTokens: number,
  skip?: ReadonlySet<string>,
): ReplayPlan {
  const items = log.filter((item) => replayable(item) && !skip?.has(item.id));
  const calls = new Set(items.filter((i) => i.type === "function_call").map((i) => i.call_id));
  // An output whose call is not in the log (older than the log keeps) cannot be replayed alone.
  const usable = items.filter((i) => i.type !== "function_call_output" || calls.has(i.call_id));

  // The recent window, newest first. An output pulls its call in with it, or neither goes.
  let spent = 0;
  let start = usable.length;
  const recentBudget = budgetTokens * (1 - SUMMARY_SHARE);
  while (start > 0) {
    const item = usable[start - 1]!;
    let from = start - 1;
    if (item.type === "function_call_output") {
      const call = usable.findLastIndex(
        (i, n) => n < from && i.type === "function_call" && i.call_id === item.call_id,
      );
      if (call >= 0) from = call;
    }
    const cost = usable.slice(from, start).reduce((sum, i) => sum + estimateTokens(i), 0);
    if (spent + cost > recentBudget) break;
    spent += cost;
    start = from;
  }
  const older = usable.slice(0, start);
  const recent = usable.slice(start);

  const events: string[] = [];
  const itemIds: string[] = [];
  let summarised = 0;
  const summary = summarise(older, (budgetTokens - spent) * 4);
  if (summary) {
    summarised = summary.turns;
    const id = newId("item");
    itemIds.push(id);
    events.push(
      create({ id, type: "message", role: "system", content: [{ type: "input_text", text: summary.text }] }),
    );
  }
  for (const item of recent) {
    itemIds.push(item.id);
    events.push(create(toItem(item)));
  }
  return {
    events,
    itemIds,
    replayed: recent.length,
    summarised,
    dropped: items.length - recent.length - summarised,
  };
}

/** The older turns' words, newest kept, within `maxChars`; null if there are none. */
function summarise(older: readonly LogItem[], maxChars: number): { text: string; turns: number } | null {
  const lines: string[] = [];
  let chars = SUMMARY_HEADER.length;
  for (let n = older.length - 1; n >= 0; n--) {
    const line = summaryLine(older[n]!);
    if (!line) continue;
    if (chars + line.length + 1 > maxChars) break;
    chars += line.length + 1;
    lines.push(line);
  }
  if (lines.length === 0) return null;
  return { text: SUMMARY_HEADER + lines.reverse().join("\n"), turns: lines.length };
}

function summaryLine(item: LogItem): string | null {
  switch (item.type) {
    case "message":
      return `${item.role === "user" ? "User" : item.role === "assistant" ? "Assistant" : "System"}: ${item.text}`;
    case "function_call":
      return `Assistant called ${item.name}(${item.arguments ?? ""})`;
    case "function_call_output":
      return `Tool result: ${item.output ?? ""}`;
  }
}

function toItem(item: LogItem): Record<string, unknown> {
  switch (item.type) {
    case "message": {
      const part = item.role === "assistant" ? "output_text" : "input_text";
      return { id: item.id, type: "message", role: item.role, content: [{ type: part, text: item.text }] };
    }
    case "function_call":
      return {
        id: item.id,
        type: "function_call",
        call_id: item.call_id,
        name: item.name,
        arguments: item.arguments ?? "",
      };
    case "function_call_output":
      return { id: item.id, type: "function_call_output", call_id: item.call_id, output: item.output ?? "" };
  }
}

function create(item: Record<string, unknown>): string {
  return JSON.stringify({
    type: "conversation.item.create",
    event_id: RELAY_EVENT_PREFIX + newId("event"),
    item,
  });
}

/**
 * The session a primed model session is given: the call's, with its output modalities said
 * explicitly (a realtime session that never set them speaks, as OpenAI's default does), so the
 * replayed text does not turn the model to text-only answers.
 */
export function withModalities(session: SessionConfig): SessionConfig {
  if (session.type === "transcription" || session.output_modalities) return session;
  return { ...session, output_modalities: ["audio"] };
}
