// Token counts for `response.done`'s `usage` and for max_output_tokens, estimated with OpenAI's
// published rates (the built-in agent has no tokenizer): text about 4 characters a token, user
// audio 1 token per 100 ms, assistant audio 1 per 50 ms.
import { samplesToMs } from "../relay/media/audio-format.ts";

export const CHARS_PER_TOKEN = 4;
const INPUT_AUDIO_MS_PER_TOKEN = 100;
const OUTPUT_AUDIO_MS_PER_TOKEN = 50;

export function textTokens(text: string): number {
  return Math.ceil(text.length / CHARS_PER_TOKEN);
}

export function audioOutputTokens(samples: number): number {
  return Math.ceil(samplesToMs(samples) / OUTPUT_AUDIO_MS_PER_TOKEN);
}

/** OpenAI's `usage` object for a response. */
export function usage(counts: {
  instructions: string;
  userAudioSamples: number;
  outputText: string;
  outputAudioSamples: number;
}) {
  const textIn = textTokens(counts.instructions);
  const audioIn = Math.ceil(samplesToMs(counts.userAudioSamples) / INPUT_AUDIO_MS_PER_TOKEN);
  const textOut = textTokens(counts.outputText);
  const audioOut = audioOutputTokens(counts.outputAudioSamples);
  const input = textIn + audioIn;
  const output = textOut + audioOut;
  return {
    total_tokens: input + output,
    input_tokens: input,
    output_tokens: output,
    input_token_details: {
      text_tokens: textIn,
      audio_tokens: audioIn,
      image_tokens: 0,
      cached_tokens: 0,
      cached_tokens_details: { text_tokens: 0, audio_tokens: 0, image_tokens: 0 },
    },
    output_token_details: { text_tokens: textOut, audio_tokens: audioOut },
  };
}
