// What the model has been told about the call's session, and what the client is told about it.
//
// The call's session was minted at the edge and arrives in the ticket; the model learns it from
// the relay's own `session.update` as soon as the upstream opens. OpenAI's server (and the
// built-in agent) answer that with their default `session.created` and then a `session.updated`,
// neither of which the client asked for: a client that took the `session.updated` as the answer
// to its own `session.update` (the Agents SDK's connect() does) would stream its microphone
// under the wrong config. So:
//
// - the upstream's `session.created` is never forwarded (it describes the model's defaults);
// - the answer to the relay's update becomes the client's `session.created`: the minted session
//   as the model applied it, the first event the client sees;
// - until then the client's events are held and its audio dropped, so nothing reaches a model
//   session still running its defaults;
// - `session.updated` goes to the client only as the answer to one of its own `session.update`s.
//   The upstream answers events in order, so the answers are paired with the updates written
//   upstream, first in, first out, each either a `session.updated` or an `error` naming it.
//
// The relay carries audio as PCM16 at 24 kHz whatever format the client asked for (over WebRTC
// the format is the relay's business), so the model is told PCM and the client is shown the
// format it asked for.
//
// After a reconnect (a new model session) the relay re-sends the session as confirmed so far and
// the client's updates that had no answer yet; the client gets no second `session.created` but
// one `earshot.inference.reconnected` event carrying the session the new model applied.
import { type ErrorDetail, newId } from "../../protocol/realtime.ts";
import { type SessionConfig, sessionKind } from "../../protocol/session.ts";
import { RELAY_EVENT_PREFIX } from "../barge-in/barge-in.ts";
import { PCM_SAMPLE_RATE } from "../media/audio-format.ts";

/** The relay's own server event telling the client its model session was replaced. */
export const RECONNECTED_EVENT = "earshot.inference.reconnected";

/** A `session.update` written upstream and not answered yet. */
interface InFlightUpdate {
  origin: "relay" | "client";
  eventId: string | undefined;
  session: SessionConfig;
  /** The event as sent, to send again to a new model session (client updates only). */
  text: string;
  /** The relay stopped waiting for this answer (see `timedOut`); a late answer is swallowed. */
  abandoned: boolean;
}

/** What the bridge does with a session event or an error from the upstream. */
export type SessionOutcome =
  /** Nothing reaches the client. */
  | { kind: "swallow" }
  /** The model applied the call's session: the client may talk now (`session` as it sees it). */
  | { kind: "ready"; first: boolean; session: Record<string, unknown> }
  /** The model refused the call's session and runs `session` instead; the client is told why. */
  | { kind: "refused"; first: boolean; session: Record<string, unknown>; error: ErrorDetail }
  /** The model refused the call's session after the relay stopped waiting: the client is told. */
  | { kind: "late_refusal"; error: ErrorDetail }
  /** Forwarded to the client, with the session rewritten to the client's view where there is one. */
  | { kind: "forward"; session?: Record<string, unknown> };

type Phase = "connecting" | "configuring" | "ready";

export class ModelSession {
  /** The ticket's session with every client update the model confirmed merged in. */
  #effective: SessionConfig;
  #phase: Phase = "connecting";
  #inFlight: InFlightUpdate[] = [];
  /** The current model session's `session.created` (its defaults), if it has come. */
  #defaults: Record<string, unknown> | null = null;
  #toldClient = false;

  constructor(ticketSession: SessionConfig) {
    this.#effective = ticketSession;
  }

  /** The model runs the call's session (or refused it and said so): client events may flow. */
  get ready(): boolean {
    return this.#phase === "ready";
  }

  /** The call's session as the model confirmed it: the ticket's plus the client's updates. */
  get effective(): SessionConfig {
    return this.#effective;
  }

  /**
   * The upstream opened (a new model session). Returns the relay's `session.update` to send
   * first, and the client's updates the previous model session never answered, to send again
   * once this one is configured.
   */
  opened(toModel: (session: SessionConfig) => SessionConfig = forModel): {
    update: string;
    unanswered: { text: string; eventId: string | undefined; session: SessionConfig }[];
  } {
    const unanswered = this.#inFlight.filter((u) => u.origin === "client" && !u.abandoned);
    this.#phase = "configuring";
    this.#defaults = null;
    const eventId = RELAY_EVENT_PREFIX + newId("event");
    const session = toModel(this.#effective);
    const update = JSON.stringify({ type: "session.update", event_id: eventId, session });
    this.#inFlight = [{ origin: "relay", eventId, session, text: update, abandoned: false }];
    return { update, unanswered };
  }

  /** The upstream dropped; events wait for the next model session. */
  dropped(): void {
    this.#phase = "connecting";
  }

  /**
   * No `session.update` is waiting for its answer (one the relay stopped waiting for does not
   * count): a model session could be swapped now.
   */
  get settled(): boolean {
    return this.#phase === "ready" && this.#inFlight.every((u) => u.abandoned);
  }

  /**
   * The call moved to a model session primed beforehand (a rollover): it runs the call's session
   * already. `update`: a relay `session.update` just sent to it (the session changed while it was
   * primed), whose answer is not the client's. Returns the client's updates the previous session
   * never answered, to send again.
   */
  rolledOver(update: { eventId: string; session: SessionConfig; text: string } | null): string[] {
    const unanswered = this.#inFlight.filter((u) => u.origin === "client" && !u.abandoned).map((u) => u.text);
    this.#inFlight = update ? [{ origin: "relay", ...update, abandoned: true }] : [];
    this.#phase = "ready";
    return unanswered;
  }

  /** A client's `session.update` was written upstream. */
  sent(eventId: string | undefined, session: SessionConfig, text: string): void {
    this.#inFlight.push({ origin: "client", eventId, session, text, abandoned: false });
  }

  onCreated(session: Record<string, unknown>): SessionOutcome {
    this.#defaults = session;
    return { kind: "swallow" };
  }

  onUpdated(session: Record<string, unknown>): SessionOutcome {
    const answered = this.#inFlight.shift();
    // Unasked for (not something OpenAI does): the client learns of the change all the same.
    if (!answered) return { kind: "forward", session: clientView(session, this.#effective) };
    if (answered.origin === "client") {
      this.#effective = mergeSession(this.#effective, answered.session);
      return { kind: "forward", session: clientView(session, this.#effective) };
    }
    if (answered.abandoned) return { kind: "swallow" };
    this.#phase = "ready";
    return { kind: "ready", first: this.#tellClient(), session: clientView(session, this.#effective) };
  }

  /** An upstream `error`: the answer to a session.update in flight, or null if not one. */
  onError(error: ErrorDetail): SessionOutcome | null {
    const head = this.#inFlight[0];
    if (!head) return null;
    const cause = error.event_id ?? null;
    const answersHead =
      cause !== null
        ? cause === head.eventId
        : head.eventId === undefined && head.origin === "client" && (error.param ?? "").startsWith("session");
    if (!answersHead) return null;
    this.#inFlight.shift();
    if (head.origin === "client") return { kind: "forward" };
    // The relay's update: the model runs its defaults (as far as it said), and the client must know.
    const clientError: ErrorDetail = {
      type: error.type,
      code: error.code ?? "session_refused",
      message: `The model refused the call's session config: ${error.message}`,
      param: error.param ?? null,
      event_id: null,
    };
    if (head.abandoned) return { kind: "late_refusal", error: clientError };
    this.#phase = "ready";
    const running = this.#defaults ?? {};
    return { kind: "refused", first: this.#tellClient(), session: running, error: clientError };
  }

  /**
   * The model has not answered the relay's update in time. The call goes on under the session as
   * the relay asked for it (the model may still apply it; a late answer is swallowed, a late
   * refusal still reaches the client). Null if there is nothing to wait for.
   */
  timedOut(): SessionOutcome | null {
    const head = this.#inFlight[0];
    if (this.#phase !== "configuring" || !head || head.origin !== "relay") return null;
    head.abandoned = true;
    this.#phase = "ready";
    return {
      kind: "ready",
      first: this.#tellClient(),
      session: clientView(forModel(this.#effective), this.#effective),
    };
  }

  #tellClient(): boolean {
    const first = !this.#toldClient;
    this.#toldClient = true;
    return first;
  }
}

const PCM = { type: "audio/pcm", rate: PCM_SAMPLE_RATE } as const;

/** The session as the model gets it: audio in (and, for a realtime session, out) as PCM 24 kHz. */
export function forModel(session: SessionConfig): SessionConfig {
  const input = { ...session.audio?.input, format: PCM };
  if (sessionKind(session) === "transcription") return { ...session, audio: { input } };
  return {
    ...session,
    audio: { ...session.audio, input, output: { ...session.audio?.output, format: PCM } },
  };
}

/**
 * The model's account of the session, with the audio formats the client asked for (the model
 * was told PCM because the relay transcodes). Fields the client never set keep the model's values.
 */
export function clientView(applied: Record<string, unknown>, client: SessionConfig): Record<string, unknown> {
  const inputFormat = client.audio?.input?.format;
  const outputFormat = client.audio?.output?.format;
  if (!inputFormat && !outputFormat) return applied;
  const audio = objectOr(applied.audio);
  const input = objectOr(audio.input);
  const output = objectOr(audio.output);
  return {
    ...applied,
    audio: {
      ...audio,
      ...(inputFormat ? { input: { ...input, format: inputFormat } } : {}),
      ...(outputFormat && sessionKind(client) !== "transcription"
        ? { output: { ...output, format: outputFormat } }
        : {}),
    },
  };
}

/**
 * OpenAI's update semantics: only the fields present change. The session and its `audio`,
 * `audio.input` and `audio.output` merge field by field; every other field (turn detection,
 * tools, a format) is replaced whole, and null turns a feature off.
 */
export function mergeSession(base: SessionConfig, update: SessionConfig): SessionConfig {
  if (!update.audio) return { ...base, ...update };
  const input = update.audio.input ? { ...base.audio?.input, ...update.audio.input } : base.audio?.input;
  const output = update.audio.output ? { ...base.audio?.output, ...update.audio.output } : base.audio?.output;
  return {
    ...base,
    ...update,
    audio: { ...base.audio, ...update.audio, ...(input ? { input } : {}), ...(output ? { output } : {}) },
  };
}

function objectOr(value: unknown): Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
}
