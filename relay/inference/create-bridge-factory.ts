// Production wiring: each call's bridge to the Realtime upstream, with the relay's own barge-in
// VAD and echo suppression as configured. Loads Silero once per process (RELAY_VAD=silero); if
// onnxruntime cannot load it, the relay falls back to the energy VAD and says so, rather than
// running without barge-in.
import { SileroModel } from "../barge-in/silero-vad.ts";
import { relayUplinkMonitor } from "../barge-in/uplink-monitor.ts";
import type { CallBridgeFactory } from "../bridge.ts";
import type { RelayConfig } from "../config.ts";
import type { Logger } from "../log.ts";
import { inferenceBridgeFactory } from "./inference-bridge.ts";

export async function createInferenceBridgeFactory(
  config: Pick<RelayConfig, "inference" | "relayVad" | "echoSuppression" | "bargeInMinSpeechMs">,
  log: Logger,
): Promise<CallBridgeFactory> {
  let silero: SileroModel | null = null;
  if (config.relayVad === "silero") {
    try {
      silero = await SileroModel.load();
    } catch (error) {
      log.warn({ err: error }, "Silero VAD unavailable; using the energy VAD for barge-in");
    }
  }
  const monitor =
    config.relayVad === "off" && !config.echoSuppression
      ? undefined
      : relayUplinkMonitor({
          silero: config.relayVad === "off" ? null : silero,
          echoSuppression: config.echoSuppression,
          vad: config.relayVad !== "off",
          minSpeechMs: config.bargeInMinSpeechMs,
        });
  return inferenceBridgeFactory({ config: config.inference, uplinkMonitor: monitor });
}
