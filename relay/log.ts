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
          "credential",
          "*.credential",
          "apiKey",
          "*.apiKey",
          "inference.apiKey",
          "*.inference.apiKey",
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

/**
 * One log line per problem per call, not per packet: the first occurrence is logged at once,
 * and a problem that repeated is logged again with its count when the call ends (flush()).
 */
export class ProblemLog {
  readonly #log: Logger;
  readonly #counts = new Map<string, number>();

  constructor(log: Logger) {
    this.#log = log;
  }

  warn(problem: string, fields: Record<string, unknown> = {}): void {
    const count = (this.#counts.get(problem) ?? 0) + 1;
    this.#counts.set(problem, count);
    if (count === 1) this.#log.warn(fields, problem);
  }

  count(problem: string): number {
    return this.#counts.get(problem) ?? 0;
  }

  flush(): void {
    for (const [problem, count] of this.#counts) {
      if (count > 1) this.#log.warn({ count }, `${problem} (repeated)`);
    }
    this.#counts.clear();
  }
}
