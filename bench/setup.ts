// Call setup on loopback, p50/p95/p99 over N calls, one after another:
//   start → answer   (edge: client secret minted → SDP answer received; relay-direct: POST → 201)
//   answer → ICE connected, answer → DTLS connected (the client's DTLS transport), and
//   DTLS connected → first audio packet from the relay (the bench upstream replies at once).
// Through the edge under `wrangler dev` when it works (--edge), else relay-direct with a ticket
// signed here; the result says which.
//   npx node bench/setup.ts [--calls=50] [--edge]
import { startEdge, startRelayProcess } from "../test/support/relays.ts";
import { BenchClient, type EdgeTarget, type RelayTarget } from "./lib/bench-client.ts";
import { BenchUpstream } from "./lib/bench-upstream.ts";
import { loadAverage, startBenchRelay } from "./lib/procs.ts";
import { summarize, table, type Summary } from "./lib/stats.ts";

export interface SetupResult {
  path: "edge" | "relay-direct";
  calls: number;
  failed: number;
  answerMs: Summary;
  answerToIceMs: Summary;
  answerToDtlsMs: Summary;
  dtlsToFirstAudioMs: Summary;
  load: string;
  note?: string;
}

export async function runSetup(options: { calls?: number; edge?: boolean } = {}): Promise<SetupResult> {
  const calls = options.calls ?? 50;
  const upstream = await BenchUpstream.start({ mode: "reply", replyMs: 400, speed: 4 });
  const stops: (() => Promise<void>)[] = [() => upstream.close()];
  let target: RelayTarget | EdgeTarget;
  let path: SetupResult["path"] = "relay-direct";
  try {
    if (options.edge) {
      const edge = await startEdge();
      stops.unshift(() => edge.stop());
      const relay = await startRelayProcess({ edge, inferenceUrl: upstream.url });
      stops.unshift(() => relay.stop());
      target = { kind: "edge", url: edge.url, apiKey: edge.apiKey };
      path = "edge";
    } else {
      const relay = await startBenchRelay({ inferenceUrl: upstream.url });
      stops.unshift(() => relay.stop());
      target = { kind: "relay", url: relay.url, relayId: relay.relayId, secret: relay.secret };
    }
    const samples = {
      answer: [] as number[],
      ice: [] as number[],
      dtls: [] as number[],
      audio: [] as number[],
    };
    let failed = 0;
    // Two warm-up calls (JIT, module loading) are not counted.
    for (let i = 0; i < calls + 2; i++) {
      const client = new BenchClient();
      try {
        const t = await client.connect(target);
        const deadline = performance.now() + 3000;
        while (client.times.firstAudio === undefined && performance.now() < deadline)
          await new Promise((r) => setTimeout(r, 5));
        if (i < 2) continue;
        samples.answer.push(t.answered! - t.start);
        samples.ice.push(t.iceConnected! - t.answered!);
        samples.dtls.push(t.dtlsConnected! - t.answered!);
        if (t.firstAudio !== undefined) samples.audio.push(t.firstAudio - t.dtlsConnected!);
      } catch (error) {
        failed++;
        process.stderr.write(`setup: call failed: ${(error as Error).message}\n`);
      } finally {
        await client.close();
      }
    }
    return {
      path,
      calls,
      failed,
      answerMs: summarize(samples.answer),
      answerToIceMs: summarize(samples.ice),
      answerToDtlsMs: summarize(samples.dtls),
      dtlsToFirstAudioMs: summarize(samples.audio),
      load: loadAverage(),
    };
  } finally {
    for (const stop of stops) await stop();
  }
}

export function setupTable(r: SetupResult): string {
  const row = (name: string, s: Summary) => [name, s.n, s.p50, s.p95, s.p99, s.max];
  return table([
    [`setup (${r.path}), ms`, "n", "p50", "p95", "p99", "max"],
    row(r.path === "edge" ? "client secret → answer" : "POST /calls → answer", r.answerMs),
    row("answer → ICE connected", r.answerToIceMs),
    row("answer → DTLS connected", r.answerToDtlsMs),
    row("DTLS connected → first audio", r.dtlsToFirstAudioMs),
  ]);
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const calls = Number(args.find((a) => a.startsWith("--calls="))?.slice(8) ?? 50);
  const result = await runSetup({ calls, edge: args.includes("--edge") });
  process.stdout.write(`${setupTable(result)}\nfailed: ${result.failed}, load ${result.load}\n`);
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
}
