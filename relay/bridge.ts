// The seam between a call's media (relay/call/, relay/media/) and what its audio and events
// are bridged to: the inference connection in production, simpler bridges in tests.
// The call owns the PeerConnection and hands the bridge these three ports when media is set up.
import type {
  CallStats,
  CallUsage,
  EndReason,
  LogItem,
  ModelUsage,
  ResumeOf,
} from "../protocol/relay-api.ts";
import type { CallState } from "../protocol/sideband.ts";
import type { SessionConfig } from "../protocol/session.ts";
import type { Logger } from "./log.ts";
import type { DownlinkPort, SentFrame } from "./media/downlink.ts";
import type { RelayMetrics } from "./metrics.ts";

/** The `oai-events` data channel, as text. */
export interface EventChannelPort {
  readonly open: boolean;
  /**
   * The largest message the client accepts, in bytes: its SDP `a=max-message-size` (64 KiB when
   * the offer has none, RFC 8841), 0 for no limit. A larger message cannot be sent.
   */
  readonly maxMessageBytes: number;
  /** Sends one message. Never throws; says why a message was not sent. */
  send(text: string): EventSendResult;
}

/** "too_large": over maxMessageBytes; "failed": the data channel refused it (closing). */
export type EventSendResult = "sent" | "closed" | "too_large" | "failed";

export interface CallContext {
  callId: string;
  session: SessionConfig;
  /** The call's logger (call_id bound): one line per problem per call, never per packet. */
  log: Logger;
  /** The relay's metrics: the bridge counts what it drops, rejects and interrupts here. */
  metrics: RelayMetrics;
  downlink: DownlinkPort;
  events: EventChannelPort;
  /** Ends the call (hang-up of the PeerConnection, report to the edge) with a reason. */
  end(reason: EndReason, message?: string): void;
  /** Conversation items for the call's log at the edge (never audio); bounded by the caller. */
  reportLog?(items: LogItem[]): void;
  /** The session as the model confirmed it, after an update changed it (for a resume). */
  reportSession?(session: SessionConfig): void;
  /**
   * The call was resumed here after its relay was lost: the conversation so far, to be told to
   * the model before the client's events and audio reach it.
   */
  resume?: ResumeOf;
}

/**
 * A sideband WebSocket (an app server attached to the call), as its call's bridge sees it: one
 * more place server events go, and a source of client events. Owned and closed by the call.
 */
export interface SidebandPort {
  /** For logs: which API key attached it (a hash prefix, never the key). */
  readonly keyId: string;
  /**
   * Sends one server event's JSON. Never throws and never waits: a sideband that does not read
   * is closed by the port itself once too much is unread.
   */
  send(text: string): void;
}

/** What the bridge hands back for an attached sideband. */
export interface SidebandHandle {
  /** A text message from the sideband. Untrusted: validate it. */
  onMessage(text: string): void;
  /** The sideband closed; send it nothing more. */
  detached(): void;
}

/** The caller's link as the call sees it; `ended` comes once, before the bridge is closed. */
export type CallStateChange =
  | { state: Exclude<CallState, "ended"> }
  | { state: "ended"; reason: EndReason; message: string | undefined; usage: CallUsage };

/** A call's bridge receives uplink audio and data-channel messages from the call. */
export interface CallBridge {
  /**
   * One 20 ms frame of 24 kHz PCM16 mono (480 samples) from the uplink, in order, concealed
   * frames included. Called on the media path: no await, no per-frame logging. The array is
   * reused after the call returns: copy what you keep. `mediaTimeMs` is the frame's start on the
   * client's media clock (its RTP timestamps, in ms from an arbitrary origin; concealed frames
   * included): when the client captured it, free of arrival jitter. Absent from callers that
   * have no media clock.
   */
  onUplinkFrame(pcm: Int16Array, mediaTimeMs?: number): void;
  /**
   * The downlink put a frame on the wire (its item, samples and media time). Called on the media
   * path from the pacer, before the PlayoutLedger counts the frame; the object is reused.
   * Optional: for bridges that align the uplink with what was sent (echo suppression).
   */
  onDownlinkSent?(frame: SentFrame): void;
  /**
   * The round trip to the client, ms, from its RTCP receiver reports (about once a second).
   * Optional: for bridges whose echo suppression bounds the echo's delay by it.
   */
  onRoundTrip?(rttMs: number): void;
  /** A text message from the client on `oai-events`. Untrusted: validate it. */
  onClientMessage(text: string): void;
  /** The data channel opened (events queued before this should be flushed now). */
  onChannelOpen(): void;
  /** Downlink pacer events, so the bridge can emit `output_audio_buffer.*`. */
  onPlayoutStarted(itemId: string): void;
  onPlayoutStopped(itemId: string): void;
  /**
   * Attaches a sideband: it gets the call's server events from now on, and what it sends is
   * handled as the client's would be. Optional: a bridge without it refuses sidebands.
   */
  attachSideband?(port: SidebandPort): SidebandHandle;
  /** The model's part of the call's usage: its responses and their `usage` summed. */
  modelUsage?(): { turns: number; model: ModelUsage; bargeIns?: number };
  /** The caller's link changed (for the sidebands' `earshot.call.state`). */
  onCallState?(change: CallStateChange): void;
  /** The call's periodic link figures (for the sidebands' `earshot.call.quality`). */
  onCallStats?(stats: CallStats): void;
  /** Safe to call twice. */
  close(): void;
}

/** Creates a call's bridge as soon as the offer is accepted, before ICE completes. */
export type CallBridgeFactory = (ctx: CallContext) => CallBridge;
