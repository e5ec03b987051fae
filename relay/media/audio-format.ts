// The relay's one internal audio format: what the Realtime protocol speaks (`audio/pcm`,
// 24 kHz, 16-bit, mono) in 20 ms frames, the Opus packet duration on the wire.
export const PCM_SAMPLE_RATE = 24_000;
export const FRAME_MS = 20;
export const FRAME_SAMPLES = (PCM_SAMPLE_RATE * FRAME_MS) / 1000; // 480
/** Opus RTP always counts time at 48 kHz, whatever rate the codec runs at (RFC 7587). */
export const RTP_CLOCK_RATE = 48_000;
export const RTP_TIMESTAMP_STEP = (RTP_CLOCK_RATE * FRAME_MS) / 1000; // 960

export function samplesToMs(samples: number): number {
  return (samples * 1000) / PCM_SAMPLE_RATE;
}
