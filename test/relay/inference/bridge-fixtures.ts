// Arrange helpers for InferenceBridge tests: the call's side of the CallBridge seam.
// The downlink double keeps a real PlayoutLedger and a real 20 ms pacer clock, so
// `ledger.sentMs` is exactly the audio "sent to the client" (recorded frame by frame).
import type { CallContext, EventChannelPort, EventSendResult } from "../../../relay/bridge.ts";
import { createLogger } from "../../../relay/log.ts";
import type { DownlinkPort } from "../../../relay/media/downlink.ts";
import { RelayMetrics } from "../../../relay/metrics.ts";
import { FRAME_MS, FRAME_SAMPLES } from "../../../relay/media/audio-format.ts";
import { PlayoutLedger } from "../../../relay/media/playout-ledger.ts";
import type { EndReason } from "../../../protocol/relay-api.ts";
import type { CallBridge } from "../../../relay/bridge.ts";
import { EventLog } from "../../support/loopback.ts";

interface Queued {
  itemId: string;
  contentIndex: number;
  pcm: Int16Array;
}

export interface SentFrame {
  at: number;
  itemId: string | null;
  pcm: Int16Array;
}

/** A downlink with a real 20 ms pacer: queues PCM, sends one frame a tick, records what it sent. */
export class PacedDownlink implements DownlinkPort {
  readonly ledger = new PlayoutLedger();
  readonly pushes: { at: number; itemId: string; samples: number }[] = [];
  readonly flushes: { at: number; droppedMs: number }[] = [];
  readonly holds: { at: number; held: boolean }[] = [];
  #held = false;
  readonly sent: SentFrame[] = [];
  #queue: Queued[] = [];
  #timer: NodeJS.Timeout;
  #playing: string | null = null;
  bridge: CallBridge | null = null;
  /** Called with every frame sent (the tests' "client" hears it; echo tests feed it back). */
  onFrameSent: ((frame: SentFrame) => void) | null = null;

  constructor() {
    this.#timer = setInterval(() => this.#tick(), FRAME_MS);
  }

  push(itemId: string, contentIndex: number, pcm: Int16Array): void {
    this.pushes.push({ at: performance.now(), itemId, samples: pcm.length });
    this.ledger.generated(itemId, contentIndex, pcm.length);
    this.#queue.push({ itemId, contentIndex, pcm: pcm.slice() });
  }

  hold(held: boolean): void {
    this.holds.push({ at: performance.now(), held });
    this.#held = held;
  }

  flush(): number {
    this.#held = false;
    const droppedMs = this.queuedMs;
    this.#queue = [];
    this.flushes.push({ at: performance.now(), droppedMs });
    return droppedMs;
  }

  get queuedMs(): number {
    return (this.#queue.reduce((n, q) => n + q.pcm.length, 0) / FRAME_SAMPLES) * FRAME_MS;
  }

  #tick(): void {
    const frame = new Int16Array(FRAME_SAMPLES);
    let filled = 0;
    let itemId: string | null = null;
    while (!this.#held && filled < FRAME_SAMPLES && this.#queue.length > 0) {
      const head = this.#queue[0]!;
      itemId ??= head.itemId;
      if (head.itemId !== itemId) break;
      const take = Math.min(FRAME_SAMPLES - filled, head.pcm.length);
      frame.set(head.pcm.subarray(0, take), filled);
      filled += take;
      head.pcm = head.pcm.subarray(take);
      this.ledger.sent(head.itemId, head.contentIndex, take);
      if (head.pcm.length === 0) this.#queue.shift();
    }
    if (itemId && this.#playing !== itemId) {
      if (this.#playing) this.bridge?.onPlayoutStopped(this.#playing);
      this.#playing = itemId;
      this.bridge?.onPlayoutStarted(itemId);
    }
    if (!itemId && this.#playing && !this.#held) {
      this.bridge?.onPlayoutStopped(this.#playing);
      this.#playing = null;
    }
    // The downlink's report of the frame (no media clock here: the uplink's arrival order aligns).
    if (itemId) this.bridge?.onDownlinkSent?.({ itemId, contentIndex: 0, samples: filled, mediaTimeMs: NaN });
    const sent = { at: performance.now(), itemId, pcm: frame };
    if (itemId) this.sent.push(sent);
    this.onFrameSent?.(sent);
  }

  close(): void {
    clearInterval(this.#timer);
  }
}

export type ChannelEvent = { type: string; [key: string]: unknown };

export class RecordingChannel implements EventChannelPort {
  open = false;
  /** The client's a=max-message-size (0: none); a larger message is refused, as Call does. */
  maxMessageBytes = 0;
  readonly #log = new EventLog<ChannelEvent>();
  readonly events = this.#log.events;
  /** Every message as sent, for byte-for-byte checks. */
  readonly texts: string[] = [];

  send(text: string): EventSendResult {
    if (this.maxMessageBytes > 0 && Buffer.byteLength(text) > this.maxMessageBytes) return "too_large";
    this.texts.push(text);
    this.#log.push(JSON.parse(text) as ChannelEvent);
    return "sent";
  }

  ofType(type: string): ChannelEvent[] {
    return this.#log.ofType(type);
  }

  waitFor(
    type: string,
    predicate: (e: ChannelEvent) => boolean = () => true,
    timeoutMs = 10_000,
  ): Promise<ChannelEvent & { at: number }> {
    return this.#log.waitFor(type, predicate, { timeoutMs });
  }
}

export interface TestCall {
  ctx: CallContext;
  downlink: PacedDownlink;
  channel: RecordingChannel;
  ended: Promise<{ reason: EndReason; message: string | undefined }>;
  endings: { reason: EndReason; message: string | undefined }[];
  close(): void;
}

/** One metrics registry for every test call in a file, as one relay's calls share theirs. */
export const testMetrics = new RelayMetrics();

export function testCall(callId = `rtc_test${Math.random().toString(36).slice(2, 12)}`): TestCall {
  const downlink = new PacedDownlink();
  const channel = new RecordingChannel();
  const endings: { reason: EndReason; message: string | undefined }[] = [];
  let resolveEnded!: (value: { reason: EndReason; message: string | undefined }) => void;
  const ended = new Promise<{ reason: EndReason; message: string | undefined }>((r) => (resolveEnded = r));
  const ctx: CallContext = {
    callId,
    session: { type: "realtime", instructions: "Be brief." },
    log: createLogger("silent"),
    metrics: testMetrics,
    downlink,
    events: channel,
    end(reason, message) {
      endings.push({ reason, message });
      resolveEnded({ reason, message });
    },
  };
  return { ctx, downlink, channel, ended, endings, close: () => downlink.close() };
}

/** Feeds PCM to the bridge as 20 ms uplink frames, in real time (as the jitter buffer does). */
export async function speakInto(bridge: CallBridge, pcm: Int16Array, realTime = true): Promise<void> {
  const frame = new Int16Array(FRAME_SAMPLES);
  const start = performance.now();
  for (let i = 0, n = 0; i < pcm.length; i += FRAME_SAMPLES, n++) {
    frame.fill(0);
    frame.set(pcm.subarray(i, i + FRAME_SAMPLES));
    bridge.onUplinkFrame(frame);
    if (realTime) {
      const due = start + (n + 1) * FRAME_MS;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }
}
