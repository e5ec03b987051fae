// Inference-bridge metrics, in prom-client's default registry (one set per process; the relay's
// /metrics merges the default registry). Updated on the media path by counter increments only.
import { Counter, Histogram, register } from "prom-client";

function once<T>(name: string, make: () => T): T {
  return (register.getSingleMetric(name) as T | undefined) ?? make();
}

/** Every audio frame or delta the bridge did not deliver, by why. Nothing is dropped silently. */
export const droppedAudio = once(
  "earshot_relay_inference_audio_dropped_total",
  () =>
    new Counter({
      name: "earshot_relay_inference_audio_dropped_total",
      help: "Audio the inference bridge dropped: uplink frames or downlink deltas, by reason",
      labelNames: ["direction", "reason"] as const,
    }),
);

export const upstreamFailures = once(
  "earshot_relay_inference_failures_total",
  () =>
    new Counter({
      name: "earshot_relay_inference_failures_total",
      help: "Upstream connection failures, by class",
      labelNames: ["class"] as const,
    }),
);

export const bargeIns = once(
  "earshot_relay_barge_ins_total",
  () =>
    new Counter({
      name: "earshot_relay_barge_ins_total",
      help: "Barge-ins, by trigger",
      labelNames: ["trigger"] as const,
    }),
);

export const rejectedClientEvents = once(
  "earshot_relay_client_events_rejected_total",
  () =>
    new Counter({
      name: "earshot_relay_client_events_rejected_total",
      help: "Data-channel client events rejected, by code (answered with an error event while the error budget lasts)",
      labelNames: ["code"] as const,
    }),
);

export const unansweredRejections = once(
  "earshot_relay_client_error_replies_suppressed_total",
  () =>
    new Counter({
      name: "earshot_relay_client_error_replies_suppressed_total",
      help: "Rejected client events not answered because the call's error-reply budget was spent",
    }),
);

export const vadChunkSeconds = once(
  "earshot_relay_vad_chunk_seconds",
  () =>
    new Histogram({
      name: "earshot_relay_vad_chunk_seconds",
      help: "Silero VAD inference time per 32 ms chunk",
      buckets: [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01],
    }),
);
