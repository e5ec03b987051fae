// The host's one UDP port in tests: a supervisor with RELAY_PROCESSES=2 relay processes and the
// UDP dispatcher on RELAY_UDP_PORT, the echoing built-in agent as their upstream.
import { freePort, freeUdpPort, waitUntil } from "../../support/loopback.ts";
import { TEST_RELAY_ID } from "../../support/relay-api.ts";
import { startRelayProcess, type RelayProcess } from "../../support/relays.ts";

/** A beforeAll's time for startHostRelays: three Node processes starting on a loaded machine. */
export const HOST_RELAYS_START_MS = 60_000;

export interface HostRelays {
  host: RelayProcess;
  udpPort: number;
  /** Relay process `worker`'s (1-based) API, and the relay id its tickets name. */
  url(worker: number): string;
  relayId(worker: number): string;
}

/** Starts the two relays on one UDP port (bound on `mediaIp`); resolves once both answer. */
export async function startHostRelays(mediaIp = "127.0.0.1"): Promise<HostRelays> {
  const udpPort = await freeUdpPort();
  const httpPort = await freePort();
  const host = await startRelayProcess({
    id: TEST_RELAY_ID,
    env: {
      RELAY_PROCESSES: "2",
      RELAY_HTTP_PORT: String(httpPort),
      RELAY_UDP_PORT: String(udpPort),
      RELAY_MEDIA_IP: mediaIp,
      RELAY_VAD: "off",
      // A test's last calls may still be up when it stops the host: drain them quickly, so the
      // supervisor exits before the harness has to kill it (orphaning its relays).
      RELAY_DRAIN_SECONDS: "1",
    },
  });
  const url = (worker: number) => `http://127.0.0.1:${httpPort + worker - 1}`;
  // startRelayProcess waited for the first; the second may still be starting.
  const health = `${url(2)}/healthz`;
  await waitUntil(health, async () => (await fetch(health).catch(() => undefined))?.ok || undefined, 15_000);
  return { host, udpPort, url, relayId: (worker) => `${TEST_RELAY_ID}-${worker}` };
}
