// RELAY_PROCESSES=2 with RELAY_UDP_PORT: a supervisor and two real relay processes, each with one
// UDP socket for all its calls (RELAY_UDP_PORT + i - 1), its ufrags naming it. Calls are real
// werift calls with audio both ways through the echoing built-in agent.
import { createSocket } from "node:dgram";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UfragMint, ufragKey } from "../../../relay/transport/ufrag.ts";
import { EventClient, callRelay, expectEchoOf } from "../../faults/fixtures.ts";
import { freePort, waitUntil } from "../../support/loopback.ts";
import { TEST_RELAY_ID, TEST_SECRET } from "../../support/relay-api.ts";
import { startRelayProcess, udpPortsOf, type RelayProcess } from "../../support/relays.ts";

/** A UDP port on loopback whose next port is free too. */
async function freeUdpPair(): Promise<number> {
  for (;;) {
    const first = createSocket("udp4");
    await new Promise<void>((resolve) => first.bind(0, "127.0.0.1", resolve));
    const port = first.address().port;
    const second = createSocket("udp4");
    const ok = await new Promise<boolean>((resolve) => {
      second.once("error", () => resolve(false));
      second.bind(port + 1, "127.0.0.1", () => resolve(true));
    });
    first.close();
    if (ok) second.close();
    if (ok && port < 65535) return port;
  }
}

/** The pid of each relay process (worker index → pid), from the supervisor's log. */
function workerPids(host: RelayProcess): Map<number, number> {
  const pids = new Map<number, number>();
  for (const line of host.output().split("\n")) {
    if (!line.includes('"relay process started"')) continue;
    const { worker, pid } = JSON.parse(line) as { worker: number; pid: number };
    pids.set(worker, pid);
  }
  return pids;
}

describe("RELAY_UDP_PORT with RELAY_PROCESSES=2", { timeout: 60_000 }, () => {
  let host: RelayProcess | undefined;
  let udpPort: number;
  let httpPort: number;
  const clients: EventClient[] = [];

  beforeAll(async () => {
    udpPort = await freeUdpPair();
    httpPort = await freePort();
    host = await startRelayProcess({
      id: TEST_RELAY_ID,
      env: {
        RELAY_PROCESSES: "2",
        RELAY_HTTP_PORT: String(httpPort),
        RELAY_UDP_PORT: String(udpPort),
        RELAY_VAD: "off",
      },
      readyWhen: "listening",
    });
    // Ready once both relay processes answer (the supervisor's first "listening" is either one).
    for (const port of [httpPort, httpPort + 1]) {
      const url = `http://127.0.0.1:${port}/healthz`;
      await waitUntil(
        `${url} to answer`,
        async () => (await fetch(url).catch(() => undefined))?.ok || undefined,
        15_000,
      );
    }
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await host?.stop("SIGTERM");
  });

  it("gives each process one UDP port for all its calls, and ufrags that name the process", async () => {
    const mint = new UfragMint(ufragKey(TEST_SECRET), 0);
    for (const i of [0, 1]) {
      const url = `http://127.0.0.1:${httpPort + i}`;
      const calls = await Promise.all(
        [0, 1, 2].map(async () => {
          const client = await callRelay(url, new EventClient(), `${TEST_RELAY_ID}-${i + 1}`);
          clients.push(client);
          return client;
        }),
      );
      for (const client of calls) {
        const sdp = client.pc.remoteDescription!.sdp;
        const ports = new Set(
          [...sdp.matchAll(/^a=candidate:\S+ 1 udp \d+ \S+ (\d+) typ host/gm)].map((m) => Number(m[1])),
        );
        expect(ports).toEqual(new Set([udpPort + i]));
        expect(mint.owner(/^a=ice-ufrag:(\S+)/m.exec(sdp)![1]!)).toBe(i + 1);
      }
      await Promise.all(calls.map((client, n) => expectEchoOf(client, 400 + 100 * n + 50 * i)));
      // Three live calls, one UDP socket in that process.
      const pid = workerPids(host!).get(i + 1)!;
      expect(udpPortsOf(pid)).toEqual([udpPort + i]);
    }
  });
});
