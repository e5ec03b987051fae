// `npm run agent`: the built-in agent on ws://localhost:8791 (DESIGN.md, "Configuration and ports").
import { pino } from "pino";
import { AgentServer } from "./agent-server.ts";
import { agentConfigFromEnv } from "./config.ts";

let config;
try {
  config = agentConfigFromEnv(process.env);
} catch (error) {
  console.error(`earshot agent: ${(error as Error).message}`);
  process.exit(1);
}
const log = pino({ base: { service: "earshot-agent" } });
const agent = await AgentServer.start({ ...config, log });
log.info({ reply: config.reply, url: `ws://${config.host}:${agent.port}/v1/realtime` }, "agent listening");
const stop = () => void agent.close().then(() => process.exit(0));
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
