// The host's UDP dispatcher (relay/transport/udp-dispatcher.ts): forked by the supervisor beside
// the relay processes when RELAY_UDP_PORT is shared by RELAY_PROCESSES > 1, restarted on its own.
// It hands first packets to the supervisor over IPC, which passes each to the process named in
// its ufrag. Same environment as the relays; it reads only the media address, port and secret.
import { createLogger } from "./log.ts";
import { EXIT_CONFIG, loadConfigOrExit } from "./supervisor.ts";
import { UdpDispatcher, type FirstPacketMessage } from "./transport/udp-dispatcher.ts";
import { UfragMint, ufragKey } from "./transport/ufrag.ts";

/** How often the drop counter is logged, if it moved (never per packet). */
const STATS_INTERVAL_MS = 60_000;

const config = loadConfigOrExit();
const log = createLogger(config.logLevel).child({ component: "udp-dispatcher" });
if (config.udpPort === undefined || config.credential.kind !== "secret" || !process.send) {
  log.fatal("the dispatcher runs under the relay supervisor, with RELAY_UDP_PORT and EARSHOT_RELAY_SECRET");
  process.exit(EXIT_CONFIG);
}
const send = process.send.bind(process);
const ufrags = new UfragMint(ufragKey(config.credential.secret), 0);

let dispatcher: UdpDispatcher;
try {
  dispatcher = await UdpDispatcher.open(config.mediaIp, config.udpPort, ufrags, (owner, data, host, port) => {
    const message: FirstPacketMessage = { kind: "udp-first-packet", process: owner, data, host, port };
    send(message);
  });
} catch (error) {
  log.fatal({ err: error, port: config.udpPort }, "cannot bind the shared UDP port");
  process.exit(1);
}
log.info({ address: config.mediaIp, port: dispatcher.port }, "udp dispatcher listening");

let logged = { handedOff: 0, dropped: 0 };
const statsTimer = setInterval(() => {
  const stats = dispatcher.stats;
  if (stats.dropped === logged.dropped && stats.handedOff === logged.handedOff) return;
  log.info(stats, "udp dispatcher counters");
  logged = stats;
}, STATS_INTERVAL_MS);
statsTimer.unref();

const stop = () => void dispatcher.close().then(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
// The supervisor is gone: nobody to hand packets to.
process.once("disconnect", stop);
