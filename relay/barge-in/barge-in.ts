// Barge-in: the user talks over the assistant. The relay knows to the frame what the user heard
// (the PlayoutLedger), so it stops the assistant within one frame and truncates the model's
// memory of the reply to exactly that: flush the downlink now (same tick), response.cancel,
// conversation.item.truncate {audio_end_ms = audio actually sent}, output_audio_buffer.cleared,
// and from then on drop late deltas of the cancelled response.
//
// Triggers: the relay's own VAD, the upstream's `input_audio_buffer.speech_started` (only when
// the relay's VAD is off), the client's `output_audio_buffer.clear` (which flushes and clears but
// leaves cancel and truncate to the client, as OpenAI documents), and the loss of the upstream
// (whose session, and reply, are gone). Firing twice for one reply does nothing the second time.
//
// The policy (issue 20), one for the relay and the model:
//   - The session's turn settings come first (turn-policy.ts): with `turn_detection: null` or
//     `interrupt_response: false` nothing here starts a barge-in; the reply plays on.
//   - With the relay's VAD on (the default) the relay owns interruption: the upstream is told
//     `interrupt_response: false`, so the model's `speech_started` (heard on audio the echo guard
//     has already silenced where it was only echo) never cuts a reply the relay chose to keep. The
//     model still detects turns and answers them (`create_response`); only the cut is the relay's.
//   - Two steps, so a real interruption stops the assistant at once and a backchannel does not
//     cost the reply: at speech onset (Silero, 64 ms of speech the echo guard does not explain)
//     the relay HOLDS the downlink (no packet goes out; nothing is dropped). If the user keeps
//     talking to RELAY_BARGE_IN_MIN_SPEECH_MS of speech, the hold becomes the barge-in above
//     (truncate at what was actually sent, which the hold froze); if they stop first ("uh huh",
//     "yeah", a cough), the reply RESUMES where it paused, nothing cancelled or truncated. A
//     backchannel the user talks on past becomes an interruption, counted from its onset. The
//     cost: a backchannel pauses the reply for about its own length plus RESUME_SILENCE_MS.
//     RELAY_BARGE_IN_MIN_SPEECH_MS=0 cuts at onset (every sound Silero calls speech interrupts).
//   - With the relay's VAD off the upstream's `speech_started` cuts, as the session allows.
import { type ClientEvent, type ServerEvent, newId } from "../../protocol/realtime.ts";
import type { DownlinkPort } from "../media/downlink.ts";
import type { RelayMetrics } from "../metrics.ts";

export type BargeInTrigger = "upstream_vad" | "relay_vad" | "client_clear" | "upstream_lost";

export interface BargeInPorts {
  downlink: DownlinkPort;
  metrics: RelayMetrics;
  /** A relay-originated client event to the model. */
  sendUpstream(event: ClientEvent): void;
  /** A server event to the client on `oai-events`. */
  emit(event: ServerEvent): void;
}

/** Prefix of event ids the relay itself sends upstream, so errors they provoke are recognised. */
export const RELAY_EVENT_PREFIX = "event_relay_";
const REMEMBERED = 64;
/**
 * Longest a reply stays held without the VAD deciding: the uplink may stop (a muted microphone,
 * DTX, a lost connection) between the onset and the decision, and a held reply must not hang.
 */
export const MAX_HOLD_MS = 2000;

interface AudioItem {
  responseId: string;
  itemId: string;
  contentIndex: number;
}

export class BargeIn {
  readonly #ports: BargeInPorts;
  #activeResponseId: string | null = null;
  #lastItem: AudioItem | null = null;
  readonly #cancelledResponses = new Set<string>();
  readonly #cancelledItems = new Set<string>();
  readonly #itemResponse = new Map<string, string>();
  #held = false;
  #holdTimer: NodeJS.Timeout | undefined;
  /** Replies interrupted so far in this call (the call record's barge_ins). */
  count = 0;

  constructor(ports: BargeInPorts) {
    this.#ports = ports;
  }

  responseCreated(responseId: string): void {
    this.#activeResponseId = responseId;
  }

  responseDone(responseId: string): void {
    if (this.#activeResponseId === responseId) this.#activeResponseId = null;
  }

  /** Records that a delta of this item is about to be played; false if it must be dropped. */
  acceptAudio(responseId: string, itemId: string, contentIndex: number): boolean {
    if (this.#cancelledResponses.has(responseId) || this.#cancelledItems.has(itemId)) return false;
    const last = this.#lastItem;
    if (!last || last.itemId !== itemId || last.contentIndex !== contentIndex) {
      this.#lastItem = { responseId, itemId, contentIndex };
      remember(this.#itemResponse, itemId, responseId);
    }
    return true;
  }

  responseOf(itemId: string): string {
    return this.#itemResponse.get(itemId) ?? "";
  }

  wasCleared(itemId: string): boolean {
    return this.#cancelledItems.has(itemId);
  }

  /** Whether the assistant is speaking or about to: audio queued, or a response generating. */
  get assistantActive(): boolean {
    return this.#ports.downlink.queuedMs > 0 || this.#activeResponseId !== null;
  }

  /** Whether playout is held, waiting to see if the user's speech is an interruption. */
  get held(): boolean {
    return this.#held;
  }

  /** The user may be interrupting: pause the reply (nothing dropped). True if something was playing. */
  hold(): boolean {
    const { downlink } = this.#ports;
    if (this.#held || downlink.queuedMs === 0) return false;
    this.#held = true;
    downlink.hold(true);
    this.#holdTimer = setTimeout(() => this.resume(), MAX_HOLD_MS);
    return true;
  }

  /** It was not an interruption: play on from where the hold paused. */
  resume(): void {
    if (!this.#held) return;
    this.#held = false;
    clearTimeout(this.#holdTimer);
    this.#ports.downlink.hold(false);
    this.#ports.metrics.bargeInHolds.inc({ outcome: "resumed" });
  }

  /** The call is closing: no timer may outlive it. */
  close(): void {
    clearTimeout(this.#holdTimer);
    this.#held = false;
  }

  /** Returns true if it interrupted something. */
  trigger(trigger: BargeInTrigger): boolean {
    const { downlink } = this.#ports;
    if (this.#held) {
      this.#held = false;
      clearTimeout(this.#holdTimer);
      downlink.hold(false);
      this.#ports.metrics.bargeInHolds.inc({
        outcome: trigger === "relay_vad" ? "interrupted" : "superseded",
      });
    }
    const item = this.#lastItem;
    const activeId = this.#activeResponseId;
    const responseId = activeId ?? item?.responseId ?? null;
    const itemPending = item !== null && !this.#cancelledItems.has(item.itemId);
    const responsePending = activeId !== null && !this.#cancelledResponses.has(activeId);
    const playing = downlink.queuedMs > 0 && itemPending;
    if (!playing && !responsePending) return false;

    // First, within this tick: nothing queued reaches the wire after this line.
    downlink.flush();
    const tellModel = trigger === "upstream_vad" || trigger === "relay_vad";
    if (responsePending && tellModel) {
      this.#ports.sendUpstream({
        type: "response.cancel",
        event_id: RELAY_EVENT_PREFIX + newId("event"),
        response_id: activeId,
      });
    }
    if (responsePending) remember(this.#cancelledResponses, activeId);
    if (trigger === "upstream_lost") this.#activeResponseId = null;
    // The reply being heard (or about to be): not an earlier one that finished playing.
    if (item && itemPending && (playing || item.responseId === this.#activeResponseId)) {
      remember(this.#cancelledItems, item.itemId);
      remember(this.#cancelledResponses, item.responseId);
      if (tellModel) {
        // sentMs never exceeds what was generated (the ledger clamps), so the model accepts it.
        const audioEndMs = Math.min(
          downlink.ledger.sentMs(item.itemId),
          downlink.ledger.generatedMs(item.itemId),
        );
        this.#ports.sendUpstream({
          type: "conversation.item.truncate",
          event_id: RELAY_EVENT_PREFIX + newId("event"),
          item_id: item.itemId,
          content_index: item.contentIndex,
          audio_end_ms: audioEndMs,
        });
      }
    }
    this.#ports.emit({
      type: "output_audio_buffer.cleared",
      event_id: newId("event"),
      response_id: responseId ?? "",
    });
    this.#ports.metrics.bargeIns.inc({ trigger });
    this.count++;
    return true;
  }
}

function remember<K>(collection: Set<K> | Map<K, string>, key: K, value = ""): void {
  if (collection instanceof Set) collection.add(key);
  else collection.set(key, value);
  if (collection.size > REMEMBERED) collection.delete(collection.keys().next().value!);
}
