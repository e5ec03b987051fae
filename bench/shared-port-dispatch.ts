// The receive path alone: datagrams from 50 client sockets to 50 calls, through one UdpMux
// (routed by address), through a pinned UdpMux (the host's port: a socket connected to each
// client on the shared port, SO_REUSEPORT beside the dispatcher's), and to 50 sockets of their
// own (werift's per-call mode), in this one process, interleaved rounds. CPU per datagram covers
// sending and receiving alike, so the difference between them is the routing.
// Then the dispatcher's CPU per new flow: a Binding request with a valid ufrag, read and checked
// (HMAC tag) and handed off, over IPC to a forked process (what the supervisor path costs the
// dispatcher) against a loopback UDP hand-off. Usage:
//   npx node bench/shared-port-dispatch.ts [--calls=50] [--datagrams=200000] [--rounds=5] [--flows=20000]
import { fork } from "node:child_process";
import dgram from "node:dgram";
import { once } from "node:events";
import { Message, type StunProtocol } from "werift";
import { UdpDispatcher } from "../relay/transport/udp-dispatcher.ts";
import { UdpMux } from "../relay/transport/udp-mux.ts";
import { UfragMint, ufragKey } from "../relay/transport/ufrag.ts";
import { median, round, table } from "./lib/stats.ts";

// The forked end of the IPC hand-off: counts first packets, acknowledges every burst.
if (process.argv[2] === "--sink") {
  let heard = 0;
  process.on("message", (m: { data?: Uint8Array }) => {
    if (m.data && ++heard % 50 === 0) process.send!(heard);
  });
  process.on("disconnect", () => process.exit(0));
} else await main();

async function main() {
  const arg = (name: string, fallback: number) =>
    Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback);
  // Flows on the port: with the host port, connected sockets sharing one local port.
  const CALLS = arg("calls", 50);
  const HOST = "127.0.0.1";
  const PAYLOAD = Buffer.alloc(172, 0x5a); // an Opus RTP packet's size with SRTP

  async function bound(): Promise<dgram.Socket> {
    const socket = dgram.createSocket("udp4");
    socket.bind(0, HOST);
    await once(socket, "listening");
    return socket;
  }

  /** Sends `count` datagrams round-robin from the clients to the ports; resolves once all arrived. */
  async function pump(clients: dgram.Socket[], ports: number[], count: number, received: () => number) {
    const cpu0 = process.cpuUsage();
    let sent = 0;
    while (sent < count) {
      // One datagram per call per burst (a 20 ms tick's worth), each burst drained before the next.
      for (let i = 0; i < 50 && sent < count; i++, sent++)
        clients[sent % CALLS]!.send(PAYLOAD, ports[sent % CALLS]!, HOST);
      // Wait for the burst to land; a datagram lost on loopback must not stall the run.
      const stallAt = Date.now() + 200;
      while (received() < sent && Date.now() < stallAt) await new Promise((r) => setImmediate(r));
    }
    const deadline = Date.now() + 2000;
    while (received() < count && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    const cpu = process.cpuUsage(cpu0);
    return { usPerDatagram: (cpu.user + cpu.system) / count, lost: count - received() };
  }

  async function viaMux(clients: dgram.Socket[], count: number) {
    const mux = await UdpMux.open(HOST, 0);
    let received = 0;
    const stub = { datagramReceived: () => void received++ } as unknown as StunProtocol;
    for (const client of clients) {
      const protocol = Object.create(stub) as StunProtocol;
      // The call "answered" its client: the address is bound, as after ICE.
      await mux.attach(protocol).send(Buffer.from("x"), [HOST, client.address().port]);
    }
    const result = await pump(clients, new Array<number>(CALLS).fill(mux.port), count, () => received);
    await mux.close();
    return result;
  }

  async function viaPinned(clients: dgram.Socket[], count: number) {
    // The dispatcher holds the port (and would get anything not pinned); the mux pins each client.
    const dispatcher = await UdpDispatcher.open(HOST, 0, new UfragMint(ufragKey("bench"), 0), () => {});
    const mux = UdpMux.pinned(HOST, dispatcher.port);
    let received = 0;
    const stub = { datagramReceived: () => void received++ } as unknown as StunProtocol;
    for (const client of clients) {
      const protocol = Object.create(stub) as StunProtocol;
      // Only an answer to an authenticated check pins a flow: a Binding success response.
      await mux
        .attach(protocol)
        .send(Buffer.from(new Message(0x001, 0x100).bytes), [HOST, client.address().port]);
    }
    await new Promise((r) => setTimeout(r, 50)); // the connects land
    const result = await pump(clients, new Array<number>(CALLS).fill(dispatcher.port), count, () => received);
    const strays = dispatcher.stats.dropped;
    await mux.close();
    await dispatcher.close();
    return { ...result, strays };
  }

  async function viaOwnSockets(clients: dgram.Socket[], count: number) {
    let received = 0;
    const sockets = await Promise.all(clients.map(() => bound()));
    // What werift's UdpTransport does per datagram: an address tuple and a call into the protocol.
    for (const socket of sockets)
      socket.on("message", (data, rinfo) => {
        const addr: [string, number] = [rinfo.address, rinfo.port];
        if (data.length > 0 && addr[1] > 0) received++;
      });
    const result = await pump(
      clients,
      sockets.map((s) => s.address().port),
      count,
      () => received,
    );
    for (const socket of sockets) socket.close();
    return result;
  }

  const datagrams = arg("datagrams", 200_000);
  const rounds = arg("rounds", 5);
  const flows = arg("flows", 20_000);
  const clients = await Promise.all(Array.from({ length: CALLS }, () => bound()));
  const mux: number[] = [];
  const pinned: number[] = [];
  const own: number[] = [];
  let lost = 0;
  let strays = 0;
  await viaMux(clients, 20_000); // warm-up
  await viaPinned(clients, 20_000);
  await viaOwnSockets(clients, 20_000);
  for (let r = 0; r < rounds; r++) {
    const a = await viaOwnSockets(clients, datagrams);
    const b = await viaMux(clients, datagrams);
    const c = await viaPinned(clients, datagrams);
    own.push(round(a.usPerDatagram, 2));
    mux.push(round(b.usPerDatagram, 2));
    pinned.push(round(c.usPerDatagram, 2));
    lost += a.lost + b.lost + c.lost;
    strays += c.strays;
  }
  process.stdout.write(
    `${table([
      [
        `${CALLS} calls, ${datagrams} datagrams × ${rounds} rounds`,
        "CPU µs per datagram (send + receive), each round",
        "median",
      ],
      ["a socket per call", own.join(", "), median(own)],
      ["one shared socket (UdpMux, one process)", mux.join(", "), median(mux)],
      ["host port: a connected socket per flow (pinned UdpMux)", pinned.join(", "), median(pinned)],
    ])}\nlost ${lost}; datagrams of pinned flows that reached the dispatcher: ${strays}\n\n`,
  );

  // The dispatcher per new flow: each datagram a Binding request naming a valid ufrag of process 1.
  const requests = Array.from({ length: CALLS }, () => {
    const m = new Message(0x001, 0x000);
    m.setAttribute("USERNAME", `${new UfragMint(ufragKey("bench"), 1).mint()}:abcd`);
    m.setAttribute("PRIORITY", 1_853_766_911);
    m.addMessageIntegrity(Buffer.from("x".repeat(22)));
    m.addFingerprint();
    return Buffer.from(m.bytes);
  });
  const sink = fork(import.meta.filename, ["--sink"], { serialization: "advanced", stdio: "inherit" });
  let acked = 0;
  sink.on("message", (n: number) => (acked = n));
  const handOffSocket = await bound();
  const loopbackSink = await bound();
  let loopbackHeard = 0;
  loopbackSink.on("message", () => loopbackHeard++);
  const ipc: number[] = [];
  const loopback: number[] = [];
  const firstPackets = async (mode: "ipc" | "loopback", count: number) => {
    const base = mode === "ipc" ? acked : loopbackHeard;
    const dispatcher = await UdpDispatcher.open(
      HOST,
      0,
      new UfragMint(ufragKey("bench"), 0),
      (owner, data, host, port) => {
        if (mode === "ipc") sink.send({ kind: "udp-first-packet", process: owner, data, host, port });
        else {
          // A loopback hand-off needs the remote address in a header of its own.
          const header = Buffer.from(`${host}:${port}\n`);
          handOffSocket.send([header, data], loopbackSink.address().port, HOST);
        }
      },
    );
    let sent = 0;
    const cpu0 = process.cpuUsage();
    while (sent < count) {
      for (let i = 0; i < 50 && sent < count; i++, sent++)
        clients[sent % CALLS]!.send(requests[sent % CALLS]!, dispatcher.port, HOST);
      const done = () => (mode === "ipc" ? acked : loopbackHeard) - base >= Math.floor(sent / 50) * 50;
      const stallAt = Date.now() + 500;
      while (!done() && Date.now() < stallAt) await new Promise((r) => setImmediate(r));
    }
    const cpu = process.cpuUsage(cpu0);
    await dispatcher.close();
    return round((cpu.user + cpu.system) / count, 2);
  };
  await firstPackets("ipc", 5000); // warm-up
  await firstPackets("loopback", 5000);
  for (let r = 0; r < rounds; r++) {
    ipc.push(await firstPackets("ipc", flows));
    loopback.push(await firstPackets("loopback", flows));
  }
  process.stdout.write(
    `${table([
      [
        `dispatcher, ${flows} first packets × ${rounds} rounds`,
        "CPU µs per first packet in the dispatcher (client send + read + tag + hand-off), each round",
        "median",
      ],
      ["hand-off over IPC (the supervisor path; chosen)", ipc.join(", "), median(ipc)],
      ["hand-off over loopback UDP", loopback.join(", "), median(loopback)],
    ])}\n`,
  );
  for (const c of [...clients, handOffSocket, loopbackSink]) c.close();
  sink.disconnect();
  process.exit(0);
}
