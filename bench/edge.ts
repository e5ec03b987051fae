// The edge alone: client secrets per second and calls per second through `wrangler dev`'s
// workerd, with a stub relay (node:http answering POST /calls at once with a canned werift
// answer, heartbeating with the real EdgeClient), and the edge's latency for one call, which is
// its share of setup time (the stub relay's own work is ~0). Where that time goes comes from the
// edge's own Server-Timing header: the median of each part over all answered requests.
//   npx node bench/edge.ts [--seconds=5] [--concurrency=8]
import { deriveRelayKey } from "../protocol/relay-key.ts";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import { RTCPeerConnection } from "werift";
import { startEdge } from "../test/support/relays.ts";
import { EdgeClient } from "../relay/edge/edge-client.ts";
import { createLogger } from "../relay/log.ts";
import { loadAverage } from "./lib/procs.ts";
import { median, round, summarize, table, type Summary } from "./lib/stats.ts";

export interface EdgeResult {
  secretsPerSecond: number;
  callsPerSecond: number;
  secretLatencyMs: Summary;
  callLatencyMs: Summary;
  /**
   * Median and mean of each Server-Timing part (ms), in the order the edge reports them. workerd
   * keeps whole-millisecond clocks, so the mean resolves what a median of 0 or 1 cannot.
   */
  secretTimingMs: Record<string, PartSummary>;
  callTimingMs: Record<string, PartSummary>;
  errors: Record<string, number>;
  /** The first response body of each kind of error. */
  firstError: Record<string, string>;
  concurrency: number;
  load: string;
}

/** Samples of each Server-Timing part, by name, in first-seen order. */
class TimingSamples {
  readonly #parts = new Map<string, number[]>();

  add(header: string | null): void {
    for (const entry of (header ?? "").split(",")) {
      const [name, ...params] = entry.trim().split(";");
      const dur = params.find((p) => p.trim().startsWith("dur="));
      if (!name || !dur) continue;
      const samples = this.#parts.get(name) ?? [];
      samples.push(Number(dur.trim().slice(4)));
      this.#parts.set(name, samples);
    }
  }

  summaries(): Record<string, PartSummary> {
    return Object.fromEntries(
      [...this.#parts].map(([name, samples]) => [
        name,
        {
          p50: round(median(samples), 1),
          mean: round(samples.reduce((a, b) => a + b, 0) / samples.length, 1),
        },
      ]),
    );
  }
}

interface PartSummary {
  p50: number;
  mean: number;
}

/** `name p50 (mean), …` */
const timingCell = (parts: Record<string, PartSummary>) =>
  Object.entries(parts)
    .map(([name, { p50, mean }]) => `${name} ${p50} (${mean})`)
    .join(", ");

/**
 * A stand-in relay whose own work is nil: it answers every POST /calls at once with `answer`
 * (a real werift answer, so the edge's checks pass) and everything else with 204.
 */
export async function startStubRelay(answer: string): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += String(c)));
    req.on("end", () => {
      if (req.method === "POST" && req.url === "/calls") {
        const { call_id } = JSON.parse(body) as { call_id: string };
        res.writeHead(201, { "content-type": "application/json" });
        res.end(JSON.stringify({ call_id, answer_sdp: answer }));
      } else {
        res.writeHead(204).end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

export async function cannedOfferAnswer(): Promise<{ offer: string; answer: string }> {
  const config = { iceServers: [], iceUseIpv6: false, iceInterfaceAddresses: { udp4: "127.0.0.1" } };
  const a = new RTCPeerConnection(config);
  const b = new RTCPeerConnection(config);
  a.addTransceiver("audio", { direction: "sendrecv" });
  a.createDataChannel("oai-events");
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription!);
  await b.setLocalDescription(await b.createAnswer());
  const result = { offer: a.localDescription!.sdp, answer: b.localDescription!.sdp };
  await Promise.all([a.close(), b.close()]);
  return result;
}

export async function runEdge(options: { seconds?: number; concurrency?: number } = {}): Promise<EdgeResult> {
  const seconds = options.seconds ?? 5;
  const concurrency = options.concurrency ?? 8;
  const { offer, answer } = await cannedOfferAnswer();
  const lots = String(1_000_000);
  const edge = await startEdge({
    vars: { EARSHOT_RATE_LIMIT_API_KEY: `${lots}/60`, EARSHOT_RATE_LIMIT_IP: `${lots}/60` },
  });
  const { server: stub, url: stubUrl } = await startStubRelay(answer);
  const client = new EdgeClient({
    edgeUrl: edge.url,
    relayId: "relay-stub",
    key: await deriveRelayKey(edge.relaySecret, "relay-stub"),
    log: createLogger("silent"),
    heartbeatSeconds: 5,
    heartbeat: () => ({
      relay_id: "relay-stub",
      boot_id: "bench-boot",
      region: "local",
      lat: 0,
      lon: 0,
      public_url: stubUrl,
      capacity: 100_000, // the Heartbeat schema's maximum
      active_calls: 0,
      draining: false,
      interval_seconds: 5,
    }),
  });
  const errors: Record<string, number> = {};
  /** The first body of each kind of error, so a failing run says why. */
  const firstError: Record<string, string> = {};
  const count = (key: string) => (errors[key] = (errors[key] ?? 0) + 1);
  try {
    client.start();
    if (!(await client.sendHeartbeat())) throw new Error("the edge refused the stub relay's heartbeat");
    const secretTiming = new TimingSamples();
    const callTiming = new TimingSamples();
    let mintTiming: TimingSamples | undefined;
    const mint = async (): Promise<string | null> => {
      const res = await fetch(`${edge.url}/v1/realtime/client_secrets`, {
        method: "POST",
        headers: { authorization: `Bearer ${edge.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify({ session: { type: "realtime", model: "gpt-realtime" } }),
      });
      const body = (await res.json()) as { value?: string };
      if (!res.ok || !body.value) {
        count(`client_secrets ${res.status}`);
        return null;
      }
      mintTiming?.add(res.headers.get("server-timing"));
      return body.value;
    };
    const loop = async (work: () => Promise<boolean>, latencies: number[]) => {
      const end = performance.now() + seconds * 1000;
      let done = 0;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (performance.now() < end) {
            const t = performance.now();
            if (await work()) {
              latencies.push(performance.now() - t);
              done++;
            }
          }
        }),
      );
      return done / seconds;
    };
    for (let i = 0; i < 5; i++) await mint(); // warm-up
    const secretLatencies: number[] = [];
    mintTiming = secretTiming;
    const secretsPerSecond = await loop(async () => (await mint()) !== null, secretLatencies);
    mintTiming = undefined;
    const callLatencies: number[] = [];
    const callsPerSecond = await loop(async () => {
      const secret = await mint();
      if (!secret) return false;
      const t = performance.now();
      const res = await fetch(`${edge.url}/v1/realtime/calls`, {
        method: "POST",
        headers: { authorization: `Bearer ${secret}`, "content-type": "application/sdp" },
        body: offer,
      });
      const text = await res.text();
      if (res.status !== 201) {
        if (!errors[`calls ${res.status}`]) firstError[`calls ${res.status}`] = text.slice(0, 300);
        count(`calls ${res.status}`);
        return false;
      }
      callLatencies.push(performance.now() - t);
      callTiming.add(res.headers.get("server-timing"));
      return true;
    }, []);
    return {
      secretsPerSecond: Math.round(secretsPerSecond),
      callsPerSecond: Math.round(callsPerSecond),
      secretLatencyMs: summarize(secretLatencies),
      callLatencyMs: summarize(callLatencies),
      secretTimingMs: secretTiming.summaries(),
      callTimingMs: callTiming.summaries(),
      errors,
      firstError,
      concurrency,
      load: loadAverage(),
    };
  } finally {
    await client.close(500);
    stub.close();
    await edge.stop();
  }
}

export function edgeTable(r: EdgeResult): string {
  return table([
    ["edge (wrangler dev, stub relay)", "value"],
    ["client secrets / s", r.secretsPerSecond],
    ["calls / s (secret + offer)", r.callsPerSecond],
    ["secret latency p50/p99 ms", `${r.secretLatencyMs.p50} / ${r.secretLatencyMs.p99}`],
    ["offer → answer via edge p50/p99 ms (edge share)", `${r.callLatencyMs.p50} / ${r.callLatencyMs.p99}`],
    ["secret Server-Timing p50 (mean) ms", timingCell(r.secretTimingMs)],
    ["call Server-Timing p50 (mean) ms", timingCell(r.callTimingMs)],
    ["errors", JSON.stringify(r.errors)],
    ...Object.entries(r.firstError).map(([kind, body]) => [`first ${kind}`, body]),
  ]);
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const seconds = Number(args.find((a) => a.startsWith("--seconds="))?.slice(10) ?? 5);
  const concurrency = Number(args.find((a) => a.startsWith("--concurrency="))?.slice(14) ?? 8);
  const result = await runEdge({ seconds, concurrency });
  process.stdout.write(`${edgeTable(result)}\nload ${result.load}\n`);
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
}
