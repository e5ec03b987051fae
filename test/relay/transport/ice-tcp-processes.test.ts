// ICE-TCP with RELAY_PROCESSES=2: the supervisor listens on the one RELAY_TCP_PORT, reads each
// connection's first framed STUN request and hands the socket, with the bytes read, to the relay
// process the ufrag names. Real processes, werift clients that can only use TCP, audio both ways
// through the echoing built-in agent; /proc shows each connection held by its relay process and
// not by the supervisor.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UfragMint, ufragKey } from "../../../relay/transport/ufrag.ts";
import { EventClient, callRelay, expectEchoOf } from "../../faults/fixtures.ts";
import { freePort, waitUntil } from "../../support/loopback.ts";
import { TEST_RELAY_ID, TEST_SECRET } from "../../support/relay-api.ts";
import { startRelayProcess, type RelayProcess } from "../../support/relays.ts";
import { request } from "../../support/stun-forgery.ts";

const TCP_CANDIDATE = /^a=candidate:\S+ 1 tcp \d+ \S+ (\d+) typ host tcptype passive/m;

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

/** The local port of the client's selected TCP connection. */
function tcpPortOf(client: EventClient): number {
  const protocol = client.pc.iceTransports[0]!.connection.nominated!.protocol;
  const sockets = (protocol as unknown as { sockets: Map<string, { socket: { localPort: number } }> })
    .sockets;
  return [...sockets.values()][0]!.socket.localPort;
}

/** The remote ports of the established connections on local port `localPort` that `pid` holds. */
function tcpPeersOf(pid: number, localPort: number): number[] {
  // /proc/net/tcp: local and remote "HEX_IP:HEX_PORT", state 01 = ESTABLISHED, inode in field 9.
  const remoteByInode = new Map<string, number>();
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== "01") continue;
    if (parseInt(f[1]!.split(":")[1]!, 16) === localPort)
      remoteByInode.set(f[9]!, parseInt(f[2]!.split(":")[1]!, 16));
  }
  const peers: number[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
      const remote = inode === undefined ? undefined : remoteByInode.get(inode);
      if (remote !== undefined) peers.push(remote);
    } catch {
      // closed while we looked
    }
  }
  return peers;
}

describe("ICE-TCP with RELAY_PROCESSES=2", { timeout: 60_000 }, () => {
  let host: RelayProcess | undefined;
  let httpPort: number;
  const clients: EventClient[] = [];

  beforeAll(async () => {
    httpPort = await freePort();
    host = await startRelayProcess({
      id: TEST_RELAY_ID,
      env: { RELAY_PROCESSES: "2", RELAY_HTTP_PORT: String(httpPort), RELAY_TCP_PORT: "0", RELAY_VAD: "off" },
      readyWhen: "listening",
    });
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

  it("hands each TCP connection to the process that owns its call, on one port for the host", async () => {
    const tcpPort = Number(/"tcp_port":(\d+)/.exec(host!.output())![1]);
    const mint = new UfragMint(ufragKey(TEST_SECRET), 0);
    const pids = workerPids(host!);
    const supervisorPid = host!.pid;
    for (const i of [0, 1]) {
      const url = `http://127.0.0.1:${httpPort + i}`;
      const calls = await Promise.all(
        [0, 1].map(async () => {
          const client = await callRelay(
            url,
            new EventClient({ tcpOnly: true }),
            `${TEST_RELAY_ID}-${i + 1}`,
          );
          clients.push(client);
          return client;
        }),
      );
      for (const client of calls) {
        expect(Number(TCP_CANDIDATE.exec(client.answerSdp)![1])).toBe(tcpPort);
        expect(mint.owner(/^a=ice-ufrag:(\S+)/m.exec(client.answerSdp)![1]!)).toBe(i + 1);
        const nominated = client.pc.iceTransports[0]!.connection.nominated!;
        expect(nominated.localCandidate.transport).toBe("tcp");
      }
      await Promise.all(calls.map((client, n) => expectEchoOf(client, 400 + 100 * n + 50 * i)));
      // Each call's connection is held by its relay process; the supervisor holds none of them.
      const clientPorts = calls.map(tcpPortOf);
      expect(tcpPeersOf(pids.get(i + 1)!, tcpPort).sort()).toEqual(clientPorts.sort());
      expect(tcpPeersOf(supervisorPid, tcpPort)).toEqual([]);
    }
  });

  it("closes connections whose ufrag is forged or names no running process, answering nothing", async () => {
    const tcpPort = Number(/"tcp_port":(\d+)/.exec(host!.output())![1]);
    const live = new UfragMint(ufragKey(TEST_SECRET), 1).mint();
    const ufrags = [
      live.slice(0, -1) + (live.endsWith("A") ? "B" : "A"), // tag broken
      new UfragMint(ufragKey(TEST_SECRET), 3).mint(), // a valid tag, for a process that does not exist
    ];
    for (const ufrag of ufrags) {
      const socket = net.connect(tcpPort, "127.0.0.1");
      socket.on("error", () => {});
      const received: Buffer[] = [];
      socket.on("data", (d) => received.push(d));
      const closed = new Promise((resolve) => socket.once("close", resolve));
      const packet = request({ username: `${ufrag}:x` });
      socket.write(Buffer.concat([Buffer.from([packet.length >> 8, packet.length & 255]), packet]));
      await closed;
      expect(received).toEqual([]);
    }
    // The live calls carry on.
    await expectEchoOf(clients[0]!, 700);
  });
});
