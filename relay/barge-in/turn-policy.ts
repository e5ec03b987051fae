// One call's turn settings, and who acts on them. The session's settings win over the relay's
// own turn-taking; the relay only decides how, and how fast, to honour them.
//
// Effective settings: the upstream's `session.updated` (what the model really runs: a refused
// update never takes effect), except `interrupt_response`, which is what the client asked for
// (the ticket's session, then each `session.update` that carried it): when the relay owns
// interruption it tells the upstream `interrupt_response: false`, so the upstream's copy says
// nothing about the client's wish. Before the first `session.updated`, the ticket's session.
//
// Who interrupts (ONE policy, see barge-in.ts):
//   - relay VAD on (the default): the relay owns interruption. The upstream is configured with
//     `interrupt_response: false`, so the model never cancels on its own `speech_started`; the
//     relay barges in (cancel, truncate) when its VAD and echo guard agree and the session allows;
//   - relay VAD off: the upstream's `speech_started` is the trigger, as the session allows.
//   - `turn_detection: null`: nobody detects turns; only the client's `output_audio_buffer.clear`.
//   - `interrupt_response: false`: nobody interrupts; the reply plays on while the user talks.
// `create_response`, `semantic_vad` (and its `eagerness`), `idle_timeout_ms` and the rest pass
// through to the upstream untouched; the client sees its own `interrupt_response` in
// `session.updated`.
import type { SessionConfig } from "../../protocol/session.ts";

type TurnDetection = NonNullable<NonNullable<SessionConfig["audio"]>["input"]>["turn_detection"];

export class TurnPolicy {
  readonly #relayOwnsInterruption: boolean;
  /** What the client asked for, the last time it said (OpenAI's default: true). */
  #clientInterrupts = true;
  /** null: turn detection off (push-to-talk). */
  #detecting = true;

  /** `relayVad`: whether the relay's own VAD may barge in (RELAY_VAD is not off). */
  constructor(relayVad: boolean, session: SessionConfig) {
    this.#relayOwnsInterruption = relayVad;
    this.#noteClient(session);
    const td = session.audio?.input?.turn_detection;
    if (td !== undefined) this.#detecting = td !== null;
  }

  /** Whether the relay's VAD may start a barge-in now. */
  get relayMayInterrupt(): boolean {
    return this.#relayOwnsInterruption && this.#detecting && this.#clientInterrupts;
  }

  /** Whether the upstream's `speech_started` should stop the reply now. */
  get upstreamMayInterrupt(): boolean {
    return !this.#relayOwnsInterruption && this.#detecting && this.#clientInterrupts;
  }

  /**
   * The session (the ticket's, or a client's `session.update`) as the upstream gets it: with the
   * relay owning interruption, `interrupt_response: false` wherever turn detection is configured.
   * The ticket's session with no turn detection at all gets OpenAI's default (server VAD) so
   * configured. Notes what the client asked for.
   */
  toUpstream(session: SessionConfig, initial: boolean): SessionConfig {
    this.#noteClient(session);
    if (!this.#relayOwnsInterruption) return session;
    const td = session.audio?.input?.turn_detection;
    let upstream: TurnDetection;
    if (td) upstream = { ...td, interrupt_response: false };
    else if (td === undefined && initial) upstream = { type: "server_vad", interrupt_response: false };
    else return session;
    return {
      ...session,
      audio: { ...session.audio, input: { ...session.audio?.input, turn_detection: upstream } },
    };
  }

  /**
   * A session the model says it runs (the answer to a `session.update`, as the client will see
   * it): takes its turn detection as effective. Returns the session for the client, with the
   * client's `interrupt_response` where the relay had replaced it (the same object when nothing
   * needed changing).
   */
  clientSession(session: Record<string, unknown>): Record<string, unknown> {
    const audio = session.audio as { input?: { turn_detection?: unknown } } | undefined;
    const td = audio?.input?.turn_detection;
    if (td === undefined) return session;
    this.#detecting = td !== null;
    if (!this.#relayOwnsInterruption || td === null || typeof td !== "object") return session;
    const shown = td as Record<string, unknown>;
    if (shown.interrupt_response === this.#clientInterrupts) return session;
    const turnDetection = { ...shown, interrupt_response: this.#clientInterrupts };
    return {
      ...session,
      audio: { ...audio, input: { ...audio!.input, turn_detection: turnDetection } },
    };
  }

  #noteClient(session: SessionConfig): void {
    const td = session.audio?.input?.turn_detection;
    if (td) {
      // A turn_detection object without the flag means OpenAI's default: interrupt.
      this.#clientInterrupts = td.interrupt_response ?? true;
    }
  }
}
