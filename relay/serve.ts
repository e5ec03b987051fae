// One relay, wired: the core (relay.ts), its HTTP API for the edge, and the edge client that
// carries its heartbeats and call events. `npm run relay` runs this (main.ts); in-process tests too.
import { deriveRelayKey } from "../protocol/relay-key.ts";
import type { CallBridgeFactory } from "./bridge.ts";
import type { RelayConfig } from "./config.ts";
import { EdgeClient } from "./edge/edge-client.ts";
import { RelayHttpApi } from "./edge/http-api.ts";
import { MetricsEndpoint, MetricsListener } from "./edge/metrics-endpoint.ts";
import type { Logger } from "./log.ts";
import { Relay } from "./relay.ts";
import { acceptHandedOffConnections } from "./transport/tcp-hand-off.ts";
import { TcpFront } from "./transport/tcp-front.ts";
import { TcpMux } from "./transport/tcp-mux.ts";
import { UdpMux } from "./transport/udp-mux.ts";
import { UfragMint, ufragKey } from "./transport/ufrag.ts";

export interface ServedRelay {
  relay: Relay;
  api: RelayHttpApi;
  edge: EdgeClient;
  /** The HTTP API's port (RELAY_HTTP_PORT, or the one the OS chose for 0). */
  port: number;
  /** The metrics-only listener's port, with RELAY_METRICS_PORT. */
  metricsPort: number | undefined;
  /** The shared UDP port's router, with RELAY_UDP_PORT. */
  udpMux: UdpMux | undefined;
  /** ICE-TCP, with RELAY_TCP_PORT: the calls' router, and the listener unless a supervisor has it. */
  tcpMux: TcpMux | undefined;
  tcpFront: TcpFront | undefined;
  /** Ends every call, tells the edge, stops the API and all timers. Safe to call twice. */
  close(): Promise<void>;
}

export async function serveRelay(options: {
  config: RelayConfig;
  log: Logger;
  bridgeFactory?: CallBridgeFactory;
}): Promise<ServedRelay> {
  const { config, log } = options;
  // The relay's own key signs and checks everything between it and the edge.
  const key =
    config.credential.kind === "key"
      ? config.credential.key
      : await deriveRelayKey(config.credential.secret, config.relayId);
  // The ufrag key comes from the deployment secret when there is one, so every process of the
  // host (and a dispatcher in front of them) can check any of the host's ufrags.
  const ufrags =
    config.udpPort === undefined && config.tcpPort === undefined
      ? undefined
      : new UfragMint(
          ufragKey(config.credential.kind === "secret" ? config.credential.secret : key),
          config.processIndex,
        );
  const sharedPort =
    config.udpPort === undefined
      ? undefined
      : {
          // Behind the host's dispatcher, flows are pinned by connected sockets on its port.
          mux: config.udpDispatched
            ? UdpMux.pinned(config.mediaIp, config.udpPort, (error, [host, port]) =>
                log.warn(
                  { err: error, remote: `${host}:${port}` },
                  "cannot pin a flow to the shared UDP port",
                ),
              )
            : await UdpMux.open(config.mediaIp, config.udpPort),
          ufrags: ufrags!,
        };
  const iceTcp = await serveIceTcp(config, ufrags);
  const relay = new Relay({ ...options, sharedPort, iceTcp: iceTcp && { mux: iceTcp.mux, ufrags: ufrags! } });
  const metrics = new MetricsEndpoint(relay.metrics, config.metrics);
  const api = new RelayHttpApi(relay, { config, log, metrics, key });
  const metricsListener =
    config.metrics.port === undefined
      ? undefined
      : new MetricsListener(metrics, { config: config.metrics, log });
  const edge = new EdgeClient({
    edgeUrl: config.edgeUrl,
    relayId: config.relayId,
    key,
    log: log.child({ component: "edge-client" }),
    heartbeatSeconds: config.heartbeatSeconds,
    heartbeat: () => relay.heartbeat(),
    // The edge ended a call this relay still runs: end it here too.
    onCallEnded: (callId) => {
      const call = relay.calls.get(callId);
      if (call) void call.end("edge_ended", "The edge had already ended the call.");
    },
  });
  relay.on("callEvent", (event) => edge.event(event));
  // The heartbeat that tells the edge this relay is draining; close() lets it arrive.
  let drainNotice: Promise<unknown> = Promise.resolve();
  relay.on("draining", () => (drainNotice = edge.sendHeartbeat()));
  const port = await api.listen();
  const metricsPort = await metricsListener?.listen();
  relay.start();
  edge.start();
  let closing: Promise<void> | undefined;
  return {
    relay,
    api,
    edge,
    port,
    metricsPort,
    udpMux: sharedPort?.mux,
    tcpMux: iceTcp?.mux,
    tcpFront: iceTcp?.front,
    close: () =>
      (closing ??= (async () => {
        await relay.close();
        await sharedPort?.mux.close();
        await iceTcp?.close();
        // Without this, a relay with no calls exits before the edge hears it is draining, and the
        // edge keeps sending it calls until its heartbeats go stale. Bounded by the request timeout.
        await drainNotice;
        await edge.close(1000);
        await api.close();
        await metricsListener?.close();
        relay.metrics.close();
        log.info("relay closed");
      })()),
  };
}

/**
 * ICE-TCP with RELAY_TCP_PORT. A relay on its own listens on the port; one of RELAY_PROCESSES
 * (processIndex > 0) advertises the port its supervisor listens on and takes the connections the
 * supervisor hands it (relay/transport/tcp-hand-off.ts).
 */
async function serveIceTcp(
  config: RelayConfig,
  ufrags: UfragMint | undefined,
): Promise<{ mux: TcpMux; front: TcpFront | undefined; close(): Promise<void> } | undefined> {
  if (config.tcpPort === undefined || !ufrags) return undefined;
  if (config.processIndex > 0) {
    const mux = new TcpMux(config.mediaIp, config.tcpPort);
    const stop = acceptHandedOffConnections(mux);
    return { mux, front: undefined, close: async () => stop() };
  }
  const front = await TcpFront.listen(config.mediaIp, config.tcpPort, {
    owner: (ufrag) => ufrags.owner(ufrag),
    // Runs on a connection's data, a later I/O event: `mux` is set by then (the line after).
    route: (socket, received, ufrag, owner) => {
      if (owner !== config.processIndex) return false;
      mux.accept(socket, received, ufrag);
      return true;
    },
  });
  // The port the OS chose for RELAY_TCP_PORT=0 is the one to advertise.
  const mux = new TcpMux(config.mediaIp, front.port);
  return { mux, front, close: () => front.close() };
}
