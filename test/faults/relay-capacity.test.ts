// Issue 13, item 3, through real processes: a real edge (wrangler dev) and two real relay
// processes of capacity 3. The registry's load lags by a heartbeat, so a burst of offers all
// ranks the same relay first; a full relay answers 503 and the edge goes on to the next one.
// Before: 8 parallel offers on one capacity-3 relay got three 201s and five 502 relay_error.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startRelayProcess, waitForRelayAtEdge, type Edge, type RelayProcess } from "../support/relays.ts";
import { EventClient, startEdgeOn, waitUntil } from "./fixtures.ts";

let edge: Edge;
const relays: RelayProcess[] = [];
const clients: EventClient[] = [];

beforeAll(async () => {
  edge = await startEdgeOn({ vars: { EARSHOT_RATE_LIMIT_IP: "10000/60" } });
  for (const id of ["cap-a", "cap-b"]) {
    relays.push(
      await startRelayProcess({ edge, id, env: { RELAY_CAPACITY: "3", RELAY_HEARTBEAT_SECONDS: "1" } }),
    );
    await waitForRelayAtEdge(edge, id);
  }
}, 120_000);
afterEach(async () => {
  // Hung up through the edge, so each relay frees the slot at once (a client that only goes
  // away is noticed by ICE after a grace).
  const done = clients.splice(0);
  await Promise.all(
    done
      .filter((c) => c.edgeCallId)
      .map((c) =>
        fetch(`${edge.url}/v1/realtime/calls/${c.edgeCallId}`, {
          method: "DELETE",
          headers: { authorization: `Bearer ${edge.apiKey}` },
        }).then((r) => r.body?.cancel()),
      ),
  );
  await Promise.all(done.map((c) => c.close()));
  await waitUntil(
    "the relays to be empty",
    async () => {
      for (const r of relays) if ((await r.health()).active_calls > 0) return undefined;
      return true;
    },
    20_000,
  );
  // …and until the edge's registry has heard so (heartbeats every second), and each isolate's
  // cached copy of it has expired (EARSHOT_REGISTRY_CACHE_SECONDS=1).
  for (const r of relays) await waitForRelayAtEdge(edge, r.id);
  await new Promise((resolve) => setTimeout(resolve, 1200));
});
afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop()));
  await edge?.stop();
});

describe("offers to full relays, through a real edge and real relays", () => {
  it("8 parallel offers on two capacity-3 relays: six calls placed on both relays, two 503s with Retry-After, no 502", async () => {
    const offers = Array.from({ length: 8 }, () => {
      const client = new EventClient();
      clients.push(client);
      return client.callViaEdge(edge.url, edge.apiKey);
    });
    const responses = await Promise.all(offers);
    const statuses = responses.map((r) => r.status).sort();
    expect(statuses).toEqual([201, 201, 201, 201, 201, 201, 503, 503]);
    for (const response of responses.filter((r) => r.status === 503)) {
      expect(Number(response.headers.get("retry-after"))).toBeGreaterThan(0);
      const body = (await response.json()) as { error: { type: string; code: string } };
      expect(body.error).toMatchObject({ type: "server_error", code: "no_relay_available" });
    }
    // Both relays hold three calls each: the second took what the first could not.
    const held = await Promise.all(relays.map((r) => r.health()));
    expect(held.map((h) => h.active_calls)).toEqual([3, 3]);
  }, 60_000);

  it("an offer the relay cannot answer (no common codec) is a 400 naming the problem, not a 502", async () => {
    const client = new (class extends EventClient {
      override async offer(): Promise<string> {
        // Passes the edge's checks (one audio m-line, ICE, DTLS); only the relay finds no codec.
        return (await super.offer()).replace(/^a=rtpmap:(\d+) \w+\/(\d+)/gm, "a=rtpmap:$1 L16/$2");
      }
    })();
    clients.push(client);
    const response = await client.callViaEdge(edge.url, edge.apiKey);
    expect(response.status).toBe(400);
    const body = (await response.json()) as { error: { type: string; code: string; message: string } };
    expect(body.error).toMatchObject({ type: "invalid_request_error", code: "invalid_offer" });
    expect(body.error.message).toMatch(/codec/i);
  }, 30_000);
});
