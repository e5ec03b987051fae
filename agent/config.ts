// The built-in agent's configuration, resolved once at start from the environment.
import { z } from "zod";

export const ReplyMode = z.enum(["speak", "echo"]);
/**
 * `speak`: a sentence spoken by eSpeak, obviously the agent answering (the default for a new user).
 * `echo`: the user's own last utterance played back (tests: the reply's pitch is the user's).
 */
export type ReplyMode = z.infer<typeof ReplyMode>;

export interface AgentConfig {
  host: string;
  port: number;
  reply: ReplyMode;
  /** How much faster than real time reply audio is streamed (OpenAI streams faster too). */
  speed: number;
}

const AgentEnv = z.object({
  AGENT_HOST: z.string().min(1).default("127.0.0.1"),
  AGENT_PORT: z.coerce.number().int().min(0).max(65535).default(8791),
  AGENT_REPLY: ReplyMode.default("speak"),
  AGENT_SPEED: z.coerce.number().min(1).max(1000).default(4),
});

export function agentConfigFromEnv(env: Record<string, string | undefined>): AgentConfig {
  const result = AgentEnv.safeParse(env);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new Error(`Invalid ${issue.path.join(".")}: ${issue.message}`);
  }
  const e = result.data;
  return { host: e.AGENT_HOST, port: e.AGENT_PORT, reply: e.AGENT_REPLY, speed: e.AGENT_SPEED };
}
