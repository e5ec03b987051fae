// Production wiring: the relay's CallBridgeFactory from its environment, in one call.
//   const bridgeFactory = await createInferenceBridgeFactory(inferenceConfigFromEnv(process.env));
// Loads Silero once per process (when RELAY_VAD=silero); if onnxruntime cannot load it, the
// relay falls back to the energy VAD and says so, rather than running without barge-in.
import type { CallBridgeFactory } from "../bridge.ts";
import { SileroModel } from "../barge-in/silero-vad.ts";
import { relayUplinkMonitor } from "../barge-in/uplink-monitor.ts";
import { inferenceBridgeFactory } from "./inference-bridge.ts";
import type { InferenceConfig } from "./inference-config.ts";

export async function createInferenceBridgeFactory(
  config: InferenceConfig,
  log: (message: string) => void = (m) => console.warn(m),
): Promise<CallBridgeFactory> {
  let silero: SileroModel | null = null;
  if (config.relayVad === "silero") {
    try {
      silero = await SileroModel.load();
    } catch (error) {
      log(`Silero VAD unavailable (${(error as Error).message}); using the energy VAD for barge-in`);
    }
  }
  const monitor =
    config.relayVad === "off" && !config.echoSuppression
      ? undefined
      : relayUplinkMonitor({
          silero: config.relayVad === "off" ? null : silero,
          echoSuppression: config.echoSuppression,
          vad: config.relayVad !== "off",
        });
  return inferenceBridgeFactory({ config, uplinkMonitor: monitor, log });
}
