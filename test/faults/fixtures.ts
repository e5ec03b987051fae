// Arrange helpers for the fault and soak tests: real relay processes and a real edge
// (`wrangler dev`) on loopback, a werift client that places its call through the edge, and
// probes of what a process holds (its UDP sockets, its /healthz and /metrics).
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { expect } from "vitest";
import {
  freePort,
  startEdge,
  startProcess,
  waitUntil,
  type Edge,
  type ManagedProcess,
} from "../e2e/stack.ts";
import {
  TestClient,
  concat,
  dominantFrequency,
  metricsAuth,
  postCall,
  rms,
  TEST_METRICS_TOKEN,
  sine,
  ticketFor,
  waitFor,
} from "../relay/fixtures.ts";
import { createRequire } from "node:module";

export { freePort, waitUntil };

const opus = createRequire(import.meta.url)("@discordjs/opus") as typeof import("@discordjs/opus");

let udpBlock = 0;
/** A UDP port range of its own for each relay process, so relays never contend for ports. */
export function udpRange(): string {
  const base = 30000 + ((process.pid * 53 + udpBlock++ * 300) % 9000);
  return `${base}-${base + 299}`;
}

// ─── Edge ─────────────────────────────────────────────────────────────────────────────────────

export type EdgeProcess = Edge;

/** `wrangler dev` on `port` (fresh if not given) with `vars`, a fast registry cache, empty state. */
export function startEdgeOn(options: { port?: number; vars?: Record<string, string> } = {}): Promise<Edge> {
  return startEdge({ port: options.port, vars: { EARSHOT_REGISTRY_CACHE_SECONDS: "1", ...options.vars } });
}

// ─── Relays ───────────────────────────────────────────────────────────────────────────────────

export interface RelayProcess extends ManagedProcess {
  id: string;
  url: string;
  /** UDP sockets the process holds right now (from /proc). */
  udpSockets(): number;
  health(): Promise<{ status: string; active_calls: number }>;
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

export async function startRelayProc(options: {
  id?: string;
  edgeUrl?: string;
  secret: string;
  inferenceUrl: string;
  env?: Record<string, string>;
}): Promise<RelayProcess> {
  const port = await freePort();
  const id = options.id ?? `relay-${randomBytes(3).toString("hex")}`;
  const url = `http://127.0.0.1:${port}`;
  const proc = startProcess(`relay ${id}`, ["relay/main.ts"], {
    RELAY_ID: id,
    RELAY_REGION: "local",
    RELAY_HTTP_PORT: String(port),
    RELAY_PUBLIC_URL: url,
    RELAY_MEDIA_IP: "127.0.0.1",
    RELAY_UDP_PORTS: udpRange(),
    EARSHOT_RELAY_SECRET: options.secret,
    INFERENCE_URL: options.inferenceUrl,
    RELAY_VAD: "off",
    LOG_LEVEL: "info",
    RELAY_METRICS_TOKEN: TEST_METRICS_TOKEN,
    RELAY_METRICS_MAX_AGE_SECONDS: "0",
    ...(options.edgeUrl ? { EARSHOT_EDGE_URL: options.edgeUrl } : {}),
    ...options.env,
  });
  try {
    await waitUntil(
      `relay ${id} to answer`,
      async () => {
        const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
        await res.body?.cancel();
        return res.ok || undefined;
      },
      30_000,
    );
  } catch (err) {
    await proc.stop("SIGKILL");
    throw new Error(`${(err as Error).message}\n${proc.output()}`);
  }
  return {
    ...proc,
    id,
    url,
    udpSockets: () => udpSocketsOf(proc.proc.pid!),
    health: async () =>
      (await (await fetch(`${url}/healthz`)).json()) as { status: string; active_calls: number },
    metric: async (name, labels = {}) =>
      metricValue(await (await fetch(`${url}/metrics`, { headers: metricsAuth })).text(), name, labels),
  };
}

/** The sum of a Prometheus sample over all series whose labels include `labels`. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const labelText = match[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) sum += Number(match[3]);
  }
  return sum;
}

/** UDP sockets held by `pid`: its socket fds matched against /proc/net/udp's inodes. */
export function udpSocketsOf(pid: number): number {
  const udpInodes = new Set<string>();
  for (const file of ["/proc/net/udp", "/proc/net/udp6"]) {
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[9]) udpInodes.add(fields[9]);
    }
  }
  let count = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      if (inode && udpInodes.has(inode)) count++;
    } catch {
      // closed while we looked
    }
  }
  return count;
}

// ─── Calls through the edge ───────────────────────────────────────────────────────────────────

export type Event = { type: string; at: number; [key: string]: unknown };

/** A werift client whose oai-events messages are parsed with their arrival time. */
export class EventClient extends TestClient {
  readonly events: Event[] = [];
  edgeCallId = "";

  constructor() {
    super();
    this.channel.onMessage.subscribe((m) => {
      try {
        this.events.push({ ...(JSON.parse(String(m)) as Event), at: performance.now() });
      } catch {
        this.events.push({ type: "<not json>", at: performance.now() });
      }
    });
  }

  /** Places the call through the edge with an API key; returns the edge's response. */
  async callViaEdge(edgeUrl: string, apiKey: string): Promise<Response> {
    const offer = await this.offer();
    const response = await fetch(`${edgeUrl}/v1/realtime/calls`, {
      method: "POST",
      headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/sdp" },
      body: offer,
    });
    if (response.status === 201) {
      this.edgeCallId = response.headers.get("location")!.split("/").at(-1)!;
      this.answerSdp = await response.clone().text();
      await this.pc.setRemoteDescription({ type: "answer", sdp: this.answerSdp });
    }
    return response;
  }

  errors(): Event[] {
    return this.events.filter((e) => e.type === "error");
  }

  async waitEvent(type: string, predicate: (e: Event) => boolean = () => true, ms = 10_000): Promise<Event> {
    const find = () => this.events.find((e) => e.type === type && predicate(e));
    await waitFor(() => find() !== undefined, ms, type);
    return find()!;
  }
}

export async function getCallView(
  edgeUrl: string,
  apiKey: string,
  callId: string,
): Promise<{ state: string; end_reason: string | null; relay: { id: string } }> {
  const response = await fetch(`${edgeUrl}/v1/realtime/calls/${callId}`, {
    headers: { authorization: `Bearer ${apiKey}` },
  });
  expect(response.status).toBe(200);
  return (await response.json()) as { state: string; end_reason: string | null; relay: { id: string } };
}

// ─── Audio ────────────────────────────────────────────────────────────────────────────────────

/** Decodes the packets received after index `from` to 24 kHz PCM. */
export function heardSince(client: TestClient, from: number): Int16Array {
  const decoder = new opus.OpusEncoder(24_000, 1);
  return concat(
    client.received.slice(from).map((p) => {
      const pcm = decoder.decode(p.payload);
      return new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2);
    }),
  );
}

/**
 * Audio both ways through an echoing agent: the client says a `frequency` tone for 600 ms; the
 * agent's reply, heard by the client, must be that pitch at speaking level.
 */
export async function expectEchoOf(client: EventClient, frequency: number): Promise<void> {
  // Let the previous reply finish first: its tail arriving now would be taken for this reply.
  await waitFor(
    () => performance.now() - (client.received.at(-1)?.at ?? 0) > 300,
    15_000,
    "the previous reply to end",
  );
  const from = client.received.length;
  await client.sendPackets(client.encodeFrames(concat([sine(frequency, 600, 8000), new Int16Array(24_000)])));
  // Judged on the audio alone (not on data-channel events), so this checks the media path.
  let heard: Int16Array = new Int16Array(0);
  let start = 0;
  await waitFor(
    () => {
      if (client.received.length - from < 20) return false;
      heard = heardSince(client, from);
      // Skip silence before the reply; the reply is the first loud 400 ms.
      start = 0;
      while (start + 480 < heard.length && rms(heard.subarray(start, start + 480)) < 500) start += 480;
      return heard.length - start >= 24_000 * 0.4;
    },
    15_000,
    "the agent's reply audio",
  );
  const reply = heard.subarray(start, start + 24_000 * 0.4);
  expect(rms(reply)).toBeGreaterThan(2000);
  expect(Math.abs(dominantFrequency(reply) - frequency)).toBeLessThanOrEqual(15);
}

/**
 * Places a call straight to a relay (ticket signed here, for `relayId`, the relay's RELAY_ID)
 * and waits until its model session is live.
 */
export async function callRelay(
  relayUrl: string,
  client: EventClient = new EventClient(),
  relayId?: string,
): Promise<EventClient> {
  const offer = await client.offer();
  const response = await postCall(
    relayUrl,
    { call_id: client.callId, offer_sdp: offer, session: {} },
    await ticketFor(client.callId, offer, {}, { relayId }),
  );
  expect(response.status).toBe(201);
  await client.pc.setRemoteDescription({
    type: "answer",
    sdp: ((await response.json()) as { answer_sdp: string }).answer_sdp,
  });
  await client.connected();
  await client.channelOpen();
  await client.waitEvent("session.updated");
  return client;
}
