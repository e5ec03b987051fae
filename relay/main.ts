// Starts a relay: `npm run relay` (node relay/main.ts). Configuration from the environment
// (relay/config.ts). SIGTERM/SIGINT drains (no new calls, calls finish up to
// RELAY_DRAIN_SECONDS, then end with relay_draining); a second signal exits at once.
// With RELAY_PROCESSES > 1 this process only supervises that many relays (relay/supervisor.ts),
// each this same file run with its own id, ports and UDP slice.
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { limitBufferPool } from "./call/werift-fixes.ts";
import { createInferenceBridgeFactory } from "./inference/create-bridge-factory.ts";
import { createLogger } from "./log.ts";
import { serveRelay, type ServedRelay } from "./serve.ts";
import { loadConfigOrExit, superviseRelays } from "./supervisor.ts";
import { openSupervisorTcpFront } from "./transport/tcp-hand-off.ts";
import { asFirstPacket } from "./transport/udp-dispatcher.ts";

const config = loadConfigOrExit();

if (config.processes.length > 0) {
  const log = createLogger(config.logLevel).child({ component: "supervisor" });
  // ICE-TCP has one port for the host: the supervisor listens and hands connections on. Its
  // processes advertise the port it got (RELAY_TCP_PORT=0 lets the OS choose one).
  const iceTcp = await openSupervisorTcpFront(config, log);
  process.exit(
    await superviseRelays({
      config,
      log,
      script: fileURLToPath(import.meta.url),
      dispatcherScript: join(import.meta.dirname, "dispatcher-main.ts"),
      ...(iceTcp && {
        env: { ...process.env, RELAY_TCP_PORT: String(iceTcp.front.port) },
        connectHandOff: iceTcp.connect,
      }),
    }),
  );
}

limitBufferPool();
// Forked by the supervisor (an IPC channel to it): its lines say which relay they come from.
const supervised = process.channel !== undefined;
const rootLog = createLogger(config.logLevel);
const log = supervised ? rootLog.child({ relay_id: config.relayId }) : rootLog;

process.on("unhandledRejection", (reason) => log.error({ err: reason }, "unhandled rejection"));

let served: ServedRelay | undefined;
let signals = 0;
const shutdown = (signal: string) => {
  if (++signals > 1) {
    log.warn({ signal }, "second signal: exiting now");
    process.exit(1);
  }
  void (async () => {
    await served?.relay.drain();
    await served?.close();
    log.info("drained; exiting");
    process.exit(0);
  })();
};
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
// The supervisor is gone (killed outright): drain rather than hold the ports with no one to restart
// us. Listened for before anything is awaited, so a supervisor killed while we start is noticed.
if (supervised) process.once("disconnect", () => signals === 0 && shutdown("supervisor gone"));

// Each call's audio and events go to the Realtime upstream (INFERENCE_URL, else the built-in agent).
const bridgeFactory = await createInferenceBridgeFactory(config, log);

try {
  served = await serveRelay({ config, log, bridgeFactory });
} catch (error) {
  log.fatal({ err: error }, "relay failed to start");
  process.exit(1);
}
// The host's shared UDP port: the dispatcher's first packets of our flows, via the supervisor.
const udpMux = served.udpMux;
if (config.udpDispatched && udpMux) {
  process.on("message", (message) => {
    const packet = asFirstPacket(message);
    if (!packet) return;
    const { data } = packet;
    udpMux.deliver(Buffer.from(data.buffer, data.byteOffset, data.byteLength), packet.host, packet.port);
  });
}
