// The receive path alone: datagrams from 50 client sockets to 50 calls, through one UdpMux
// (routed by address) against 50 sockets of their own (werift's per-call mode), in this one
// process, interleaved rounds. CPU per datagram covers sending and receiving alike, so the
// difference between the two is the routing. Usage:
//   npx node bench/shared-port-dispatch.ts [--datagrams=200000] [--rounds=5]
import dgram from "node:dgram";
import { once } from "node:events";
import type { StunProtocol } from "werift";
import { UdpMux } from "../relay/transport/udp-mux.ts";
import { median, round, table } from "./lib/stats.ts";

const CALLS = 50;
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

const arg = (name: string, fallback: number) =>
  Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback);
const datagrams = arg("datagrams", 200_000);
const rounds = arg("rounds", 5);
const clients = await Promise.all(Array.from({ length: CALLS }, () => bound()));
const mux: number[] = [];
const own: number[] = [];
let lost = 0;
await viaMux(clients, 20_000); // warm-up
await viaOwnSockets(clients, 20_000);
for (let r = 0; r < rounds; r++) {
  const a = await viaOwnSockets(clients, datagrams);
  const b = await viaMux(clients, datagrams);
  own.push(round(a.usPerDatagram, 2));
  mux.push(round(b.usPerDatagram, 2));
  lost += a.lost + b.lost;
}
for (const c of clients) c.close();
process.stdout.write(
  `${table([
    [
      `${CALLS} calls, ${datagrams} datagrams × ${rounds} rounds`,
      "CPU µs per datagram (send + receive), each round",
      "median",
    ],
    ["a socket per call", own.join(", "), median(own)],
    ["one shared socket (UdpMux)", mux.join(", "), median(mux)],
  ])}\nlost ${lost}\n`,
);
process.exit(0);
