// Starts a relay: `npm run relay` (node relay/main.ts). Configuration from the environment
// (relay/config.ts). SIGTERM/SIGINT drains (no new calls, calls finish up to
// RELAY_DRAIN_SECONDS, then end with relay_draining); a second signal exits at once.
import { ConfigError, loadConfig } from "./config.ts";
import { createLogger } from "./log.ts";
import { RelayServer } from "./server.ts";

let config;
try {
  config = loadConfig();
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(error.message);
    process.exit(78); // EX_CONFIG
  }
  throw error;
}

const log = createLogger(config.logLevel);
const server = new RelayServer({ config, log });

process.on("unhandledRejection", (reason) => log.error({ err: reason }, "unhandled rejection"));

let signals = 0;
const shutdown = (signal: string) => {
  if (++signals > 1) {
    log.warn({ signal }, "second signal: exiting now");
    process.exit(1);
  }
  void (async () => {
    await server.drain();
    await server.close();
    log.info("drained; exiting");
    process.exit(0);
  })();
};
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));

try {
  await server.listen();
} catch (error) {
  log.fatal({ err: error }, "relay failed to start");
  process.exit(1);
}
