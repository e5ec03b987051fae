// A call's bridge to the inference backend over the OpenAI Realtime protocol (GA names).
// Created as soon as the relay accepts the offer, so the upstream socket opens while ICE and
// DTLS are still in progress and the model session is warm when media starts.
//
//  uplink PCM (20 ms) ──▶ [echo suppression, relay VAD] ──▶ input_audio_buffer.append (40 ms, base64)
//  response.output_audio.delta ──▶ DownlinkPort.push (PlayoutLedger records generated/sent)
//  oai-events ⇄ client events up (validated) / server events down (audio deltas excepted)
//  sidebands  ⇄ the same, for app servers attached to the call (relay/sideband/)
//
// Model-session rollover (OpenAI ends a Realtime session at 60 minutes): once the model session
// is `modelSessionMaxMs` old, a second upstream (the standby) is opened and primed with the
// call's session and its conversation (conversation-replay.ts); everything it says while primed
// is the relay's. At the next quiet point (no reply generating or playing, the user not talking,
// no session.update unanswered) the items added since are appended to it, the uplink moves to it
// and the old one is closed: make-before-break, so the client hears no gap and sees one
// `earshot.session.rolled_over`. If the old upstream drops first, a primed standby takes over at
// once; without one, the reconnected upstream is primed the same way before client events flow.
import { performance } from "node:perf_hooks";
import { assertNever } from "../../protocol/assert-never.ts";
import {
  type ClientEvent,
  type ErrorDetail,
  MAX_CLIENT_EVENT_BYTES,
  type ServerEvent,
  errorEvent,
  invalidEventError,
  newId,
  parseClientEvent,
  parseServerEvent,
} from "../../protocol/realtime.ts";
import type { SessionConfig } from "../../protocol/session.ts";
import type {
  CallBridge,
  CallBridgeFactory,
  CallContext,
  CallStateChange,
  SidebandHandle,
  SidebandPort,
} from "../bridge.ts";
import type { UplinkMonitor, UplinkMonitorHooks } from "../barge-in/uplink-monitor.ts";
import type { SentFrame } from "../media/downlink.ts";
import { ProblemLog } from "../log.ts";
import type { RelayMetrics } from "../metrics.ts";
import { FRAME_SAMPLES } from "../media/audio-format.ts";
import { BargeIn, RELAY_EVENT_PREFIX } from "../barge-in/barge-in.ts";
import { TurnPolicy } from "../barge-in/turn-policy.ts";
import type { InferenceConfig } from "../config.ts";
import { ModelSession, RECONNECTED_EVENT, type SessionOutcome, forModel } from "./model-session.ts";
import { SidebandHub } from "../sideband/sideband-hub.ts";
import { UsageTally } from "./usage-tally.ts";
import { ConversationRecorder } from "./conversation-recorder.ts";
import { type ReplayPlan, planReplay, withModalities } from "./conversation-replay.ts";
import type { CallStats, ModelUsage } from "../../protocol/relay-api.ts";
import { UpstreamConnection, type UpstreamFailure } from "./upstream-connection.ts";

/** Uplink frames per input_audio_buffer.append: 2 × 20 ms. */
const FRAMES_PER_APPEND = 2;
/** Server events held for a data channel that is not open yet (session.created and friends). */
const MAX_PENDING_CHANNEL_EVENTS = 256;
/** Client events held while the upstream is (re)connecting and its session being configured. */
export const MAX_PENDING_UPSTREAM_EVENTS = 64;
/**
 * How long the model may take to answer the relay's session.update before the call goes on
 * under the session as asked (OpenAI answers in well under a second).
 */
export const SESSION_CONFIRM_TIMEOUT_MS = 5000;
/**
 * Error replies to malformed client events: a burst of this many, then this many a second.
 * A client that floods garbage would otherwise get an error back for every message, and the
 * relay would spend its data channel (SCTP carries about 100 small messages a second here)
 * and its CPU answering; a client with a bug still sees its first errors and one a tenth of a
 * second after that. Every rejection is counted either way.
 */
export const ERROR_REPLY_BURST = 20;
export const ERROR_REPLIES_PER_SECOND = 10;

/**
 * A token bucket for error replies (ERROR_REPLY_BURST, ERROR_REPLIES_PER_SECOND): one for the
 * data channel, one per sideband, so one source's garbage cannot use up another's replies.
 */
export class ErrorReplyBudget {
  #tokens = ERROR_REPLY_BURST;
  #refilledAt = performance.now();

  take(): boolean {
    const now = performance.now();
    this.#tokens = Math.min(
      ERROR_REPLY_BURST,
      this.#tokens + ((now - this.#refilledAt) / 1000) * ERROR_REPLIES_PER_SECOND,
    );
    this.#refilledAt = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

export interface InferenceBridgeOptions {
  config: InferenceConfig;
  /** Creates the per-call uplink monitor (VAD, echo suppression), if enabled. */
  uplinkMonitor?: (hooks: UplinkMonitorHooks, metrics: RelayMetrics) => UplinkMonitor;
  /** SESSION_CONFIRM_TIMEOUT_MS unless given (tests). */
  sessionConfirmTimeoutMs?: number;
}

/** The relay's own server event telling the client its model session was replaced by a primed one. */
export const ROLLED_OVER_EVENT = "earshot.session.rolled_over";
/** The relay's own server event telling the client its call moved here from a lost relay. */
export const RESUMED_EVENT = "earshot.call.resumed";
/** How often a primed standby checks for a quiet point to take over at. */
const QUIET_POLL_MS = 100;
/**
 * Responses tracked at once for #failOpenResponses. OpenAI runs one in-conversation response at a
 * time plus any out-of-band ones; a model that opens more than this without ending them is not
 * followed further (their `response.done` is then not made up for the client).
 */
export const MAX_OPEN_RESPONSES = 16;
/** A standby that failed to open or prime is tried again this much later. */
const STANDBY_RETRY_MS = 10_000;

/** A second model session being primed to take the call over (a rollover). */
interface Standby {
  upstream: UpstreamConnection;
  /** The call's session as the standby was given it; null until it opened. */
  session: SessionConfig | null;
  /** Item ids it was given: its echoes of them are the relay's, never the client's. */
  replayed: Set<string>;
  plan: ReplayPlan | null;
  /** The last priming event, and its item: their answer means the standby has it all. */
  lastEventId: string;
  lastItemId: string | null;
  primed: boolean;
  /** Bounds the priming, then polls for a quiet point. */
  timer: NodeJS.Timeout | undefined;
}

/** A client event waiting for the model session; a session.update keeps its parsed session. */
interface HeldEvent {
  text: string;
  sessionUpdate: { eventId: string | undefined; session: SessionConfig } | null;
}

export class InferenceBridge implements CallBridge {
  readonly #ctx: CallContext;
  readonly #config: InferenceConfig;
  /** The model session the call runs on; replaced at a rollover. */
  #upstream: UpstreamConnection;
  #standby: Standby | null = null;
  #rolloverTimer: NodeJS.Timeout | undefined;
  /** Items the current model session was primed with: its echoes of them are swallowed. */
  #replayed = new Set<string>();
  #lastReplay: ReplayPlan | null = null;
  /** The upstream's VAD heard the user start and not yet stop (no rollover mid-utterance). */
  #userSpeaking = false;
  readonly #bargeIn: BargeIn;
  readonly #monitor: UplinkMonitor | null;
  readonly #session: ModelSession;
  readonly #sessionConfirmTimeoutMs: number;
  #sessionTimer: NodeJS.Timeout | null = null;
  readonly #turns: TurnPolicy;

  // Uplink batch: reused for every append, no per-frame allocation.
  readonly #batch = new Int16Array(FRAME_SAMPLES * FRAMES_PER_APPEND);
  readonly #batchBytes = Buffer.from(this.#batch.buffer);
  #batchFrames = 0;
  // Downlink decode buffer, grown to the largest delta seen (in 4 KiB steps), not sized up
  // front: a call whose model sends 100 ms deltas holds 8 KiB here, not 64.
  #deltaBytes = Buffer.allocUnsafeSlow(0);

  #pendingChannel: [text: string, type: string][] = [];
  /** The client has its session.created; until then its events wait (see #announce). */
  #announced = false;
  readonly #problems: ProblemLog;
  #pendingUpstream: HeldEvent[] = [];
  #closed = false;
  readonly #channelReplies = new ErrorReplyBudget();
  readonly #sidebands: SidebandHub;
  readonly #usage = new UsageTally();
  /** The conversation so far: reported to the edge's log, and replayed into a new model session. */
  readonly #conversation: ConversationRecorder;
  /**
   * Responses the client saw start (`response.created`) and not yet end, by id: if their model
   * session is lost, the relay ends them for the client (see #failOpenResponses).
   */
  readonly #openResponses = new Map<string, Record<string, unknown>>();

  constructor(ctx: CallContext, options: InferenceBridgeOptions) {
    this.#ctx = ctx;
    this.#config = options.config;
    this.#problems = new ProblemLog(ctx.log);
    this.#session = new ModelSession(ctx.session);
    this.#sessionConfirmTimeoutMs = options.sessionConfirmTimeoutMs ?? SESSION_CONFIRM_TIMEOUT_MS;
    this.#sidebands = new SidebandHub(ctx.callId);
    const reportLog = ctx.reportLog?.bind(ctx);
    this.#conversation = new ConversationRecorder({
      generatedMs: (itemId) => ctx.downlink.ledger.generatedMs(itemId),
      report: (items) => {
        if (!reportLog) return;
        try {
          reportLog(items);
        } catch (error) {
          this.#problems.warn("conversation log report failed", { message: String(error) });
        }
      },
    });
    const metrics = ctx.metrics;
    this.#bargeIn = new BargeIn({
      downlink: ctx.downlink,
      metrics,
      sendUpstream: (event) => this.#sendUpstream(JSON.stringify(event)),
      emit: (event) => this.#emit(event),
    });
    // The session's turn settings decide whether the relay's VAD may interrupt at all.
    this.#monitor =
      options.uplinkMonitor?.(
        {
          assistantActive: () => this.#turns.relayMayInterrupt && this.#bargeIn.assistantActive,
          onSpeechStart: () => this.#bargeIn.hold(),
          onSpeechEnd: () => this.#bargeIn.resume(),
          onSpeech: () => this.#bargeIn.trigger("relay_vad"),
        },
        metrics,
      ) ?? null;
    this.#turns = new TurnPolicy(this.#monitor?.detectsSpeech ?? false, ctx.session);
    if (ctx.resume) this.#conversation.adopt(ctx.resume.conversation);
    this.#upstream = this.#connect();
  }

  /**
   * An upstream whose events go where its role says: the call's model session, the standby being
   * primed, or nowhere (one the call has moved away from, still winding down).
   */
  #connect(): UpstreamConnection {
    const upstream: UpstreamConnection = new UpstreamConnection(this.#config, {
      onOpen: (reconnected) => {
        if (upstream === this.#upstream) this.#onUpstreamOpen(reconnected);
        else if (upstream === this.#standby?.upstream) this.#onStandbyOpen(this.#standby);
      },
      onMessage: (text) => {
        if (upstream === this.#upstream) this.#onUpstreamMessage(text);
        else if (upstream === this.#standby?.upstream) this.#onStandbyMessage(this.#standby, text);
      },
      // Not the client's fault and nothing to forward: counted, logged once per call.
      onBinaryMessage: (bytes) => this.#problems.warn("binary upstream frame", { bytes }),
      onDrop: (failure) => {
        if (upstream === this.#upstream) this.#onUpstreamDrop(failure);
        else if (upstream === this.#standby?.upstream) this.#abandonStandby(failure.message);
      },
      onGiveUp: (failure) => {
        if (upstream === this.#upstream) this.#onUpstreamGiveUp(failure);
        else if (upstream === this.#standby?.upstream) this.#abandonStandby(failure.message);
      },
    });
    return upstream;
  }

  #onUpstreamDrop(failure: UpstreamFailure): void {
    const metrics = this.#ctx.metrics;
    metrics.upstreamFailures.inc({ class: failure.retryable ? "retryable" : "fatal" });
    this.#ctx.log.warn({ retryable: failure.retryable }, `upstream dropped: ${failure.message}`);
    this.#userSpeaking = false;
    // Whatever the model was saying is gone with its session.
    this.#bargeIn.trigger("upstream_lost");
    this.#failOpenResponses(failure);
    const standby = this.#standby;
    if (standby?.primed) {
      // Its cap came before a quiet point: the primed session takes over now.
      this.#promote(standby);
      return;
    }
    if (standby) this.#abandonStandby("the model session it would replace dropped first");
    this.#session.dropped();
  }

  /**
   * A lost model session never sends the `response.done` of the replies it was generating, and a
   * client (OpenAI's SDKs among them) waits for one to leave its "responding" state. The relay
   * sends it, as OpenAI does for a response that failed: status `failed`, the cause in
   * `status_details.error`, no usage.
   */
  #failOpenResponses(failure: UpstreamFailure): void {
    for (const [id, response] of this.#openResponses) {
      this.#emit({
        type: "response.done",
        event_id: newId("event"),
        response: {
          ...response,
          id,
          object: "realtime.response",
          status: "failed",
          status_details: {
            type: "failed",
            error: {
              type: "server_error",
              code: "inference_lost",
              message: `The model session was lost: ${failure.message}.`,
            },
          },
          usage: null,
        },
      } as ServerEvent);
    }
    this.#openResponses.clear();
  }

  #onUpstreamGiveUp(failure: UpstreamFailure): void {
    this.#ctx.metrics.upstreamFailures.inc({ class: failure.retryable ? "retryable" : "fatal" });
    // No session will come: whatever is held goes out, and this error last.
    this.#announced = true;
    if (this.#ctx.events.open) this.#flushChannel();
    this.#emit(
      errorEvent({
        type: "server_error",
        code: failure.retryable ? "inference_lost" : "inference_error",
        message: `The inference connection failed: ${failure.message}.`,
        param: null,
      }),
    );
    this.#ctx.end(failure.retryable ? "inference_lost" : "inference_error", failure.message);
  }

  /** The call's session as the model confirmed it: the ticket's and the client's updates. */
  get session(): SessionConfig {
    return this.#session.effective;
  }

  /** Connection attempts so far (tests). */
  get upstreamAttempts(): number {
    return this.#upstream.attempts;
  }

  // ---------------------------------------------------------------------------------------------
  // Uplink
  // ---------------------------------------------------------------------------------------------

  onUplinkFrame(pcm: Int16Array, mediaTimeMs?: number): void {
    if (this.#closed) return;
    const echoOnly = this.#monitor ? this.#monitor.onUplinkFrame(pcm, mediaTimeMs) : false;
    // Audio waits for the model to run the call's session, never its defaults.
    if (!this.#session.ready || !this.#upstream.open) {
      this.#ctx.metrics.droppedAudio.inc({
        direction: "uplink",
        reason: this.#upstream.open ? "session_not_ready" : "upstream_not_open",
      });
      this.#batchFrames = 0;
      return;
    }
    const offset = this.#batchFrames * FRAME_SAMPLES;
    if (echoOnly) this.#batch.fill(0, offset, offset + FRAME_SAMPLES);
    else this.#batch.set(pcm.subarray(0, FRAME_SAMPLES), offset);
    if (++this.#batchFrames < FRAMES_PER_APPEND) return;
    this.#batchFrames = 0;
    this.#upstream.send(
      `{"type":"input_audio_buffer.append","audio":"${this.#batchBytes.toString("base64")}"}`,
    );
  }

  onDownlinkSent(frame: SentFrame): void {
    if (!this.#closed) this.#monitor?.onDownlinkSent(frame);
  }

  onRoundTrip(rttMs: number): void {
    if (!this.#closed) this.#monitor?.onRoundTrip(rttMs);
  }

  // ---------------------------------------------------------------------------------------------
  // Client events (oai-events → upstream)
  // ---------------------------------------------------------------------------------------------

  onClientMessage(text: string): void {
    this.#onClientText(text, this.#channelReplies, (error) => this.#emit(error));
  }

  /**
   * A sideband's events are the client's: the same validation and handling. Its own mistakes are
   * answered to it alone; everything the upstream says goes to every listener.
   */
  attachSideband(port: SidebandPort): SidebandHandle {
    const replies = new ErrorReplyBudget();
    return this.#sidebands.attach(port, (text) =>
      this.#onClientText(text, replies, (error) => port.send(JSON.stringify(error))),
    );
  }

  modelUsage(): { turns: number; model: ModelUsage; bargeIns: number } {
    return { turns: this.#usage.turns, model: this.#usage.model, bargeIns: this.#bargeIn.count };
  }

  onCallState(change: CallStateChange): void {
    if (!this.#closed) this.#sidebands.callState(change);
  }

  onCallStats(stats: CallStats): void {
    if (!this.#closed) this.#sidebands.callStats(stats);
  }

  #onClientText(text: string, replies: ErrorReplyBudget, reply: (error: ServerEvent) => void): void {
    if (this.#closed) return;
    const parsed = parseClientEvent(text, MAX_CLIENT_EVENT_BYTES);
    switch (parsed.kind) {
      case "invalid":
        this.#ctx.metrics.rejectedClientEvents.inc({ code: parsed.code });
        if (replies.take()) reply(invalidEventError(parsed));
        else this.#ctx.metrics.unansweredRejections.inc();
        return;
      case "unknown":
        // Passed through as OpenAI would receive it; the upstream answers unknown types itself.
        this.#sendUpstream(text);
        return;
      case "known":
        this.#onClientEvent(parsed.event, text);
        return;
      default:
        assertNever(parsed, "parse result");
    }
  }

  #onClientEvent(event: ClientEvent, text: string): void {
    switch (event.type) {
      case "output_audio_buffer.clear":
        // WebRTC only: the relay owns playback. The client sends response.cancel itself.
        this.#bargeIn.trigger("client_clear");
        return;
      case "session.update":
        // The relay carries audio as PCM16 24 kHz whatever the client asks for; its turn policy
        // may own interruption (turn-policy.ts).
        this.#sendUpstream(
          JSON.stringify({ ...event, session: forModel(this.#turns.toUpstream(event.session, false)) }),
          { eventId: event.event_id, session: event.session },
        );
        return;
      case "input_audio_buffer.append":
      case "input_audio_buffer.commit":
      case "input_audio_buffer.clear":
      case "conversation.item.create":
      case "conversation.item.truncate":
      case "conversation.item.delete":
      case "response.create":
      case "response.cancel":
        this.#sendUpstream(text);
        return;
      default:
        assertNever(event, "client event");
    }
  }

  onChannelOpen(): void {
    if (this.#announced) this.#flushChannel();
  }

  #flushChannel(): void {
    const pending = this.#pendingChannel;
    this.#pendingChannel = [];
    for (const [text, type] of pending) this.#deliver(text, type);
  }

  /**
   * The client's first event: session.created, ahead of anything held while the model was
   * being configured (an error about a client event sent too early, say). Later events flow.
   */
  #announce(text: string, type: string): void {
    this.#announced = true;
    // Sidebands hear it too, and one that attaches later is given it as the session so far.
    this.#sidebands.broadcast(text, type);
    this.#pendingChannel.unshift([text, type]);
    if (this.#ctx.events.open) this.#flushChannel();
  }

  onPlayoutStarted(itemId: string): void {
    const responseId = this.#bargeIn.responseOf(itemId);
    this.#emit({
      type: "output_audio_buffer.started",
      event_id: newId("event"),
      response_id: responseId,
    });
  }

  onPlayoutStopped(itemId: string): void {
    // An interrupted reply was already reported as `cleared`.
    if (this.#bargeIn.wasCleared(itemId)) return;
    const responseId = this.#bargeIn.responseOf(itemId);
    this.#emit({
      type: "output_audio_buffer.stopped",
      event_id: newId("event"),
      response_id: responseId,
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Upstream (server events → downlink and oai-events)
  // ---------------------------------------------------------------------------------------------

  #onUpstreamOpen(reconnected: boolean): void {
    if (this.#closed) return;
    // The call's session first; client events wait until the model has applied it.
    const { update, unanswered } = this.#session.opened((session) => this.#toModel(session));
    this.#upstream.send(update);
    this.#scheduleRollover();
    if (reconnected || this.#ctx.resume) {
      // A new model session knows nothing of the call: it is told the conversation before
      // anything of the client's reaches it (a resumed call's, from its lost relay, included).
      const plan = planReplay(this.#conversation.items(), this.#config.replayTokenBudget);
      for (const event of plan.events) this.#upstream.send(event);
      this.#replayed = new Set(plan.itemIds);
      this.#lastReplay = plan;
      this.#ctx.log.info(
        { replayed: plan.replayed, summarised: plan.summarised, dropped: plan.dropped },
        reconnected
          ? "upstream reconnected, new model session primed with the conversation"
          : "resumed call: model session primed with the conversation from the lost relay",
      );
    }
    // The client's updates the lost model session never answered go to the new one, first.
    const resend: HeldEvent[] = unanswered.map(({ text, eventId, session }) => ({
      text,
      sessionUpdate: { eventId, session },
    }));
    this.#pendingUpstream = [...resend, ...this.#pendingUpstream];
    if (this.#sessionTimer) clearTimeout(this.#sessionTimer);
    this.#sessionTimer = setTimeout(() => {
      this.#sessionTimer = null;
      const outcome = this.#session.timedOut();
      if (!outcome) return;
      this.#problems.warn("model did not confirm the session in time", {
        timeout_ms: this.#sessionConfirmTimeoutMs,
      });
      this.#onSessionOutcome(outcome, null, "");
    }, this.#sessionConfirmTimeoutMs);
  }

  // ---------------------------------------------------------------------------------------------
  // Rollover: a standby model session primed with the conversation takes the call over
  // ---------------------------------------------------------------------------------------------

  /** The session as a model gets it: PCM audio, the relay's turn policy, modalities explicit. */
  #toModel(session: SessionConfig): SessionConfig {
    return forModel(this.#turns.toUpstream(withModalities(session), true));
  }

  #scheduleRollover(delayMs = this.#config.modelSessionMaxMs): void {
    clearTimeout(this.#rolloverTimer);
    this.#rolloverTimer = setTimeout(() => this.#startRollover(), delayMs);
  }

  #startRollover(): void {
    this.#rolloverTimer = undefined;
    if (this.#closed || this.#standby) return;
    this.#ctx.log.info("model session at its age limit: priming a new one to take over");
    // Its events are routed by comparing it with #standby, which is set before any can arrive.
    const standby: Standby = {
      upstream: this.#connect(),
      session: null,
      replayed: new Set(),
      plan: null,
      lastEventId: "",
      lastItemId: null,
      primed: false,
      timer: undefined,
    };
    this.#standby = standby;
    // Opening and priming take well under a second; one that takes this long is not used.
    standby.timer = setTimeout(
      () => this.#abandonStandby("not primed in time"),
      this.#config.connectTimeoutMs + this.#sessionConfirmTimeoutMs,
    );
  }

  #onStandbyOpen(standby: Standby): void {
    const session = this.#session.effective;
    const updateId = RELAY_EVENT_PREFIX + newId("event");
    standby.upstream.send(
      JSON.stringify({ type: "session.update", event_id: updateId, session: this.#toModel(session) }),
    );
    const plan = planReplay(this.#conversation.items(), this.#config.replayTokenBudget);
    for (const event of plan.events) standby.upstream.send(event);
    standby.session = session;
    standby.plan = plan;
    standby.replayed = new Set(plan.itemIds);
    standby.lastItemId = plan.itemIds.at(-1) ?? null;
    standby.lastEventId = plan.events.length > 0 ? eventIdOf(plan.events.at(-1)!) : updateId;
  }

  /** Nothing a standby says reaches the client; its answer to the last priming event primes it. */
  #onStandbyMessage(standby: Standby, text: string): void {
    if (this.#closed || !standby.session || standby.primed) return;
    const parsed = parseServerEvent(text);
    if (parsed.kind !== "known") return;
    const event = parsed.event;
    let done = false;
    switch (event.type) {
      case "error":
        this.#problems.warn("model rejected part of a rollover's priming", { message: event.error.message });
        done = event.error.event_id === standby.lastEventId;
        break;
      case "session.updated":
        done = standby.lastItemId === null;
        break;
      case "conversation.item.added":
      case "conversation.item.created":
      case "conversation.item.done":
        done = event.item.id === standby.lastItemId;
        break;
      default:
        break;
    }
    if (!done) return;
    standby.primed = true;
    clearTimeout(standby.timer);
    this.#switchWhenQuiet(standby);
  }

  /** The standby takes over at a quiet point: nothing said or heard is cut. */
  #switchWhenQuiet(standby: Standby): void {
    standby.timer = undefined;
    if (this.#closed || this.#standby !== standby) return;
    const quiet =
      this.#session.settled &&
      this.#pendingUpstream.length === 0 &&
      !this.#bargeIn.assistantActive &&
      !this.#bargeIn.held &&
      !this.#userSpeaking;
    if (quiet) this.#promote(standby);
    else standby.timer = setTimeout(() => this.#switchWhenQuiet(standby), QUIET_POLL_MS);
  }

  #promote(standby: Standby): void {
    clearTimeout(standby.timer);
    this.#standby = null;
    const previous = this.#upstream;
    const { upstream, replayed } = standby;
    // What the conversation gained since the standby was primed goes to it, in order.
    const catchUp = planReplay(this.#conversation.items(), Number.POSITIVE_INFINITY, replayed);
    for (const event of catchUp.events) upstream.send(event);
    for (const id of catchUp.itemIds) replayed.add(id);
    // A session.update the old session confirmed while this one was primed.
    let update: Parameters<ModelSession["rolledOver"]>[0] = null;
    if (standby.session !== this.#session.effective) {
      const eventId = RELAY_EVENT_PREFIX + newId("event");
      const session = this.#toModel(this.#session.effective);
      const text = JSON.stringify({ type: "session.update", event_id: eventId, session });
      upstream.send(text);
      update = { eventId, session, text };
    }
    this.#upstream = upstream;
    this.#replayed = replayed;
    this.#batchFrames = 0;
    this.#userSpeaking = false;
    previous.close();
    const resend = this.#session.rolledOver(update);
    for (const text of resend) this.#sendUpstream(text);
    this.#scheduleRollover();
    const plan = standby.plan!;
    this.#ctx.log.info(
      {
        replayed: plan.replayed + catchUp.replayed,
        summarised: plan.summarised,
        dropped: plan.dropped,
      },
      "rolled over to a new model session",
    );
    this.#emitText(
      JSON.stringify({
        type: ROLLED_OVER_EVENT,
        event_id: newId("event"),
        replayed_items: plan.replayed + catchUp.replayed,
        summarised_items: plan.summarised,
        dropped_items: plan.dropped,
      }),
      ROLLED_OVER_EVENT,
    );
  }

  #abandonStandby(why: string): void {
    const standby = this.#standby;
    if (!standby) return;
    this.#standby = null;
    clearTimeout(standby.timer);
    standby.upstream.close();
    this.#problems.warn("model session rollover abandoned", { message: why });
    // The current session goes on; the next try comes a little later (or a drop replays anyway).
    if (!this.#closed) this.#scheduleRollover(STANDBY_RETRY_MS);
  }

  #onUpstreamMessage(text: string): void {
    if (this.#closed) return;
    const parsed = parseServerEvent(text);
    if (parsed.kind === "invalid") {
      // Not the client's fault and not safe to forward: count it and move on.
      this.#problems.warn("bad upstream event", { code: parsed.code, message: parsed.message });
      return;
    }
    // The model's echoes of the conversation the relay replayed into it.
    if (parsed.kind === "known" && this.#replayed.size > 0 && this.#isReplayEcho(parsed.event)) return;
    if (parsed.kind === "unknown") {
      this.#conversation.observeUnknown(parsed.type, text);
      this.#emitText(text, parsed.type);
      return;
    }
    this.#conversation.observe(parsed.event);
    this.#onServerEvent(parsed.event, text);
  }

  #isReplayEcho(event: ServerEvent): boolean {
    switch (event.type) {
      case "conversation.item.added":
      case "conversation.item.created":
      case "conversation.item.done":
        return this.#replayed.has(event.item.id);
      default:
        return false;
    }
  }

  #onServerEvent(event: ServerEvent, text: string): void {
    switch (event.type) {
      case "response.output_audio.delta":
      case "response.audio.delta":
        this.#onAudioDelta(event.response_id, event.item_id, event.content_index, event.delta);
        return; // audio never goes down the data channel
      case "input_audio_buffer.speech_started":
        this.#userSpeaking = true;
        if (this.#turns.upstreamMayInterrupt) this.#bargeIn.trigger("upstream_vad");
        this.#emitText(text, event.type);
        return;
      case "response.created":
        this.#bargeIn.responseCreated(event.response.id);
        if (this.#openResponses.size < MAX_OPEN_RESPONSES) {
          this.#openResponses.set(event.response.id, event.response);
        }
        this.#emitText(text, event.type);
        return;
      case "response.done":
        this.#openResponses.delete(event.response.id);
        this.#usage.add(event.response.usage);
        this.#bargeIn.responseDone(event.response.id);
        this.#emitText(text, event.type);
        return;
      case "session.created":
        this.#onSessionOutcome(this.#session.onCreated(event.session), event, text);
        return;
      case "session.updated": {
        const before = this.#session.effective;
        this.#onSessionOutcome(this.#session.onUpdated(event.session), event, text);
        if (this.#session.effective !== before) this.#ctx.reportSession?.(this.#session.effective);
        return;
      }
      case "error": {
        const answer = this.#session.onError(event.error);
        if (answer) {
          this.#onSessionOutcome(answer, event, text);
          return;
        }
        // Errors provoked by the relay's own cancel/truncate (e.g. the response had already
        // finished) are the relay's business, not the client's.
        const cause = event.error.event_id ?? "";
        if (cause.startsWith(RELAY_EVENT_PREFIX)) {
          this.#problems.warn("upstream rejected a relay event", { message: event.error.message });
          return;
        }
        this.#emitText(text, event.type);
        return;
      }
      case "input_audio_buffer.speech_stopped":
        this.#userSpeaking = false;
        this.#emitText(text, event.type);
        return;
      case "input_audio_buffer.committed":
      case "input_audio_buffer.cleared":
      case "conversation.item.added":
      case "conversation.item.done":
      case "conversation.item.created":
      case "conversation.item.truncated":
      case "conversation.item.deleted":
      case "response.output_item.added":
      case "response.output_item.done":
      case "response.content_part.added":
      case "response.content_part.done":
      case "response.output_audio.done":
      case "response.audio.done":
      case "response.output_audio_transcript.delta":
      case "response.audio_transcript.delta":
      case "response.output_audio_transcript.done":
      case "response.audio_transcript.done":
      case "rate_limits.updated":
        this.#emitText(text, event.type);
        return;
      case "output_audio_buffer.started":
      case "output_audio_buffer.stopped":
      case "output_audio_buffer.cleared":
        // The relay owns playback and emits these itself; an upstream's copy would be a duplicate.
        return;
      default:
        assertNever(event, "server event");
    }
  }

  /** `event` (and its `text`) is the upstream event the outcome answers; null for a timeout. */
  #onSessionOutcome(outcome: SessionOutcome, event: ServerEvent | null, text: string): void {
    switch (outcome.kind) {
      case "swallow":
        return;
      case "forward":
        if (!event) return;
        if (outcome.session) {
          const session = this.#turns.clientSession(outcome.session);
          this.#emitText(JSON.stringify({ ...event, session }), event.type);
        } else this.#emitText(text, event.type);
        return;
      case "ready":
      case "refused":
        outcome.session = this.#turns.clientSession(outcome.session);
        if (this.#sessionTimer) clearTimeout(this.#sessionTimer);
        this.#sessionTimer = null;
        if (outcome.first) {
          const created = { type: "session.created", event_id: newId("event"), session: outcome.session };
          this.#announce(JSON.stringify(created), created.type);
          if (this.#ctx.resume) this.#tellResumed(this.#ctx.resume.previous_relay_id);
        } else {
          this.#emitText(
            JSON.stringify({
              type: RECONNECTED_EVENT,
              event_id: newId("event"),
              message:
                "The model connection was lost and re-established. The new model session runs the call's session and was told the conversation so far.",
              session: outcome.session,
              replayed_items: this.#lastReplay?.replayed ?? 0,
              summarised_items: this.#lastReplay?.summarised ?? 0,
              dropped_items: this.#lastReplay?.dropped ?? 0,
            }),
            RECONNECTED_EVENT,
          );
        }
        if (outcome.kind === "refused") this.#tellRefusal(outcome.error);
        this.#flushPendingUpstream();
        return;
      case "late_refusal":
        this.#tellRefusal(outcome.error);
        return;
      default:
        assertNever(outcome, "session outcome");
    }
  }

  /**
   * The client learns, right after its session.created, that this is its call resumed on a new
   * relay: what the new model session was told, and what could not be carried over.
   */
  #tellResumed(previousRelayId: string): void {
    const plan = this.#lastReplay;
    this.#emitText(
      JSON.stringify({
        type: RESUMED_EVENT,
        event_id: newId("event"),
        previous_relay_id: previousRelayId,
        message:
          "The call's relay was lost and the call resumed on another. The conversation so far was replayed into a new model session. Lost: audio in flight when the relay failed (the user's last words if not yet transcribed, the rest of a reply being played, which the log still holds as generated).",
        replayed_items: plan?.replayed ?? 0,
        summarised_items: plan?.summarised ?? 0,
        dropped_items: plan?.dropped ?? 0,
      }),
      RESUMED_EVENT,
    );
  }

  /** The model refused the call's session: logged once, and the client told in OpenAI's shape. */
  #tellRefusal(error: ErrorDetail): void {
    this.#problems.warn("model refused the call's session", { message: error.message });
    this.#emit(errorEvent({ ...error, code: error.code ?? null, param: error.param ?? null }));
  }

  #onAudioDelta(responseId: string, itemId: string, contentIndex: number, delta: string): void {
    if (!this.#bargeIn.acceptAudio(responseId, itemId, contentIndex)) {
      this.#ctx.metrics.droppedAudio.inc({ direction: "downlink", reason: "cancelled_response" });
      return;
    }
    // Decode into a reused buffer: base64 of PCM16, 3 bytes per 4 characters at most.
    const maxBytes = (delta.length * 3) >> 2;
    if (maxBytes > this.#deltaBytes.length)
      this.#deltaBytes = Buffer.allocUnsafeSlow(Math.ceil(maxBytes / 4096) * 4096);
    const bytes = this.#deltaBytes.write(delta, 0, "base64");
    if (bytes < 2) {
      this.#ctx.metrics.droppedAudio.inc({
        direction: "downlink",
        reason: bytes === 0 ? "empty_delta" : "odd_bytes",
      });
      return;
    }
    if (bytes & 1) this.#ctx.metrics.droppedAudio.inc({ direction: "downlink", reason: "odd_bytes" });
    const pcm = new Int16Array(this.#deltaBytes.buffer, 0, bytes >> 1);
    this.#monitor?.onAssistantAudio(itemId, pcm);
    this.#ctx.downlink.push(itemId, contentIndex, pcm);
  }

  // ---------------------------------------------------------------------------------------------

  /** A client (or barge-in) event to the model, held while its session is not ready. */
  #sendUpstream(text: string, sessionUpdate: HeldEvent["sessionUpdate"] = null): void {
    if (this.#session.ready && this.#upstream.send(text)) {
      if (sessionUpdate) this.#session.sent(sessionUpdate.eventId, sessionUpdate.session, text);
      return;
    }
    if (this.#pendingUpstream.length >= MAX_PENDING_UPSTREAM_EVENTS) {
      this.#ctx.metrics.rejectedClientEvents.inc({ code: "upstream_not_ready" });
      this.#emit(
        errorEvent({
          type: "server_error",
          code: "upstream_not_ready",
          message: "The inference connection is not open yet; event dropped.",
          param: null,
        }),
      );
      return;
    }
    this.#pendingUpstream.push({ text, sessionUpdate });
  }

  #flushPendingUpstream(): void {
    const pending = this.#pendingUpstream;
    this.#pendingUpstream = [];
    for (const held of pending) this.#sendUpstream(held.text, held.sessionUpdate);
  }

  #emit(event: ServerEvent): void {
    this.#emitText(JSON.stringify(event), event.type);
  }

  /** A server event to the client (or held until the data channel opens) and to every sideband. */
  #emitText(text: string, type: string): void {
    if (this.#closed) return;
    this.#sidebands.broadcast(text, type);
    if (this.#ctx.events.open && this.#announced) {
      this.#deliver(text, type);
      return;
    }
    if (this.#pendingChannel.length >= MAX_PENDING_CHANNEL_EVENTS) this.#pendingChannel.shift();
    this.#pendingChannel.push([text, type]);
  }

  /**
   * An event larger than the client's a=max-message-size cannot go down the data channel (a
   * browser's is 256 KiB; a conversation.item.create just under OpenAI's limit comes back as a
   * larger conversation.item.created). It is dropped, and the client is told which and why.
   */
  #deliver(text: string, type: string): void {
    if (this.#ctx.events.send(text) !== "too_large") return;
    const max = this.#ctx.events.maxMessageBytes;
    const bytes = Buffer.byteLength(text);
    this.#problems.warn("server event larger than the client's max-message-size", { type, bytes, max });
    // Told only if the error itself fits (a peer may advertise an absurdly small limit).
    this.#ctx.events.send(
      JSON.stringify(
        errorEvent({
          type: "invalid_request_error",
          code: "event_too_large",
          message: `The server event ${type} (${bytes} bytes) was not sent: it exceeds this client's data channel limit (a=max-message-size:${max}).`,
          param: null,
        }),
      ),
    );
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#sessionTimer) clearTimeout(this.#sessionTimer);
    this.#sessionTimer = null;
    clearTimeout(this.#rolloverTimer);
    if (this.#standby) {
      clearTimeout(this.#standby.timer);
      this.#standby.upstream.close();
      this.#standby = null;
    }
    // The last items go before the call's `ended` (the call reports that after closing this).
    this.#conversation.close();
    this.#problems.flush();
    this.#bargeIn.close();
    this.#monitor?.close();
    this.#upstream.close();
    this.#pendingChannel = [];
    this.#pendingUpstream = [];
  }
}

/** The `event_id` of an event the relay built (its replay's, a JSON string starting with its type). */
function eventIdOf(text: string): string {
  return (JSON.parse(text) as { event_id: string }).event_id;
}

/** The factory the relay server takes: one InferenceBridge per call. */
export function inferenceBridgeFactory(options: InferenceBridgeOptions): CallBridgeFactory {
  return (ctx) => new InferenceBridge(ctx, options);
}
