// What the media pipelines need of a codec, apart from any one codec: the uplink decodes to
// 24 kHz PCM (with concealment and FEC), the downlink encodes 20 ms frames of it. Opus
// (opus-codec.ts) and G.711 (g711.ts) implement these; uplink.ts and downlink.ts use them.
import { PCM_SAMPLE_RATE } from "./audio-format.ts";

/** The longest frame a decoder may produce: 120 ms (Opus's longest packet) at 24 kHz. */
export const MAX_FRAME_SAMPLES = (PCM_SAMPLE_RATE * 120) / 1000;

/** What the uplink needs of a codec: decode straight to 24 kHz, conceal, recover via FEC. */
export interface UplinkDecoder {
  /** RTP clock rate of the negotiated codec (48 kHz for Opus, 8 kHz for G.711). */
  readonly clockRate: number;
  decode(payload: Uint8Array, out: Int16Array): number;
  conceal(out: Int16Array): number;
  /** Decodes the lost packet from FEC carried in the next one; 0 if the codec can't. */
  recover(next: Uint8Array, out: Int16Array): number;
}

/** What the downlink needs of a codec: encode one 20 ms frame of 24 kHz PCM. */
export interface DownlinkEncoder {
  /** RTP timestamp units per 20 ms frame (960 for Opus, 160 for G.711). */
  readonly timestampStep: number;
  encode(pcm: Int16Array, out: Uint8Array): number;
  /**
   * One encoded 20 ms frame that decodes to silence, built once: what the downlink sends every
   * few hundred ms while it has nothing to play. Without it the downlink is quiet when idle.
   */
  readonly silenceFrame?: Uint8Array;
}
