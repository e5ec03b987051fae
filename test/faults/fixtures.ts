// Arrange helpers for the fault and soak tests: real relay processes and a real edge
// (`wrangler dev`) on loopback, started by test/support/relays.ts, and a werift client that reads
// the call's events, placing its call through the edge or straight on a relay.
import { performance } from "node:perf_hooks";
import { expect } from "vitest";
import { concat, dominantFrequency, lastSoundAt, rms, sine } from "../support/audio.ts";
import { freePort, waitFor, waitUntil } from "../support/loopback.ts";
import { TestPeer, type PeerOptions } from "../support/peer.ts";
import { startEdge, startRelayProcess, udpRange, type Edge, type RelayProcess } from "../support/relays.ts";

export { freePort, udpRange, waitUntil, type RelayProcess };

// ─── Edge ─────────────────────────────────────────────────────────────────────────────────────

export type EdgeProcess = Edge;

/** `wrangler dev` on `port` (fresh if not given) with `vars`, a fast registry cache, empty state. */
export function startEdgeOn(options: { port?: number; vars?: Record<string, string> } = {}): Promise<Edge> {
  return startEdge({ port: options.port, vars: { EARSHOT_REGISTRY_CACHE_SECONDS: "1", ...options.vars } });
}

// ─── Relays ───────────────────────────────────────────────────────────────────────────────────

/**
 * A relay process for the fault tests: its own VAD off, logging at info, registered if `edgeUrl`;
 * bridged to `inferenceUrl`, or to an echoing built-in agent of its own.
 */
export function startRelayProc(options: {
  id?: string;
  edgeUrl?: string;
  secret: string;
  inferenceUrl?: string;
  env?: Record<string, string>;
}): Promise<RelayProcess> {
  return startRelayProcess({
    id: options.id,
    secret: options.secret,
    inferenceUrl: options.inferenceUrl,
    env: {
      RELAY_VAD: "off",
      ...(options.edgeUrl ? { EARSHOT_EDGE_URL: options.edgeUrl } : {}),
      ...options.env,
    },
  });
}

// ─── Calls through the edge ───────────────────────────────────────────────────────────────────

export type Event = { type: string; at: number; [key: string]: unknown };

/** A werift client whose oai-events messages are parsed with their arrival time. */
export class EventClient extends TestPeer {
  readonly events: Event[] = [];
  constructor(options: PeerOptions = {}) {
    super(options);
    this.channel.onMessage.subscribe((m) => {
      try {
        this.events.push({ ...(JSON.parse(String(m)) as Event), at: performance.now() });
      } catch {
        this.events.push({ type: "<not json>", at: performance.now() });
      }
    });
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

/** A call through the edge with its API key, connected at the relay (ICE, data channel, model session). */
export async function connectViaEdge(edge: Edge, clients?: EventClient[]): Promise<EventClient> {
  const client = new EventClient();
  clients?.push(client);
  const response = await client.callViaEdge(edge.url, edge.apiKey);
  expect(response.status, await response.clone().text()).toBe(201);
  await client.connected();
  await client.channelOpen();
  await client.waitEvent("session.created");
  return client;
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

/**
 * Audio both ways through an echoing agent: the client says a `frequency` tone for 600 ms; the
 * agent's reply, heard by the client, must be that pitch at speaking level.
 */
export async function expectEchoOf(client: EventClient, frequency: number): Promise<void> {
  // Let the previous reply finish first: its tail arriving now would be taken for this reply.
  await waitFor(
    () => performance.now() - lastSoundAt(client.received) > 300,
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
      heard = client.decodeReceived(from);
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
  const response = await client.call(relayUrl, {}, { relayId });
  expect(response.status).toBe(201);
  await client.connected();
  await client.channelOpen();
  await client.waitEvent("session.created");
  return client;
}
