// The relay's core: it owns the calls, admits new ones (capacity, drain), and runs what every
// call shares (the 20 ms pacer, the Opus complexity governor, the metrics). It knows nothing of
// HTTP or of the edge: the HTTP API (edge/http-api.ts) drives it, and the edge client
// (edge/edge-client.ts) listens to its events.
import { EventEmitter } from "node:events";
import { randomToken } from "../protocol/encoding.ts";
import {
  MAX_HEARTBEAT_CALL_IDS,
  type CallStats,
  type CallUsage,
  type EndReason,
  type Heartbeat,
  type RelayCallEvent,
  type ResumeOf,
} from "../protocol/relay-api.ts";
import type { SessionConfig } from "../protocol/session.ts";
import type { CallBridge, CallBridgeFactory } from "./bridge.ts";
import { Call, CallSetupError } from "./call/call.ts";
import type { MediaNetwork } from "./call/peer-config.ts";
import type { RelayConfig } from "./config.ts";
import type { Logger } from "./log.ts";
import { EncoderGovernor } from "./media/encoder-governor.ts";
import { Pacer } from "./media/pacer.ts";
import { RelayMetrics } from "./metrics.ts";

/** The default bridge until inference is plugged in: audio in is dropped, nothing comes out. */
export const discardingBridge: CallBridgeFactory = (): CallBridge => ({
  onUplinkFrame() {},
  onClientMessage() {},
  onChannelOpen() {},
  onPlayoutStarted() {},
  onPlayoutStopped() {},
  close() {},
});

/** Why the relay did not take or change a call; the HTTP API turns each into a status. */
export class CallRefused extends Error {
  readonly code:
    | "relay_draining"
    | "relay_at_capacity"
    | "call_exists"
    | "call_not_found"
    | "invalid_offer"
    | "invalid_sdpfrag";
  constructor(code: CallRefused["code"], message: string) {
    super(message);
    this.code = code;
  }
}

export interface RelayOptions {
  config: RelayConfig;
  log: Logger;
  bridgeFactory?: CallBridgeFactory;
  /** The process's shared UDP port (RELAY_UDP_PORT); without it each call binds its own. */
  sharedPort?: MediaNetwork["sharedPort"];
  /** ICE-TCP (RELAY_TCP_PORT); without it answers carry no TCP candidate. */
  iceTcp?: MediaNetwork["iceTcp"];
}

export interface RelayEvents {
  /** Something the edge should hear about a call: connected, first audio, stats, ended. */
  callEvent: [event: RelayCallEvent];
  /** The relay stopped taking calls (drain or close). */
  draining: [];
}

export class Relay extends EventEmitter<RelayEvents> {
  /**
   * New at every start and sent in each heartbeat; the edge puts it in tickets, so a ticket
   * issued before a restart is refused after it (the ticket nonces this process kept are gone).
   */
  readonly bootId = randomToken(12);
  readonly metrics: RelayMetrics;
  readonly pacer: Pacer;
  readonly encoderGovernor: EncoderGovernor;
  readonly calls = new Map<string, Call>();
  readonly #config: RelayConfig;
  readonly #log: Logger;
  readonly #bridgeFactory: CallBridgeFactory;
  readonly #sharedPort: MediaNetwork["sharedPort"];
  readonly #iceTcp: MediaNetwork["iceTcp"];
  #draining = false;
  #statsTimer: NodeJS.Timeout | undefined;
  #drainTimer: NodeJS.Timeout | undefined;
  #drainWaiters = new Set<() => void>();
  #closing: Promise<void> | undefined;
  /** Calls being set up (counted against capacity before they are in `calls`). */
  #pending = 0;

  constructor(options: RelayOptions) {
    super();
    this.#config = options.config;
    this.#log = options.log;
    this.metrics = new RelayMetrics({ maxAgeMs: this.#config.metrics.maxAgeSeconds * 1000 });
    this.#bridgeFactory = options.bridgeFactory ?? discardingBridge;
    this.#sharedPort = options.sharedPort;
    this.#iceTcp = options.iceTcp;
    const complexity = this.#config.opusComplexity;
    this.encoderGovernor = new EncoderGovernor({
      ...(complexity === "auto" ? {} : { ladder: [complexity] }),
      onChange: (level) => {
        this.metrics.opusComplexity.set(level);
        this.#log.warn({ complexity: level, calls: this.calls.size }, "downlink Opus complexity changed");
      },
    });
    this.metrics.opusComplexity.set(this.encoderGovernor.complexity);
    this.pacer = new Pacer({
      onTickLateness: (ms) => {
        if (ms > 20) this.metrics.lateFrames.inc();
      },
    });
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Starts the shared timers: per-call stats and the complexity governor. */
  start(): void {
    this.#statsTimer ??= setInterval(() => this.#reportStats(), this.#config.statsSeconds * 1000);
    this.encoderGovernor.start();
  }

  heartbeat(): Heartbeat {
    const c = this.#config;
    return {
      relay_id: c.relayId,
      boot_id: this.bootId,
      region: c.region,
      lat: c.lat,
      lon: c.lon,
      public_url: c.publicUrl,
      capacity: c.capacity,
      active_calls: this.calls.size,
      draining: this.#draining,
      interval_seconds: c.heartbeatSeconds,
      ...(this.calls.size <= MAX_HEARTBEAT_CALL_IDS ? { call_ids: [...this.calls.keys()] } : {}),
    };
  }

  /** Throws CallRefused unless a new call could be taken now. Cheap: checked before a ticket is. */
  checkAdmission(): void {
    if (this.#draining)
      throw new CallRefused("relay_draining", "The relay is draining and takes no new calls.");
    if (this.calls.size + this.#pending >= this.#config.capacity) {
      throw new CallRefused(
        "relay_at_capacity",
        `The relay is at capacity (${this.#config.capacity} calls).`,
      );
    }
  }

  /**
   * Sets up a call from the client's offer and returns the answer SDP. `deadlineMs` (epoch ms,
   * from the ticket) is when the call ends with max_duration whatever the edge says or can say.
   */
  async createCall(
    callId: string,
    session: SessionConfig,
    offerSdp: string,
    options: { deadlineMs?: number; resume?: ResumeOf } = {},
  ): Promise<string> {
    if (this.calls.has(callId)) throw new CallRefused("call_exists", "A call with this id exists.");
    this.checkAdmission();
    this.#pending++;
    const call = new Call({
      callId,
      session,
      network: {
        mediaIp: this.#config.mediaIp,
        publicIp: this.#config.publicIp,
        udpPorts: this.#config.udpPorts,
        sharedPort: this.#sharedPort,
        iceTcp: this.#iceTcp,
        iceLite: this.#config.iceLite,
      },
      bridgeFactory: this.#bridgeFactory,
      pacer: this.pacer,
      encoderGovernor: this.encoderGovernor,
      networkResilience: this.#config.networkResilience,
      redDistance: this.#config.redDistance,
      metrics: this.metrics,
      log: this.#log,
      connectTimeoutMs: this.#config.connectTimeoutSeconds * 1000,
      ...(options.deadlineMs === undefined ? {} : { deadlineMs: options.deadlineMs }),
      ...(options.resume ? { resume: options.resume } : {}),
    });
    let answerSdp: string;
    try {
      answerSdp = await call.answer(offerSdp);
    } catch (error) {
      await call.end("relay_error");
      if (error instanceof CallSetupError) throw new CallRefused("invalid_offer", error.message);
      throw error;
    } finally {
      this.#pending--;
    }
    this.#adopt(call);
    return answerSdp;
  }

  /** ICE restart of a live call (RFC 8840 sdpfrag in and out). */
  async restartIce(callId: string, fragment: string): Promise<string> {
    const call = this.#call(callId);
    try {
      return await call.restartIce(fragment);
    } catch (error) {
      if (error instanceof CallSetupError) throw new CallRefused("invalid_sdpfrag", error.message);
      throw error;
    }
  }

  /** Ends a call (the client or the app hung up). */
  endCall(callId: string, reason: EndReason = "hangup"): Promise<void> {
    return this.#call(callId).end(reason);
  }

  /**
   * Stops taking calls, tells listeners, lets calls finish until the deadline, then ends the
   * rest with `relay_draining`. Resolves when no call is left.
   */
  drain(deadlineSeconds = this.#config.drainSeconds): Promise<void> {
    if (!this.#draining) {
      this.#draining = true;
      this.#log.info({ active_calls: this.calls.size, deadline_s: deadlineSeconds }, "draining");
      this.emit("draining");
    }
    return new Promise((resolve) => {
      const check = () => {
        if (this.calls.size > 0 || this.#pending > 0) return false;
        if (this.#drainTimer) clearTimeout(this.#drainTimer);
        this.#drainTimer = undefined;
        resolve();
        return true;
      };
      if (check()) return;
      this.#drainTimer ??= setTimeout(() => {
        this.#log.info({ active_calls: this.calls.size }, "drain deadline: ending calls");
        for (const call of this.calls.values())
          void call.end("relay_draining", "The relay is shutting down.");
      }, deadlineSeconds * 1000);
      const onEnded = () => {
        if (check()) this.#drainWaiters.delete(onEnded);
      };
      this.#drainWaiters.add(onEnded);
    });
  }

  /** Ends every call and stops the shared timers. Safe to call twice. */
  close(reason: EndReason = "relay_draining"): Promise<void> {
    this.#closing ??= (async () => {
      if (!this.#draining) {
        this.#draining = true;
        this.emit("draining");
      }
      if (this.#statsTimer) clearInterval(this.#statsTimer);
      if (this.#drainTimer) clearTimeout(this.#drainTimer);
      await Promise.all([...this.calls.values()].map((call) => call.end(reason)));
      this.pacer.stop();
      this.encoderGovernor.stop();
    })();
    return this.#closing;
  }

  #call(callId: string): Call {
    const call = this.calls.get(callId);
    if (!call) throw new CallRefused("call_not_found", "No such call on this relay.");
    return call;
  }

  #adopt(call: Call): void {
    this.calls.set(call.id, call);
    this.metrics.callsTotal.inc();
    this.metrics.activeCalls.set(this.calls.size);
    const base = () => ({ call_id: call.id, relay_id: this.#config.relayId, at: Date.now() });
    call.on("connected", () =>
      this.emit("callEvent", {
        ...base(),
        type: "connected",
        ...(call.connectedAt === undefined
          ? {}
          : { connect_ms: Math.round(call.connectedAt - call.createdAt) }),
      }),
    );
    call.on("log", (items) => this.emit("callEvent", { ...base(), type: "log", items }));
    call.on("session", (session) => this.emit("callEvent", { ...base(), type: "session", session }));
    call.on("first_audio", () => this.emit("callEvent", { ...base(), type: "first_audio" }));
    call.once("ended", (reason, message, usage) => {
      this.calls.delete(call.id);
      this.#countUsage(usage);
      this.metrics.activeCalls.set(this.calls.size);
      this.emit("callEvent", {
        ...base(),
        type: "ended",
        reason,
        ...(message ? { message: message.slice(0, 512) } : {}),
        usage,
      });
      for (const waiter of [...this.#drainWaiters]) waiter();
    });
  }

  /** What an ended call used, into the per-region counters an operator bills and budgets by. */
  #countUsage(usage: CallUsage): void {
    const region = this.#config.region;
    const m = this.metrics;
    m.callAudioSeconds.inc({ region, direction: "in" }, usage.audio_in_seconds);
    m.callAudioSeconds.inc({ region, direction: "out" }, usage.audio_out_seconds);
    m.modelTurns.inc({ region }, usage.turns);
    for (const kind of ["input", "output"] as const) {
      const tokens = usage.model[`${kind}_tokens`];
      if (typeof tokens === "number") m.modelTokens.inc({ region, kind }, tokens);
    }
  }

  #reportStats(): void {
    let jitter = 0;
    let n = 0;
    for (const call of this.calls.values()) {
      if (call.state !== "connected") continue;
      const stats: CallStats = call.stats();
      call.shareStats(stats);
      jitter += stats.jitter_ms;
      if (stats.quality) {
        this.metrics.uplinkLoss.observe(stats.quality.uplink.loss_percent / 100);
        this.metrics.jitterBufferDelay.observe(stats.quality.uplink.jitter_buffer_ms / 1000);
      }
      n++;
      this.emit("callEvent", {
        call_id: call.id,
        relay_id: this.#config.relayId,
        at: Date.now(),
        type: "stats",
        stats,
      });
    }
    this.metrics.jitter.set(n ? jitter / n : 0);
  }
}
