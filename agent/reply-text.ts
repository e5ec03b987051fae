// What the built-in agent says: it has no model, so its words come from the conversation's last
// item. A tool's output is quoted (the app sees its tool's result used), typed text is quoted,
// user audio is described by its length, and the idle timeout asks whether anyone is there.
import type { RealtimeItem } from "./conversation.ts";

export const IDLE_PROMPT = "Are you still there?";
/** A tool's output or typed text quoted in the reply is cut here (eSpeak reads every character). */
export const QUOTED_CHARS = 300;

export interface ReplyContext {
  reason: "turn" | "client" | "idle";
  /** The item the reply answers (the conversation's last, or the response's own input). */
  last: RealtimeItem | undefined;
  /** The function call a function_call_output answers, for its name. */
  callOf(callId: string): RealtimeItem | undefined;
  /** The user's last utterance, in ms (0 if none). */
  lastUtteranceMs: number;
}

export function replyText(context: ReplyContext): string {
  const { reason, last } = context;
  if (reason === "idle") return IDLE_PROMPT;
  if (last?.type === "function_call_output") {
    const call = context.callOf(String(last.call_id));
    const output = String(last.output).replace(/\s+/g, " ").trim();
    return `The ${String(call?.name ?? "tool")} tool returned: ${quote(output) || "nothing"}`;
  }
  if (last?.type === "message" && last.role === "user" && Array.isArray(last.content)) {
    const typed = (last.content as { type?: unknown; text?: unknown }[])
      .filter((part) => part.type === "input_text" && typeof part.text === "string")
      .map((part) => part.text as string)
      .join(" ")
      .trim();
    if (typed) return `You wrote: ${quote(typed)}`;
  }
  return context.lastUtteranceMs > 0
    ? `I heard you speak for about ${(context.lastUtteranceMs / 1000).toFixed(1)} seconds. I am Earshot's built-in agent. Set INFERENCE_URL to talk to a real model.`
    : "Hello! I am Earshot's built-in agent. Say something and I will answer.";
}

function quote(text: string): string {
  return text.length > QUOTED_CHARS ? `${text.slice(0, QUOTED_CHARS)}…` : text;
}
