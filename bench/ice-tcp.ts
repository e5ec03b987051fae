// ICE-TCP (RELAY_TCP_PORT) against UDP (the shared port, RELAY_UDP_PORT) on one relay process
// with production defaults and the bench upstream talking all the time. The same relay serves
// both: each round places its calls over UDP, then (after those end) over TCP only, so the
// machine's load falls on both alike:
//   setup: POST → 201 and 201 → DTLS connected per call;
//   per-frame work: the relay's CPU (user + system, /proc) over a window in which every call
//   sends 50 frames/s and hears the assistant, per frame either way (RFC 4571 framing, one TCP
//   write and read per packet, against one datagram).
//   npx node bench/ice-tcp.ts [--calls=20] [--seconds=5] [--rounds=2]
import { BenchClient } from "./lib/bench-client.ts";
import { BenchUpstream } from "./lib/bench-upstream.ts";
import { cpuSeconds, loadAverage, startBenchRelay, type BenchRelay } from "./lib/procs.ts";
import { median, round, summarize, table, type Summary } from "./lib/stats.ts";

const TRANSPORTS = ["udp", "tcp"] as const;
type Transport = (typeof TRANSPORTS)[number];

export interface IceTcpResult {
  calls: number;
  seconds: number;
  rounds: number;
  transports: Record<Transport, { answerMs: Summary; answerToDtlsMs: Summary; cpuUsPerFrame: number[] }>;
  load: string;
}

/** One batch of calls over `transport`: their setup times and the relay's CPU per frame. */
async function batch(relay: BenchRelay, transport: Transport, calls: number, seconds: number) {
  const target = { kind: "relay" as const, url: relay.url, relayId: relay.relayId, secret: relay.secret };
  const clients: BenchClient[] = [];
  const answer: number[] = [];
  const dtls: number[] = [];
  try {
    for (let i = 0; i < calls; i++) {
      const client = new BenchClient({ tcpOnly: transport === "tcp" });
      clients.push(client);
      const t = await client.connect(target);
      answer.push(t.answered! - t.start);
      dtls.push(t.dtlsConnected! - t.answered!);
    }
    const frames = () => clients.reduce((sum, c) => sum + c.packetsIn + c.packetsOut, 0);
    const send = setInterval(() => {
      for (const c of clients) c.sendFrame();
    }, 20);
    try {
      await new Promise((r) => setTimeout(r, 1000)); // warm-up: first replies, JIT
      const frames0 = frames();
      const cpu0 = cpuSeconds(relay.pid);
      await new Promise((r) => setTimeout(r, seconds * 1000));
      return { answer, dtls, cpuUsPerFrame: ((cpuSeconds(relay.pid) - cpu0) * 1e6) / (frames() - frames0) };
    } finally {
      clearInterval(send);
    }
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

export async function runIceTcp(
  options: { calls?: number; seconds?: number; rounds?: number } = {},
): Promise<IceTcpResult> {
  const calls = options.calls ?? 20;
  const seconds = options.seconds ?? 5;
  const rounds = options.rounds ?? 2;
  const upstream = await BenchUpstream.start({ mode: "stream" });
  const relay = await startBenchRelay({
    inferenceUrl: upstream.url,
    // startBenchRelay sets a UDP range; an empty value counts as unset.
    env: { RELAY_UDP_PORT: "0", RELAY_UDP_PORTS: "", RELAY_TCP_PORT: "0" },
  });
  const acc = {
    udp: { answer: [] as number[], dtls: [] as number[], cpu: [] as number[] },
    tcp: { answer: [] as number[], dtls: [] as number[], cpu: [] as number[] },
  };
  try {
    for (let r = 0; r < rounds; r++) {
      for (const transport of TRANSPORTS) {
        const result = await batch(relay, transport, calls, seconds);
        acc[transport].answer.push(...result.answer);
        acc[transport].dtls.push(...result.dtls);
        acc[transport].cpu.push(round(result.cpuUsPerFrame, 1));
      }
    }
  } finally {
    await relay.stop();
    await upstream.close();
  }
  const summary = (t: Transport) => ({
    answerMs: summarize(acc[t].answer),
    answerToDtlsMs: summarize(acc[t].dtls),
    cpuUsPerFrame: acc[t].cpu,
  });
  return {
    calls,
    seconds,
    rounds,
    transports: { udp: summary("udp"), tcp: summary("tcp") },
    load: loadAverage(),
  };
}

export function iceTcpTable(r: IceTcpResult): string {
  return table([
    [
      `${r.calls} calls per batch, ${r.rounds} rounds`,
      "POST → 201 p50/p95 ms",
      "201 → DTLS p50/p95 ms",
      "relay CPU µs per frame (each round)",
      "median",
    ],
    ...TRANSPORTS.map((t) => {
      const m = r.transports[t];
      return [
        t === "udp" ? "UDP (shared port)" : "ICE-TCP",
        `${m.answerMs.p50} / ${m.answerMs.p95}`,
        `${m.answerToDtlsMs.p50} / ${m.answerToDtlsMs.p95}`,
        m.cpuUsPerFrame.join(", "),
        median(m.cpuUsPerFrame),
      ];
    }),
  ]);
}

if (import.meta.main) {
  const arg = (name: string, fallback: number) =>
    Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback);
  const result = await runIceTcp({
    calls: arg("calls", 20),
    seconds: arg("seconds", 5),
    rounds: arg("rounds", 2),
  });
  process.stdout.write(`${iceTcpTable(result)}\nload ${result.load}\n`);
  process.exit(0);
}
