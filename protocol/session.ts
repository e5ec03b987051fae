// The Realtime session config a client secret is minted with and a call runs under. It follows
// OpenAI's GA `session` object: known fields are checked, unknown ones pass through to the
// model untouched, and the whole is size-capped by the edge before it gets here.
import { z } from "zod";

export const AudioFormat = z.looseObject({
  type: z.enum(["audio/pcm", "audio/pcmu", "audio/pcma"]),
  rate: z.number().int().optional(),
});

export const TurnDetection = z
  .looseObject({
    type: z.enum(["server_vad", "semantic_vad"]),
    threshold: z.number().min(0).max(1).optional(),
    prefix_padding_ms: z.number().int().min(0).max(5000).optional(),
    silence_duration_ms: z.number().int().min(0).max(10000).optional(),
    create_response: z.boolean().optional(),
    interrupt_response: z.boolean().optional(),
  })
  .nullable();

export const SessionConfig = z.looseObject({
  type: z.enum(["realtime", "transcription"]).optional(),
  model: z.string().min(1).max(128).optional(),
  instructions: z.string().max(32_768).optional(),
  output_modalities: z
    .array(z.enum(["audio", "text"]))
    .max(2)
    .optional(),
  max_output_tokens: z.union([z.number().int().positive(), z.literal("inf")]).optional(),
  audio: z
    .looseObject({
      input: z
        .looseObject({
          format: AudioFormat.optional(),
          turn_detection: TurnDetection.optional(),
        })
        .optional(),
      output: z
        .looseObject({
          format: AudioFormat.optional(),
          voice: z.string().max(64).optional(),
          speed: z.number().min(0.25).max(4).optional(),
        })
        .optional(),
    })
    .optional(),
});
export type SessionConfig = z.infer<typeof SessionConfig>;

export const DEFAULT_MODEL = "gpt-realtime";
