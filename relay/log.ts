// Structured JSON logs (pino). Secrets are redacted by path so a careless field cannot leak
// them; the media path never logs per packet.
import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "earshot-relay" },
      redact: {
        paths: [
          "relaySecret",
          "*.relaySecret",
          "inferenceApiKey",
          "*.inferenceApiKey",
          "ticket",
          "*.ticket",
          "signature",
          "headers.authorization",
          "headers['earshot-ticket']",
          "headers['earshot-signature']",
        ],
        censor: "[redacted]",
      },
    },
    destination,
  );
}
