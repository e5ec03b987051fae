// Downlink: 24 kHz PCM16 per response item → a queue → one 20 ms frame per pacer tick →
// encode → RTP. The frame a tick sends is encoded a tick ahead (prepare(), which the pacer runs
// after every call's tick has sent): the tick itself only sends, so a pacer tick over 100 calls
// puts their packets out in the time of 100 sends rather than 100 encodes and sends, and the
// encodes run as a task of their own. One frame ahead, not the whole reply: a barge-in's flush
// wastes at most one encode, and a change of encoder (FEC on reported loss, the load governor's
// complexity) reaches the next frame but one. A tick with nothing prepared encodes inline. The
// ledger records what was generated (push) and what reached the wire (tick), which is what
// barge-in truncates to. When the queue is empty (or playout is held) the downlink
// sends, as Opus DTX does, one pre-built silence frame every KEEPALIVE_TICKS instead of a packet
// a tick: the receiver's jitter buffer conceals the gaps, and a client that hears nothing for
// well over that interval knows the relay is gone (issue 18). The RTP timestamp keeps counting
// wall time throughout, so the first packet of speech after silence carries the marker bit and
// the right timestamp (RFC 3551 §4.1).
import { performance } from "node:perf_hooks";
import { FRAME_MS, FRAME_SAMPLES, samplesToMs } from "./audio-format.ts";
import type { DownlinkEncoder } from "./codec.ts";
import type { PacedStream } from "./pacer.ts";
import { PlayoutLedger } from "./playout-ledger.ts";

/** Downlink: 24 kHz PCM16 in, paced RTP out. What a call's bridge sees of it. */
export interface DownlinkPort {
  /**
   * Queues audio of one response item. Samples are copied; the caller may reuse its buffer.
   * Audio queued for an item is sent in order, 20 ms a tick.
   */
  push(itemId: string, contentIndex: number, pcm: Int16Array): void;
  /** Drops everything queued, so the next pacer tick sends silence. Returns the ms dropped. */
  flush(): number;
  /**
   * Holds playout (true): ticks send nothing and keep the queue, as a speaker pausing when
   * someone starts to talk; false plays on from where it stopped. Playout is not reported stopped.
   */
  hold(held: boolean): void;
  /** Ms of audio queued and not yet sent. */
  readonly queuedMs: number;
  /** What was generated and what was actually sent, per item. */
  readonly ledger: PlayoutLedger;
}

/**
 * One frame the downlink put on the wire. The same object is reused for every frame: read it
 * during the callback, copy what you keep.
 */
export interface SentFrame {
  itemId: string;
  contentIndex: number;
  /** Samples of the item's audio in the frame (480, fewer for an item's padded last frame). */
  samples: number;
  /** The frame's time on the downlink's media clock: the pacer's tick, in ms from the first tick. */
  mediaTimeMs: number;
}

/** Puts one encoded frame on the wire. `payload` is the caller's to keep. */
export type RtpSend = (payload: Buffer, sequenceNumber: number, timestamp: number, marker: boolean) => void;

export interface PlayoutObserver {
  onPlayoutStarted(itemId: string): void;
  onPlayoutStopped(itemId: string): void;
  /** A frame went out; called before the ledger counts it. On the media path: no await, no log. */
  onFrameSent?(frame: SentFrame): void;
}

export interface DownlinkStats {
  framesSent: number;
  /** Silence frames sent while idle, so the client can tell an idle relay from a lost one. */
  keepalivesSent: number;
  /** Samples refused because the queue was full. */
  overflowSamples: number;
}

interface Chunk {
  itemId: string;
  contentIndex: number;
  pcm: Int16Array;
  offset: number;
}

export interface DownlinkOptions {
  encoder: DownlinkEncoder;
  send: RtpSend;
  observer: PlayoutObserver;
  /** Most audio that may wait in the queue; a model that runs far ahead is cut off here. */
  maxQueuedMs?: number;
  observeWork?: (seconds: number) => void;
  /** Random initial sequence number and timestamp (RFC 3550 §5.1); fixed in tests. */
  initialSequence?: number;
  initialTimestamp?: number;
}

export class Downlink implements DownlinkPort, PacedStream {
  static readonly DEFAULT_MAX_QUEUED_MS = 120_000;
  /** Ticks to wait for the rest of a partial frame before padding it with silence. */
  static readonly PARTIAL_FRAME_WAIT_TICKS = 2;
  readonly ledger = new PlayoutLedger();
  /**
   * Idle ticks between silence frames: 300 ms, inside the 400 ms a client may count on, and
   * under Opus DTX's own 400 ms so receivers treat the stream as they would DTX.
   */
  static readonly KEEPALIVE_TICKS = 15;
  readonly stats: DownlinkStats = { framesSent: 0, keepalivesSent: 0, overflowSamples: 0 };
  #encoder: DownlinkEncoder;
  #send: RtpSend;
  #observer: PlayoutObserver;
  #observeWork: ((seconds: number) => void) | undefined;
  #maxQueuedSamples: number;
  #queue: Chunk[] = [];
  #queuedSamples = 0;
  #frame = new Int16Array(FRAME_SAMPLES);
  #packet = new Uint8Array(1500);
  /** The next frame, encoded by prepare(): its payload, or null; the rest describes it. */
  #prepared: Buffer | null = null;
  #preparedItem = "";
  #preparedContentIndex = 0;
  #preparedSamples = 0;
  #preparedSeconds = 0;
  readonly #sent: SentFrame = { itemId: "", contentIndex: 0, samples: 0, mediaTimeMs: 0 };
  #sequence: number;
  #timestampOrigin: number;
  #firstIndex = -1;
  #playing: string | null = null;
  #silent = true;
  #partialWait = 0;
  /** Ticks since a packet last went out; a silence frame goes when it reaches KEEPALIVE_TICKS. */
  #idleTicks = 0;
  #held = false;
  #closed = false;

  constructor(options: DownlinkOptions) {
    this.#encoder = options.encoder;
    this.#send = options.send;
    this.#observer = options.observer;
    this.#observeWork = options.observeWork;
    this.#maxQueuedSamples = ((options.maxQueuedMs ?? Downlink.DEFAULT_MAX_QUEUED_MS) * FRAME_SAMPLES) / 20;
    this.#sequence = options.initialSequence ?? Math.floor(Math.random() * 0x10000);
    this.#timestampOrigin = options.initialTimestamp ?? Math.floor(Math.random() * 0x1_0000_0000);
  }

  get queuedMs(): number {
    return samplesToMs(this.#queuedSamples);
  }

  /** The item whose audio is going out now, if any. */
  get playing(): string | null {
    return this.#playing;
  }

  push(itemId: string, contentIndex: number, pcm: Int16Array): void {
    if (this.#closed || pcm.length === 0) return;
    let samples = pcm.length;
    const room = this.#maxQueuedSamples - this.#queuedSamples;
    if (samples > room) {
      this.stats.overflowSamples += samples - Math.max(0, room);
      samples = Math.max(0, room);
      if (samples === 0) return;
    }
    // Copied: the caller may reuse its buffer (DownlinkPort contract).
    this.#queue.push({ itemId, contentIndex, pcm: pcm.slice(0, samples), offset: 0 });
    this.#queuedSamples += samples;
    this.ledger.generated(itemId, contentIndex, samples);
    // The first frame of a reply is encoded as it arrives, so no tick has to.
    this.prepare();
  }

  flush(): number {
    this.#held = false;
    const dropped = this.#queuedSamples;
    this.#prepared = null;
    this.#queue.length = 0;
    this.#queuedSamples = 0;
    this.#partialWait = 0;
    return samplesToMs(dropped);
  }

  hold(held: boolean): void {
    this.#held = held;
  }

  tick(index: number): void {
    if (this.#closed) return;
    if (this.#firstIndex < 0) this.#firstIndex = index;
    if (this.#held) {
      // The first packet after the hold carries the marker, as after any silence.
      this.#silent = true;
      this.#idle(index);
      return;
    }
    if (this.#prepared === null) {
      const head = this.#queue[0];
      if (!head || !this.#frameReady(head)) {
        if (this.#playing !== null) this.#stop();
        this.#silent = true;
        this.#idle(index);
        return;
      }
      this.#encodeNext();
    }
    this.#sendPrepared(index);
  }

  /**
   * Encodes the frame the next tick will send, if it is ready (a whole frame of the head item, or
   * the padded tail of an item that has ended); a partial frame that may yet grow waits for the
   * tick. Not while held: the hold may end in a flush.
   */
  prepare(): void {
    if (this.#closed || this.#held || this.#prepared !== null) return;
    const head = this.#queue[0];
    if (head && this.#frameAvailable(head)) this.#encodeNext();
  }

  close(): void {
    if (this.#closed) return;
    this.flush();
    this.#closed = true;
    this.#playing = null;
  }

  /** Takes the head item's next frame off the queue and encodes it as the prepared frame. */
  #encodeNext(): void {
    const start = performance.now();
    const head = this.#queue[0]!;
    this.#preparedItem = head.itemId;
    this.#preparedContentIndex = head.contentIndex;
    this.#preparedSamples = this.#fillFrame(head.itemId);
    const bytes = this.#encoder.encode(this.#frame, this.#packet);
    // A copy: #packet is reused, and the send keeps its payload (RtpSend).
    this.#prepared = Buffer.from(this.#packet.subarray(0, bytes));
    this.#preparedSeconds = (performance.now() - start) / 1000;
  }

  #sendPrepared(index: number): void {
    this.#idleTicks = 0;
    const start = performance.now();
    const itemId = this.#preparedItem;
    const contentIndex = this.#preparedContentIndex;
    const samples = this.#preparedSamples;
    const payload = this.#prepared!;
    this.#prepared = null;
    this.#queuedSamples -= samples;
    const timestamp = this.#timestamp(index);
    const marker = this.#silent;
    this.#silent = false;
    this.#sequence = (this.#sequence + 1) & 0xffff;
    if (this.#playing !== itemId) {
      if (this.#playing !== null) this.#stop();
      this.#playing = itemId;
      this.#observer.onPlayoutStarted(itemId);
    }
    this.#send(payload, this.#sequence, timestamp, marker);
    const sent = this.#sent;
    sent.itemId = itemId;
    sent.contentIndex = contentIndex;
    sent.samples = samples;
    sent.mediaTimeMs = (index - this.#firstIndex) * FRAME_MS;
    this.#observer.onFrameSent?.(sent);
    this.ledger.sent(itemId, contentIndex, samples);
    this.stats.framesSent++;
    // The frame's work: its encode, whenever that ran, and its send.
    this.#observeWork?.(this.#preparedSeconds + (performance.now() - start) / 1000);
  }

  /**
   * A tick with nothing to play: every KEEPALIVE_TICKS, the encoder's pre-built silence frame
   * (no encode, not in the ledger, no marker: the talkspurt's first real frame keeps it).
   */
  #idle(index: number): void {
    const silence = this.#encoder.silenceFrame;
    if (!silence || ++this.#idleTicks < Downlink.KEEPALIVE_TICKS) return;
    this.#idleTicks = 0;
    this.#sequence = (this.#sequence + 1) & 0xffff;
    this.#send(Buffer.from(silence), this.#sequence, this.#timestamp(index), false);
    this.stats.keepalivesSent++;
  }

  #timestamp(index: number): number {
    return (this.#timestampOrigin + (index - this.#firstIndex) * this.#encoder.timestampStep) >>> 0;
  }

  #stop(): void {
    const item = this.#playing!;
    this.#playing = null;
    this.#observer.onPlayoutStopped(item);
  }

  /** A full frame of the head item is queued, or its last partial frame should go now. */
  #frameReady(head: Chunk): boolean {
    if (this.#frameAvailable(head)) return true;
    // Less than a frame and nothing after it: more may be on its way from the model.
    if (++this.#partialWait <= Downlink.PARTIAL_FRAME_WAIT_TICKS) return false;
    this.#partialWait = 0;
    return true;
  }

  /** A full frame of the head item is queued, or the item has ended (its tail goes padded). */
  #frameAvailable(head: Chunk): boolean {
    let available = 0;
    for (const chunk of this.#queue) {
      if (chunk.itemId !== head.itemId) return true; // the item ended: pad its tail
      available += chunk.pcm.length - chunk.offset;
      if (available >= FRAME_SAMPLES) {
        this.#partialWait = 0;
        return true;
      }
    }
    return false;
  }

  /** Copies up to one frame of the item into #frame, silence after its end; returns real samples. */
  #fillFrame(itemId: string): number {
    let filled = 0;
    while (filled < FRAME_SAMPLES) {
      const chunk = this.#queue[0];
      if (!chunk || chunk.itemId !== itemId) break;
      const n = Math.min(FRAME_SAMPLES - filled, chunk.pcm.length - chunk.offset);
      this.#frame.set(chunk.pcm.subarray(chunk.offset, chunk.offset + n), filled);
      chunk.offset += n;
      filled += n;
      if (chunk.offset === chunk.pcm.length) this.#queue.shift();
    }
    this.#frame.fill(0, filled);
    return filled;
  }
}
