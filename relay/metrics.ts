// Prometheus metrics for one relay: one registry per relay (so in-process tests can run several),
// handed down to each call and its bridge. Media-path updates are counter increments and
// histogram observations only. Rendering the exposition text costs a few ms of the one thread
// that also paces every call's audio, so scrapes share a cached rendering (scrape()).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";

/** The event-loop-lag gauge covers a fixed window, so how often anyone scrapes does not change it. */
export const LOOP_LAG_WINDOW_MS = 10_000;

// Per-frame work is tens of µs normally; the budget is 1 ms p99. Fine buckets below 1 ms so
// `npm run bench` can read p50/p99 from them to within a few µs.
const WORK_BUCKETS = [
  0.00001, 0.00002, 0.00003, 0.00004, 0.00005, 0.00006, 0.00008, 0.0001, 0.00012, 0.00015, 0.0002, 0.00025,
  0.0003, 0.0004, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05,
];

const LOSS_BUCKETS = [0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1];
const DELAY_BUCKETS = [0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1];

export class RelayMetrics {
  readonly registry = new Registry();
  readonly activeCalls = new Gauge({
    name: "earshot_relay_active_calls",
    help: "Calls in progress",
    registers: [this.registry],
  });
  readonly callsTotal = new Counter({
    name: "earshot_relay_calls_total",
    help: "Calls accepted",
    registers: [this.registry],
  });
  readonly callsEnded = new Counter({
    name: "earshot_relay_calls_ended_total",
    help: "Calls ended, by reason",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly callsRefused = new Counter({
    name: "earshot_relay_calls_refused_total",
    help: "Call requests refused, by error code",
    labelNames: ["code"] as const,
    registers: [this.registry],
  });
  readonly httpConnectionsShed = new Counter({
    name: "earshot_relay_http_connections_shed_total",
    help: "HTTP API connections closed at RELAY_HTTP_MAX_CONNECTIONS (the oldest idle one, or the newcomer)",
    registers: [this.registry],
  });
  readonly framesUplink = new Counter({
    name: "earshot_relay_uplink_frames_total",
    help: "20 ms frames decoded from clients",
    registers: [this.registry],
  });
  readonly framesDownlink = new Counter({
    name: "earshot_relay_downlink_frames_total",
    help: "20 ms frames sent to clients",
    registers: [this.registry],
  });
  readonly packetsLost = new Counter({
    name: "earshot_relay_uplink_packets_lost_total",
    help: "Uplink RTP packets declared lost",
    registers: [this.registry],
  });
  readonly packetsLate = new Counter({
    name: "earshot_relay_uplink_packets_late_total",
    help: "Uplink RTP packets that arrived after their slot",
    registers: [this.registry],
  });
  readonly uplinkFecRecovered = new Counter({
    name: "earshot_relay_uplink_fec_recovered_frames_total",
    help: "Lost uplink frames rebuilt from the next packet's Opus in-band FEC",
    registers: [this.registry],
  });
  readonly uplinkRedRecovered = new Counter({
    name: "earshot_relay_uplink_red_recovered_frames_total",
    help: "Missing uplink frames taken from a later packet's RFC 2198 redundant block",
    registers: [this.registry],
  });
  readonly uplinkRedPackets = new Counter({
    name: "earshot_relay_uplink_red_packets_total",
    help: "Uplink RTP packets received as audio/red (RFC 2198)",
    registers: [this.registry],
  });
  readonly uplinkConcealed = new Counter({
    name: "earshot_relay_uplink_concealed_frames_total",
    help: "Lost uplink frames synthesised by packet loss concealment",
    registers: [this.registry],
  });
  /** Per call at each stats report (RELAY_STATS_SECONDS): the share of the call's uplink lost so far. */
  readonly uplinkLoss = new Histogram({
    name: "earshot_relay_call_uplink_loss_ratio",
    help: "Per call, at each stats report: uplink packets lost or too late, as a share of those expected",
    buckets: LOSS_BUCKETS,
    registers: [this.registry],
  });
  readonly jitterBufferDelay = new Histogram({
    name: "earshot_relay_call_jitter_buffer_delay_seconds",
    help: "Per call, at each stats report: mean time an uplink packet waited in the jitter buffer",
    buckets: DELAY_BUCKETS,
    registers: [this.registry],
  });
  /** Per RTCP receiver report from a client (about one a second per call). */
  readonly downlinkLoss = new Histogram({
    name: "earshot_relay_downlink_loss_ratio",
    help: "Downlink loss over each client RTCP receiver report's interval",
    buckets: LOSS_BUCKETS,
    registers: [this.registry],
  });
  readonly roundTrip = new Histogram({
    name: "earshot_relay_rtt_seconds",
    help: "Media round-trip time from each client RTCP receiver report",
    buckets: DELAY_BUCKETS,
    registers: [this.registry],
  });
  readonly lateFrames = new Counter({
    name: "earshot_relay_pacer_late_ticks_total",
    help: "Pacer ticks that ran more than a frame late",
    registers: [this.registry],
  });
  readonly droppedMessages = new Counter({
    name: "earshot_relay_datachannel_dropped_total",
    help: "Data channel messages dropped (too large or not text)",
    registers: [this.registry],
  });
  readonly refusedControlMessages = new Counter({
    name: "earshot_relay_datachannel_control_refused_total",
    help: "Data channel control messages dropped: DCEP for no channel, unknown payload protocol ids, malformed DCEP",
    registers: [this.registry],
  });
  readonly unsentEvents = new Counter({
    name: "earshot_relay_datachannel_unsent_events_total",
    help: "Server events not sent to the client: too_large (over its a=max-message-size) or failed",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly callAudioSeconds = new Counter({
    name: "earshot_relay_call_audio_seconds_total",
    help: "Audio of ended calls, in seconds, by region and direction (in: from callers)",
    labelNames: ["region", "direction"] as const,
    registers: [this.registry],
  });
  readonly modelTurns = new Counter({
    name: "earshot_relay_model_turns_total",
    help: "Model responses (response.done) in ended calls, by region",
    labelNames: ["region"] as const,
    registers: [this.registry],
  });
  readonly modelTokens = new Counter({
    name: "earshot_relay_model_tokens_total",
    help: "Model tokens in ended calls (their response.done usage), by region and kind",
    labelNames: ["region", "kind"] as const,
    registers: [this.registry],
  });
  readonly sidebandsAttached = new Counter({
    name: "earshot_relay_sidebands_attached_total",
    help: "Sideband WebSockets attached to calls",
    registers: [this.registry],
  });
  readonly sidebandsRefused = new Counter({
    name: "earshot_relay_sidebands_refused_total",
    help: "Sideband upgrades refused, by error code",
    labelNames: ["code"] as const,
    registers: [this.registry],
  });
  readonly sidebandsClosed = new Counter({
    name: "earshot_relay_sidebands_closed_total",
    help: "Sideband WebSockets closed, by close code",
    labelNames: ["code"] as const,
    registers: [this.registry],
  });
  readonly sidebandsTooSlow = new Counter({
    name: "earshot_relay_sidebands_too_slow_total",
    help: "Sidebands closed for leaving too many bytes of events unread",
    registers: [this.registry],
  });
  readonly sidebandRejectedMessages = new Counter({
    name: "earshot_relay_sideband_rejected_messages_total",
    help: "Sideband messages refused before the bridge saw them, by code",
    labelNames: ["code"] as const,
    registers: [this.registry],
  });
  readonly opusComplexity = new Gauge({
    name: "earshot_relay_opus_complexity",
    help: "Downlink Opus encoder complexity now (RELAY_OPUS_COMPLEXITY=auto lowers it under load)",
    registers: [this.registry],
  });
  readonly jitter = new Gauge({
    name: "earshot_relay_uplink_jitter_ms",
    help: "Mean uplink interarrival jitter over live calls, ms",
    registers: [this.registry],
  });
  readonly uplinkWork = new Histogram({
    name: "earshot_relay_uplink_frame_work_seconds",
    help: "Work per uplink frame (decode, conceal, hand-off)",
    buckets: WORK_BUCKETS,
    registers: [this.registry],
  });
  readonly downlinkWork = new Histogram({
    name: "earshot_relay_downlink_frame_work_seconds",
    help: "Work per downlink frame (encode, packetise, send)",
    buckets: WORK_BUCKETS,
    registers: [this.registry],
  });
  /** Every audio frame or delta the inference bridge did not deliver, by why. Nothing is dropped silently. */
  readonly droppedAudio = new Counter({
    name: "earshot_relay_inference_audio_dropped_total",
    help: "Audio the inference bridge dropped: uplink frames or downlink deltas, by reason",
    labelNames: ["direction", "reason"] as const,
    registers: [this.registry],
  });
  readonly upstreamFailures = new Counter({
    name: "earshot_relay_inference_failures_total",
    help: "Upstream connection failures, by class",
    labelNames: ["class"] as const,
    registers: [this.registry],
  });
  readonly bargeInHolds = new Counter({
    name: "earshot_relay_barge_in_holds_total",
    help: "Replies paused at the user's speech onset, by outcome: interrupted (it was a barge-in), resumed (a backchannel or noise), superseded (cleared otherwise)",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly echoGuardFrames = new Counter({
    name: "earshot_relay_echo_guard_frames_total",
    help: "Uplink frames the echo guard judged, by decision: echo, user, clean, uncorrelated, unmeasured_echo, unmeasured_user, silent, no_reference",
    labelNames: ["decision"] as const,
    registers: [this.registry],
  });
  readonly echoSuppressedFrames = new Counter({
    name: "earshot_relay_echo_suppressed_frames_total",
    help: "Uplink frames sent upstream as silence because they were only the assistant's echo",
    registers: [this.registry],
  });
  readonly echoDelayBoundExceeded = new Counter({
    name: "earshot_relay_echo_delay_bound_exceeded_total",
    help: "Calls whose echo came back later than the round trip plus the echo path allowance (the echo guard then considers every delay up to 800 ms)",
    registers: [this.registry],
  });
  readonly bargeIns = new Counter({
    name: "earshot_relay_barge_ins_total",
    help: "Barge-ins, by trigger",
    labelNames: ["trigger"] as const,
    registers: [this.registry],
  });
  readonly rejectedClientEvents = new Counter({
    name: "earshot_relay_client_events_rejected_total",
    help: "Data-channel client events rejected, by code (answered with an error event while the error budget lasts)",
    labelNames: ["code"] as const,
    registers: [this.registry],
  });
  readonly unansweredRejections = new Counter({
    name: "earshot_relay_client_error_replies_suppressed_total",
    help: "Rejected client events not answered because the call's error-reply budget was spent",
    registers: [this.registry],
  });
  readonly vadChunkSeconds = new Histogram({
    name: "earshot_relay_vad_chunk_seconds",
    help: "Silero VAD inference time per 32 ms chunk",
    buckets: [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01],
    registers: [this.registry],
  });
  readonly loopLag = new Gauge({
    name: "earshot_relay_event_loop_lag_p99_seconds",
    help: `Event loop delay p99 over the last complete ${LOOP_LAG_WINDOW_MS / 1000} s window`,
    registers: [this.registry],
  });
  readonly #loop = monitorEventLoopDelay({ resolution: 10 });
  readonly #loopWindow: NodeJS.Timeout;
  readonly #maxAgeMs: number;
  #text: Buffer | undefined;
  #renderedAt = 0;
  #rendering: Promise<Buffer> | undefined;

  /** `maxAgeMs`: a scrape this soon after the last rendering gets the same text (RELAY_METRICS_MAX_AGE_SECONDS). */
  /** One client receiver report on a downlink: its loss, and the round trip werift derived (ms). */
  observeDownlinkReport(fractionLost: number, rttMs: number | undefined): void {
    this.downlinkLoss.observe(fractionLost);
    if (rttMs !== undefined) this.roundTrip.observe(rttMs / 1000);
  }

  constructor(options: { maxAgeMs?: number } = {}) {
    this.#maxAgeMs = options.maxAgeMs ?? 0;
    collectDefaultMetrics({ register: this.registry, prefix: "earshot_relay_" });
    this.#loop.enable();
    this.#loopWindow = setInterval(() => {
      this.loopLag.set(this.#loop.percentile(99) / 1e9);
      this.#loop.reset();
    }, LOOP_LAG_WINDOW_MS).unref();
  }

  /**
   * The exposition text, rendered at most once per `maxAgeMs` however often it is asked for:
   * a flood of scrapes costs a write of the same bytes each, not a rendering each. Concurrent
   * scrapes share one.
   */
  scrape(): Promise<Buffer> {
    if (this.#text !== undefined && performance.now() - this.#renderedAt < this.#maxAgeMs)
      return Promise.resolve(this.#text);
    return (this.#rendering ??= this.registry
      .metrics()
      .then((rendered) => {
        const text = Buffer.from(rendered);
        this.#text = text;
        this.#renderedAt = performance.now();
        return text;
      })
      .finally(() => (this.#rendering = undefined)));
  }

  close(): void {
    clearInterval(this.#loopWindow);
    this.#loop.disable();
    this.registry.clear();
  }
}
