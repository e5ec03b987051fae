// One UDP port for the whole host (RELAY_UDP_PORT with RELAY_PROCESSES=2): a supervisor, two
// real relay processes and the UDP dispatcher, all on one port; werift clients on loopback with
// audio both ways through the echoing built-in agent. Each relay pins its flows with sockets
// connected to the client on the shared port (read back from /proc/net/udp); the dispatcher holds
// the only unconnected one. Forged STUN with a live call's ufrag pins nothing; a killed dispatcher
// is restarted while live calls' audio carries on; a killed relay loses only its own calls.
import { readFileSync, readdirSync, readlinkSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UfragMint, ufragKey } from "../../../relay/transport/ufrag.ts";
import { dominantFrequency, rms, sine } from "../../support/audio.ts";
import { EventClient, callRelay, expectEchoOf } from "../../faults/fixtures.ts";
import { waitUntil } from "../../support/loopback.ts";
import { TEST_RELAY_ID, TEST_SECRET } from "../../support/relay-api.ts";
import type { RelayProcess } from "../../support/relays.ts";
import { forgeries, type IceCredentials } from "../../support/stun-forgery.ts";
import { closeRawSockets, rawSocket, sendUdp } from "../../support/udp.ts";
import { HOST_RELAYS_START_MS, startHostRelays, type HostRelays } from "./host-relays.ts";

interface UdpSocketInfo {
  localPort: number;
  /** The connected peer's port; undefined for an unconnected socket. */
  remotePort: number | undefined;
}

/** The UDP sockets `pid` holds, connected or not (from /proc/net/udp; IPv4 only). */
function udpSocketsOf(pid: number): UdpSocketInfo[] {
  const byInode = new Map<string, UdpSocketInfo>();
  for (const line of readFileSync("/proc/net/udp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (!f[9]) continue;
    const remotePort = parseInt(f[2]!.split(":")[1]!, 16);
    // st 01 is TCP_ESTABLISHED: a connected UDP socket.
    byInode.set(f[9], {
      localPort: parseInt(f[1]!.split(":")[1]!, 16),
      remotePort: f[3] === "01" ? remotePort : undefined,
    });
  }
  const sockets: UdpSocketInfo[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
      const info = inode === undefined ? undefined : byInode.get(inode);
      if (info) sockets.push(info);
    } catch {
      // closed while we looked
    }
  }
  return sockets;
}

/** The local ports (UDP, loopback) a werift client's ICE host candidate uses. */
function clientPortOf(client: EventClient): number {
  const offer = client.pc.localDescription!.sdp;
  return Number(/^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host/m.exec(offer)![1]);
}

/** Pids from the supervisor's log: each relay by worker index, and every dispatcher started. */
function pidsOf(host: RelayProcess): { relays: Map<number, number>; dispatchers: number[] } {
  const relays = new Map<number, number>();
  const dispatchers: number[] = [];
  for (const line of host.output().split("\n")) {
    if (line.includes('"relay process started"')) {
      const { worker, pid } = JSON.parse(line) as { worker: number; pid: number };
      relays.set(worker, pid);
    } else if (line.includes('"udp dispatcher started"'))
      dispatchers.push((JSON.parse(line) as { pid: number }).pid);
  }
  return { relays, dispatchers };
}

/** An Opus packet that carries sound: the relay's idle keepalive is a 2-3 byte silence frame. */
const sounds = (p: EventClient["received"][number]) => p.payload.length > 10;

/**
 * The reply heard from packet `from` on: its loud length, its pitch, and the longest wait between
 * two of its packets (from its first packet with sound to its last).
 */
function replyShape(
  client: EventClient,
  from: number,
): { longestGapMs: number; lostPackets: number; loudMs: number; hz: number } {
  const packets = client.received.slice(from);
  const first = packets.findIndex(sounds);
  const last = packets.findLastIndex(sounds);
  let longestGapMs = 0;
  let lostPackets = 0;
  for (let i = first + 1; first >= 0 && i <= last; i++) {
    longestGapMs = Math.max(longestGapMs, packets[i]!.at - packets[i - 1]!.at);
    lostPackets += (packets[i]!.sequenceNumber - packets[i - 1]!.sequenceNumber - 1) & 0xffff;
  }
  const pcm = client.decodeReceived(from);
  let loudMs = 0;
  let onset = -1;
  for (let at = 0; at + 480 <= pcm.length; at += 480)
    if (rms(pcm.subarray(at, at + 480)) > 1000) {
      loudMs += 20;
      if (onset < 0) onset = at;
    }
  const hz = onset < 0 ? 0 : dominantFrequency(pcm.subarray(onset, onset + 24_000));
  return { longestGapMs, lostPackets, loudMs, hz };
}

/** Whether the last few packets heard carry sound (a reply is playing). Cheap: no decoding. */
const replying = (client: EventClient) =>
  client.received.length > 5 && client.received.slice(-5).every(sounds);

describe("RELAY_UDP_PORT shared by RELAY_PROCESSES=2 behind the dispatcher", { timeout: 60_000 }, () => {
  let host: RelayProcess;
  let udpPort: number;
  let url: HostRelays["url"];
  const clients: EventClient[] = [];
  const place = async (worker: number) => {
    const client = await callRelay(url(worker), new EventClient(), `${TEST_RELAY_ID}-${worker}`);
    clients.push(client);
    return client;
  };
  /** Connected sockets on the shared port, per relay process. */
  const pinned = (worker: number) =>
    udpSocketsOf(pidsOf(host).relays.get(worker)!).filter(
      (s) => s.localPort === udpPort && s.remotePort !== undefined,
    );

  beforeAll(async () => {
    ({ host, udpPort, url } = await startHostRelays());
    await waitUntil("the dispatcher", async () => pidsOf(host).dispatchers.length > 0 || undefined, 5000);
  }, HOST_RELAYS_START_MS);

  afterAll(async () => {
    closeRawSockets();
    await Promise.all(clients.map((c) => c.close()));
    await host?.stop("SIGTERM");
  });

  it("spreads calls over both processes on one port, each flow on a socket connected to its client", async () => {
    const mint = new UfragMint(ufragKey(TEST_SECRET), 0);
    const calls = await Promise.all([1, 2, 1, 2].map((worker) => place(worker)));
    for (const [i, client] of calls.entries()) {
      const sdp = client.pc.remoteDescription!.sdp;
      const ports = [...sdp.matchAll(/^a=candidate:\S+ 1 udp \d+ \S+ (\d+) typ host/gm)].map((m) =>
        Number(m[1]),
      );
      expect(new Set(ports)).toEqual(new Set([udpPort]));
      expect(mint.owner(/^a=ice-ufrag:(\S+)/m.exec(sdp)![1]!)).toBe((i % 2) + 1);
    }
    await Promise.all(calls.map((client, i) => expectEchoOf(client, 400 + 100 * i)));
    // Each call's client port has a connected socket in the process that answered it, and only there.
    for (const [i, client] of calls.entries()) {
      const worker = (i % 2) + 1;
      expect(pinned(worker).map((s) => s.remotePort)).toContain(clientPortOf(client));
      expect(pinned(3 - worker).map((s) => s.remotePort)).not.toContain(clientPortOf(client));
    }
    // The dispatcher holds the port's one unconnected socket; the relays hold none on it.
    const { dispatchers, relays } = pidsOf(host);
    expect(udpSocketsOf(dispatchers.at(-1)!)).toEqual([{ localPort: udpPort, remotePort: undefined }]);
    for (const pid of relays.values())
      expect(udpSocketsOf(pid).filter((s) => s.localPort === udpPort && s.remotePort === undefined)).toEqual(
        [],
      );
    // Ending the calls closes their sockets.
    const before = [pinned(1).length, pinned(2).length];
    await Promise.all(calls.map((c) => c.close()));
    await waitUntil(
      "every pinned socket closed",
      async () => pinned(1).length + pinned(2).length === 0 || undefined,
      10_000,
    );
    expect(before[0]! + before[1]!).toBeGreaterThanOrEqual(4);
  });

  it("answers no forged STUN naming a live call's ufrag, and pins nothing for it", async () => {
    const client = await place(2);
    const offer = client.pc.localDescription!.sdp;
    const answer = client.pc.remoteDescription!.sdp;
    const field = (sdp: string, name: string) => new RegExp(`^a=ice-${name}:(\\S+)`, "m").exec(sdp)![1]!;
    const credentials: IceCredentials = {
      relayUfrag: field(answer, "ufrag"),
      relayPwd: field(answer, "pwd"),
      clientUfrag: field(offer, "ufrag"),
      clientPwd: field(offer, "pwd"),
    };
    const pinnedBefore = [pinned(1).length, pinned(2).length];
    const attacker = await rawSocket();
    for (const forgery of forgeries(credentials)) await sendUdp(attacker.socket, forgery.bytes, udpPort);
    // The live call's own checks keep being answered meanwhile: a reply proves the port was listening.
    await expectEchoOf(client, 700);
    expect(attacker.received).toEqual([]);
    expect([pinned(1).length, pinned(2).length]).toEqual(pinnedBefore);
    for (const worker of [1, 2]) expect(pinned(worker).map((s) => s.remotePort)).not.toContain(attacker.port);
  });

  it("restarts a killed dispatcher while a live call's audio carries on, no packet lost", async () => {
    const live = await place(1);
    await expectEchoOf(live, 500);
    await waitUntil("that reply to end", async () => !replying(live) || undefined, 10_000);
    const [dispatcher] = pidsOf(host).dispatchers.slice(-1);
    // 2.5 s of tone up; the dispatcher dies 0.5 s into it, and again while the echo plays back.
    const from = live.received.length;
    const speaking = live.sendPackets(
      live.encodeFrames(new Int16Array([...sine(600, 2500, 8000), ...new Int16Array(24_000)])),
    );
    await new Promise((r) => setTimeout(r, 500));
    process.kill(dispatcher!, "SIGKILL");
    await waitUntil(
      "the dispatcher restarted",
      async () => pidsOf(host).dispatchers.length >= 2 || undefined,
      5000,
    );
    await waitUntil("the reply", async () => replying(live) || undefined, 10_000);
    process.kill(pidsOf(host).dispatchers.at(-1)!, "SIGKILL");
    await speaking;
    await waitUntil(
      "the dispatcher restarted again",
      async () => pidsOf(host).dispatchers.length >= 3 || undefined,
      5000,
    );
    // The echo plays in real time: wait (cheaply, without decoding) until it has ended.
    await waitUntil("the reply to end", async () => !replying(live) || undefined, 10_000);
    const shape = replyShape(live, from);
    // The utterance came back (uplink unbroken: the agent's turn detector trims about 250 ms of
    // its onset, a lost second of uplink would leave 1.5 s), at its pitch, with no hole downlink.
    expect(shape.loudMs).toBeGreaterThanOrEqual(2000);
    expect(Math.abs(shape.hz - 600)).toBeLessThanOrEqual(15);
    // No audio lost: every packet of the reply arrived. Arrival jitter gets a generous bound (a
    // restarting dispatcher is a Node process starting on a loaded 2-core machine; measured
    // 60-100 ms here); bench/README.md has the figures.
    expect(shape.lostPackets).toBe(0);
    expect(shape.longestGapMs).toBeLessThan(250);
    // The restarted dispatcher takes new calls' first packets.
    await expectEchoOf(await place(2), 800);
  });

  it("loses only a killed relay process's own calls", async () => {
    const [one, two] = [await place(1), await place(2)];
    process.kill(pidsOf(host).relays.get(1)!, "SIGKILL");
    // The relay sends at least a keepalive every 300 ms; a second of nothing means the call is gone.
    await new Promise((r) => setTimeout(r, 200));
    const heard = one.received.length;
    await new Promise((r) => setTimeout(r, 1000));
    expect(one.received.length).toBe(heard);
    await expectEchoOf(two, 900);
  });

  it("drains on SIGTERM: the dispatcher stays until the last relay has gone, then the supervisor exits 0", async () => {
    await Promise.all(clients.map((c) => c.close()));
    for (const worker of [1, 2])
      await waitUntil(
        `relay ${worker} idle`,
        async () => {
          const health = await fetch(`${url(worker)}/healthz`).catch(() => undefined);
          return (
            ((await health?.json()) as { active_calls?: number } | undefined)?.active_calls === 0 || undefined
          );
        },
        15_000,
      );
    host.proc.kill("SIGTERM");
    expect(await host.exited).toBe(0);
    const exits = host
      .output()
      .split("\n")
      .filter((line) => /"(relay process|udp dispatcher) exited"/.test(line))
      .map((line) => (JSON.parse(line) as { worker: number | string }).worker);
    expect(exits).toHaveLength(3);
    expect(exits.at(-1)).toBe("udp-dispatcher");
  });
});
