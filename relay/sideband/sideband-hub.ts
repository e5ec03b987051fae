// A call's sidebands, as its bridge keeps them: every server event the data channel gets goes to
// each of them too (the bridge never hands audio deltas to anyone but the downlink), and each
// hears `earshot.call.state` when the caller's link changes and `earshot.call.quality` with the
// relay's periodic link figures. A sideband that attaches late gets
// the session as it stands (the last session.created or session.updated) and the call's state,
// so it never has to guess what it missed.
import { newId } from "../../protocol/realtime.ts";
import type { CallStats } from "../../protocol/relay-api.ts";
import type { CallQualityEvent, CallState, CallStateEvent, CallUsageEvent } from "../../protocol/sideband.ts";
import type { CallStateChange, SidebandHandle, SidebandPort } from "../bridge.ts";

export class SidebandHub {
  readonly #callId: string;
  readonly #ports = new Set<SidebandPort>();
  #session: string | undefined;
  #state: CallStateEvent;

  constructor(callId: string) {
    this.#callId = callId;
    this.#state = this.#stateEvent({ state: "connecting" });
  }

  get size(): number {
    return this.#ports.size;
  }

  /** Adds a sideband; its messages go to `onMessage` until it detaches. */
  attach(port: SidebandPort, onMessage: (text: string) => void): SidebandHandle {
    this.#ports.add(port);
    if (this.#session !== undefined) port.send(this.#session);
    port.send(JSON.stringify(this.#state));
    return {
      onMessage: (text) => {
        if (this.#ports.has(port)) onMessage(text);
      },
      detached: () => this.#ports.delete(port),
    };
  }

  /** A server event's JSON, as it goes down the data channel. */
  broadcast(text: string, type: string): void {
    if (type === "session.created" || type === "session.updated") this.#session = text;
    for (const port of this.#ports) port.send(text);
  }

  /** The call's link figures, as the edge gets them; nothing is built when no sideband listens. */
  callStats(stats: CallStats): void {
    if (this.#ports.size === 0) return;
    const event: CallQualityEvent = {
      type: "earshot.call.quality",
      event_id: newId("event"),
      call_id: this.#callId,
      stats,
    };
    const text = JSON.stringify(event);
    for (const port of this.#ports) port.send(text);
  }

  /** The caller's link changed; at the end, what the call used comes first (`earshot.call.usage`). */
  callState(change: CallStateChange): void {
    if (change.state === "ended") {
      const usage: CallUsageEvent = {
        type: "earshot.call.usage",
        event_id: newId("event"),
        call_id: this.#callId,
        usage: change.usage,
      };
      const text = JSON.stringify(usage);
      for (const port of this.#ports) port.send(text);
    }
    this.#state = this.#stateEvent(change);
    const text = JSON.stringify(this.#state);
    for (const port of this.#ports) port.send(text);
  }

  #stateEvent(change: CallStateChange): CallStateEvent {
    const state: CallState = change.state;
    return {
      type: "earshot.call.state",
      event_id: newId("event"),
      call_id: this.#callId,
      state,
      reason: change.state === "ended" ? change.reason : null,
      message: change.state === "ended" ? (change.message ?? null) : null,
    };
  }
}
