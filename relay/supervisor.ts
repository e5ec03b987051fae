// RELAY_PROCESSES > 1: one relay process per core. A relay is one JavaScript thread and fills a
// core at about 80-100 calls, so a host runs N complete relays side by side, each registered at
// the edge under its own id and port (relay/config.ts relayProcesses()); the edge's
// load penalty spreads calls between them. This supervisor only starts them, restarts one that
// dies, and passes on the stop signal; it holds no call state. (With RELAY_TCP_PORT, main.ts
// also gives it ICE-TCP's listener, which hands each connection on: transport/tcp-hand-off.ts.)
//
// child_process.fork, not node:cluster: cluster exists to share one listening socket between
// workers, which is what the relays must not do (the edge addresses each by its own URL), and
// in a cluster worker every dgram bind() is a round trip to the primary, which would sit on each
// call's set-up. fork also gives each worker an IPC channel, used to notice the supervisor is
// gone (relay/main.ts drains then), to receive ICE-TCP connections, and, with a shared UDP port,
// to pass first packets on.
//
// RELAY_UDP_PORT with RELAY_PROCESSES > 1: the relays share that one port, and the supervisor
// also runs the host's UDP dispatcher (relay/dispatcher-main.ts) as a sibling, restarted on its
// own. The dispatcher sends each first packet of a flow here; the supervisor passes it to the
// relay its ufrag names. IPC through the supervisor rather than a loopback UDP hand-off: only a
// flow's first packets travel it (a handful per call; bench/shared-port-dispatch.ts measures the
// cost), and it needs no extra port and no trust in whoever else on the host can write to one.
// Live calls' packets never pass here: each relay pins its flows with connected sockets.
import { fork, type ChildProcess } from "node:child_process";
import { ConfigError, loadConfig, type RelayConfig, type RelayProcessSlot } from "./config.ts";
import type { SendToRelay } from "./transport/tcp-hand-off.ts";
import type { Logger } from "./log.ts";
import { asFirstPacket } from "./transport/udp-dispatcher.ts";

/** The exit status of a relay that refused its configuration (EX_CONFIG): restarting won't help. */
export const EXIT_CONFIG = 78;

/** The configuration from the environment; a bad value ends the process with EXIT_CONFIG, naming it. */
export function loadConfigOrExit(): RelayConfig {
  try {
    return loadConfig();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(error.message);
    process.exit(EXIT_CONFIG);
  }
}

/** Restart backoff: first delay, cap, and how long a relay must run for the delay to start over. */
export const RESTART_BACKOFF = { firstMs: 1000, maxMs: 30_000, resetAfterMs: 60_000 };

export interface SupervisorOptions {
  config: RelayConfig;
  log: Logger;
  /** The relay entry point each process runs (relay/main.ts). */
  script: string;
  /** The dispatcher's entry point (relay/dispatcher-main.ts), run when the relays share a UDP port. */
  dispatcherScript: string;
  /** The environment every relay shares; each gets its slot's variables on top. */
  env?: NodeJS.ProcessEnv;
  /** Given the way to pass a socket to a running relay process (ICE-TCP: transport/tcp-hand-off.ts). */
  connectHandOff?: (send: SendToRelay) => void;
}

/** The dispatcher's first restart delay: new calls wait for it (live ones do not). */
export const DISPATCHER_FIRST_RESTART_MS = 100;

interface Worker {
  /** A relay process's slot, or undefined for the dispatcher. */
  slot: RelayProcessSlot | undefined;
  child: ChildProcess | undefined;
  startedAt: number;
  backoffMs: number;
  restartTimer: NodeJS.Timeout | undefined;
}

/** The variables that make one relay process differ from its siblings. */
export function slotEnv(slot: RelayProcessSlot): Record<string, string> {
  return {
    // A worker is one relay; without this it would supervise again.
    RELAY_PROCESSES: "1",
    RELAY_ID: slot.relayId,
    RELAY_HTTP_PORT: String(slot.httpPort),
    RELAY_PROCESS_INDEX: String(slot.index),
    ...(slot.udpPort === undefined
      ? { RELAY_UDP_PORTS: `${slot.udpPorts[0]}-${slot.udpPorts[1]}` }
      : { RELAY_UDP_PORT: String(slot.udpPort), RELAY_UDP_DISPATCHED: "1" }),
    ...(slot.metricsPort === undefined ? {} : { RELAY_METRICS_PORT: String(slot.metricsPort) }),
    ...(slot.publicUrl === undefined ? {} : { RELAY_PUBLIC_URL: slot.publicUrl }),
  };
}

/**
 * Runs the relays until SIGTERM/SIGINT has drained them all. Resolves with the exit status:
 * 0 after a drain, 1 on a second signal (the relays were told to exit at once too), 78 when a
 * relay refused its configuration.
 */
export function superviseRelays(options: SupervisorOptions): Promise<number> {
  const { config, log, script, dispatcherScript, env = process.env } = options;
  const worker = (slot: RelayProcessSlot | undefined): Worker => ({
    slot,
    child: undefined,
    startedAt: 0,
    backoffMs: slot ? RESTART_BACKOFF.firstMs : DISPATCHER_FIRST_RESTART_MS,
    restartTimer: undefined,
  });
  const relays = config.processes.map(worker);
  const byIndex = new Map(relays.map((w) => [w.slot!.index, w]));
  // The relays share RELAY_UDP_PORT: the dispatcher holds it for them.
  const shared = config.udpPort !== undefined && relays.length > 0;
  const workers = shared ? [worker(undefined), ...relays] : relays;
  let stopping: "drain" | "config" | undefined;
  let signals = 0;
  let settle: (status: number) => void;
  const done = new Promise<number>((resolve) => (settle = resolve));

  const live = () => workers.filter((w) => w.child !== undefined);
  const stop = (signal: NodeJS.Signals, which: readonly Worker[]) => {
    for (const w of which) {
      clearTimeout(w.restartTimer);
      w.restartTimer = undefined;
      w.child?.kill(signal);
    }
  };
  const stopAll = (signal: NodeJS.Signals) => stop(signal, workers);

  /** A first packet from the dispatcher, to the relay its ufrag names (dropped if that one is down). */
  const passOn = (message: unknown) => {
    const packet = asFirstPacket(message);
    if (!packet) return;
    const child = byIndex.get(packet.process)?.child;
    if (child?.connected) child.send(packet);
  };

  const start = (w: Worker) => {
    w.restartTimer = undefined;
    const child = fork(w.slot ? script : dispatcherScript, [], {
      env: w.slot ? { ...env, ...slotEnv(w.slot) } : env,
      execArgv: process.execArgv,
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      // Packets travel as bytes, not as JSON arrays of numbers.
      serialization: "advanced",
      // Its own process group: a terminal's Ctrl-C reaches the supervisor alone, which passes one
      // signal on; a relay that also got the group's copy would take it as the second, exit-now one.
      detached: true,
    });
    w.child = child;
    w.startedAt = performance.now();
    if (w.slot)
      log.info({ worker: w.slot.index, relay_id: w.slot.relayId, pid: child.pid }, "relay process started");
    else {
      log.info({ pid: child.pid, port: config.udpPort }, "udp dispatcher started");
      child.on("message", passOn);
    }
    child.once("exit", (code, signal) => onExit(w, code, signal));
  };

  const onExit = (w: Worker, code: number | null, signal: NodeJS.Signals | null) => {
    w.child = undefined;
    const facts = w.slot
      ? { worker: w.slot.index, relay_id: w.slot.relayId, code, signal }
      : { worker: "udp-dispatcher", code, signal };
    if (stopping) {
      log.info(facts, w.slot ? "relay process exited" : "udp dispatcher exited");
      // The dispatcher outlives a drain: draining calls may still need it (an ICE restart's
      // first packets). It goes with the last relay.
      if (relays.every((r) => r.child === undefined)) stopAll("SIGTERM");
      if (live().length === 0) settle(stopping === "config" ? EXIT_CONFIG : 0);
      return;
    }
    if (code === EXIT_CONFIG) {
      log.fatal(facts, "relay process refused its configuration; stopping the others");
      stopping = "config";
      stopAll("SIGTERM");
      if (live().length === 0) settle(EXIT_CONFIG);
      return;
    }
    const ranMs = performance.now() - w.startedAt;
    if (ranMs >= RESTART_BACKOFF.resetAfterMs)
      w.backoffMs = w.slot ? RESTART_BACKOFF.firstMs : DISPATCHER_FIRST_RESTART_MS;
    const delayMs = w.backoffMs;
    w.backoffMs = Math.min(w.backoffMs * 2, RESTART_BACKOFF.maxMs);
    log.error(
      { ...facts, ran_ms: Math.round(ranMs), restart_in_ms: delayMs },
      w.slot ? "relay process died; restarting" : "udp dispatcher died; restarting",
    );
    w.restartTimer = setTimeout(() => start(w), delayMs);
  };

  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals > 1) {
      log.warn({ signal }, "second signal: relays told to exit now");
      stopAll(signal);
      settle(1);
      return;
    }
    log.info({ signal, relays: relays.filter((r) => r.child).length }, "draining every relay process");
    stopping ??= "drain";
    stop(signal, relays);
    if (relays.every((r) => r.child === undefined)) stopAll(signal);
    if (live().length === 0) settle(0);
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  options.connectHandOff?.((index, message, socket) => {
    const child = workers.find((w) => w.slot?.index === index)?.child;
    if (!child?.connected) return false;
    // The descriptor moves to the child; the callback reports a channel that closed meanwhile.
    child.send(message, socket, (error) => error && socket.destroy());
    return true;
  });
  for (const w of workers) start(w);
  return done;
}
