// Barge-in timing on loopback, relay as a process, the bench upstream as the model:
//   upstream VAD (RELAY_VAD=off): the upstream sends input_audio_buffer.speech_started while a
//     reply plays; measured: speech_started sent → last assistant packet received;
//   relay VAD (Silero, production defaults): the client starts speaking (eSpeak) over the reply;
//     measured: first speech packet sent → last assistant packet received.
// Both: the truncate's audio_end_ms minus the assistant audio the client actually received
// (20 ms per packet), i.e. how far the model's idea of what was heard is off.
//   npx node bench/barge-in.ts [--runs=10]
import { performance } from "node:perf_hooks";
import { SpeechSynthesizer } from "../agent/tts.ts";
import { BenchClient } from "./lib/bench-client.ts";
import { BenchUpstream } from "./lib/bench-upstream.ts";
import { loadAverage, startBenchRelay } from "./lib/procs.ts";
import { summarize, table, type Summary } from "./lib/stats.ts";

export interface BargeInResult {
  runs: number;
  speechStartedToLastPacketMs: Summary;
  upstreamTruncateErrorMs: Summary;
  onsetToLastPacketMs: Summary;
  relayVadTruncateErrorMs: Summary;
  misses: number;
  load: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function quiet(client: BenchClient, ms: number, timeoutMs = 5000): Promise<void> {
  const start = performance.now();
  while (performance.now() - Math.max(client.lastPacketAt, start) < ms) {
    if (performance.now() - start > timeoutMs) throw new Error("assistant audio never stopped");
    await sleep(5);
  }
}

async function truncateOf(
  session: BenchUpstream["sessions"][number],
  timeoutMs: number,
): Promise<BenchUpstream["sessions"][number]["received"][number] | undefined> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const truncate = session.received.find((e) => e.type === "conversation.item.truncate");
    if (truncate || performance.now() > deadline) return truncate;
    await sleep(10);
  }
}

async function oneRun(
  relayVad: boolean,
  speech: Int16Array | null,
): Promise<{ lastPacketMs: number; truncateErrorMs: number } | null> {
  const upstream = await BenchUpstream.start({ mode: "reply", replyMs: 4000, speed: 4 });
  const relay = await startBenchRelay({
    inferenceUrl: upstream.url,
    env: relayVad ? {} : { RELAY_VAD: "off", RELAY_ECHO_SUPPRESSION: "0" },
  });
  const client = new BenchClient();
  let timer: NodeJS.Timeout | undefined;
  try {
    await client.connect({ kind: "relay", url: relay.url, relayId: relay.relayId, secret: relay.secret });
    // The client's microphone: silence every 20 ms, then speech when queued.
    let origin = performance.now();
    let n = 0;
    const tick = () => {
      client.sendFrame(true, origin + n * 20);
      timer = setTimeout(tick, Math.max(0, origin + ++n * 20 - performance.now()));
    };
    tick();
    const deadline = performance.now() + 5000;
    while (client.packetsIn < 50 && performance.now() < deadline) await sleep(5); // 1 s of the reply heard
    if (client.packetsIn < 50) throw new Error("no assistant audio");
    const session = upstream.sessions[0]!;
    let start: number;
    if (!relayVad) start = upstream.speechStarted(session);
    else {
      // Speech starts now: re-anchor the microphone's clock so no speech frame is credited to
      // (or sent as if captured at) a tick that came before the user spoke.
      origin = performance.now() - n * 20;
      client.queuePcm(speech!);
      while (client.queuedSentAt === undefined) await sleep(1);
      start = client.queuedSentAt;
    }
    await quiet(client, 300);
    // With the relay's VAD the reply is paused at the onset and truncated only once the user has
    // spoken RELAY_BARGE_IN_MIN_SPEECH_MS (hold, then decide): the truncate follows the silence.
    const truncate = await truncateOf(session, 3000);
    if (!truncate) return null;
    const receivedMs = client.packetsIn * 20;
    if (process.env.BENCH_DEBUG)
      process.stderr.write(
        `${relayVad ? "vad" : "upstream"}: start ${start.toFixed(1)} last ${client.lastPacketAt.toFixed(1)} truncate at ${truncate.at.toFixed(1)} audio_end_ms ${String(truncate.event.audio_end_ms)} received ${receivedMs} events ${session.received.map((e) => `${e.type}@${(e.at - start).toFixed(0)}`).join(",")}\n`,
      );
    return {
      lastPacketMs: client.lastPacketAt - start,
      truncateErrorMs: Number(truncate.event.audio_end_ms) - receivedMs,
    };
  } finally {
    if (timer) clearTimeout(timer);
    await client.close();
    await relay.stop();
    await upstream.close();
  }
}

export async function runBargeIn(options: { runs?: number } = {}): Promise<BargeInResult> {
  const runs = options.runs ?? 10;
  const speech = await new SpeechSynthesizer().speak("Wait, stop, I have a question about that.");
  const upstreamLast: number[] = [];
  const upstreamErr: number[] = [];
  const vadLast: number[] = [];
  const vadErr: number[] = [];
  let misses = 0;
  for (let i = 0; i < runs; i++) {
    const a = await oneRun(false, null);
    if (a) {
      upstreamLast.push(a.lastPacketMs);
      upstreamErr.push(a.truncateErrorMs);
    } else misses++;
    const b = await oneRun(true, speech);
    if (b) {
      vadLast.push(b.lastPacketMs);
      vadErr.push(b.truncateErrorMs);
    } else misses++;
  }
  return {
    runs,
    speechStartedToLastPacketMs: summarize(upstreamLast),
    upstreamTruncateErrorMs: summarize(upstreamErr),
    onsetToLastPacketMs: summarize(vadLast),
    relayVadTruncateErrorMs: summarize(vadErr),
    misses,
    load: loadAverage(),
  };
}

export function bargeInTable(r: BargeInResult): string {
  const row = (name: string, s: Summary) => [name, s.n, s.p50, s.p95, s.max];
  return table([
    ["barge-in, ms", "n", "p50", "p95", "max"],
    row("speech_started → last assistant packet", r.speechStartedToLastPacketMs),
    row("  truncate audio_end_ms − audio received", r.upstreamTruncateErrorMs),
    row("speech onset → last packet (relay Silero VAD)", r.onsetToLastPacketMs),
    row("  truncate audio_end_ms − audio received", r.relayVadTruncateErrorMs),
  ]);
}

if (import.meta.main) {
  const runs = Number(process.argv.find((a) => a.startsWith("--runs="))?.slice(7) ?? 10);
  const result = await runBargeIn({ runs });
  process.stdout.write(
    `${bargeInTable(result)}\nmisses (no truncate): ${result.misses}, load ${result.load}\n`,
  );
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
}
