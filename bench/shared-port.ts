// The shared UDP port (RELAY_UDP_PORT) against per-call sockets (RELAY_UDP_PORTS), one relay
// process each, production defaults, the bench upstream talking all the time. Interleaved rounds
// (per-call, shared, per-call, shared, ...) so the machine's load falls on both alike:
//   setup: POST → 201 (the answer: per-call mode binds a socket here) and 201 → DTLS connected;
//   per-frame work: the relay's CPU (user + system, /proc) over a window in which every call
//   sends 50 frames/s and hears the assistant, per frame either way.
//   npx node bench/shared-port.ts [--calls=20] [--seconds=5] [--rounds=2]
import { BenchClient } from "./lib/bench-client.ts";
import { BenchUpstream } from "./lib/bench-upstream.ts";
import { cpuSeconds, loadAverage, startBenchRelay } from "./lib/procs.ts";
import { median, round, summarize, table, type Summary } from "./lib/stats.ts";

type Mode = "per-call sockets" | "shared port";

export interface SharedPortResult {
  calls: number;
  seconds: number;
  rounds: number;
  modes: Record<
    Mode,
    { answerMs: Summary; answerToDtlsMs: Summary; cpuUsPerFrame: number[]; framesPerRound: number[] }
  >;
  load: string;
}

const ENV: Record<Mode, Record<string, string>> = {
  "per-call sockets": {},
  // startBenchRelay sets a range; an empty value counts as unset.
  "shared port": { RELAY_UDP_PORT: "0", RELAY_UDP_PORTS: "" },
};

async function round_(mode: Mode, upstream: BenchUpstream, calls: number, seconds: number) {
  const relay = await startBenchRelay({ inferenceUrl: upstream.url, env: ENV[mode] });
  const target = { kind: "relay" as const, url: relay.url, relayId: relay.relayId, secret: relay.secret };
  const clients: BenchClient[] = [];
  const answer: number[] = [];
  const dtls: number[] = [];
  try {
    for (let i = 0; i < calls; i++) {
      const client = new BenchClient();
      clients.push(client);
      const t = await client.connect(target);
      answer.push(t.answered! - t.start);
      dtls.push(t.dtlsConnected! - t.answered!);
    }
    const send = setInterval(() => {
      for (const c of clients) c.sendFrame();
    }, 20);
    try {
      await new Promise((r) => setTimeout(r, 1000)); // warm-up: first replies, JIT
      const in0 = clients.reduce((s, c) => s + c.packetsIn, 0);
      const out0 = clients.reduce((s, c) => s + c.packetsOut, 0);
      const cpu0 = cpuSeconds(relay.pid);
      await new Promise((r) => setTimeout(r, seconds * 1000));
      const cpu = cpuSeconds(relay.pid) - cpu0;
      const frames =
        clients.reduce((s, c) => s + c.packetsIn, 0) -
        in0 +
        clients.reduce((s, c) => s + c.packetsOut, 0) -
        out0;
      return { answer, dtls, cpuUsPerFrame: (cpu * 1e6) / frames, frames };
    } finally {
      clearInterval(send);
    }
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await relay.stop();
  }
}

export async function runSharedPort(
  options: { calls?: number; seconds?: number; rounds?: number } = {},
): Promise<SharedPortResult> {
  const calls = options.calls ?? 20;
  const seconds = options.seconds ?? 5;
  const rounds = options.rounds ?? 2;
  const upstream = await BenchUpstream.start({ mode: "stream" });
  const acc: Record<Mode, { answer: number[]; dtls: number[]; cpu: number[]; frames: number[] }> = {
    "per-call sockets": { answer: [], dtls: [], cpu: [], frames: [] },
    "shared port": { answer: [], dtls: [], cpu: [], frames: [] },
  };
  try {
    for (let r = 0; r < rounds; r++) {
      for (const mode of Object.keys(ENV) as Mode[]) {
        const result = await round_(mode, upstream, calls, seconds);
        acc[mode].answer.push(...result.answer);
        acc[mode].dtls.push(...result.dtls);
        acc[mode].cpu.push(round(result.cpuUsPerFrame, 1));
        acc[mode].frames.push(result.frames);
      }
    }
  } finally {
    await upstream.close();
  }
  const modes = Object.fromEntries(
    (Object.keys(acc) as Mode[]).map((mode) => [
      mode,
      {
        answerMs: summarize(acc[mode].answer),
        answerToDtlsMs: summarize(acc[mode].dtls),
        cpuUsPerFrame: acc[mode].cpu,
        framesPerRound: acc[mode].frames,
      },
    ]),
  ) as SharedPortResult["modes"];
  return { calls, seconds, rounds, modes, load: loadAverage() };
}

export function sharedPortTable(r: SharedPortResult): string {
  return table([
    [
      `${r.calls} calls, ${r.rounds} interleaved rounds`,
      "POST → 201 p50/p95 ms",
      "201 → DTLS p50/p95 ms",
      "relay CPU µs per frame (each round)",
      "median",
    ],
    ...(Object.keys(r.modes) as Mode[]).map((mode) => {
      const m = r.modes[mode];
      return [
        mode,
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
  const result = await runSharedPort({
    calls: arg("calls", 20),
    seconds: arg("seconds", 5),
    rounds: arg("rounds", 2),
  });
  process.stdout.write(`${sharedPortTable(result)}\nload ${result.load}\n`);
  process.exit(0);
}
