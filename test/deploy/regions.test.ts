// Three regional relays against one edge, all on loopback: the edge under wrangler dev
// (EARSHOT_DEV=1, so the Earshot-Geo header stands in for Cloudflare's request.cf location) and
// three `node relay/main.ts` processes with their own region, location and UDP port range.
// Calls "from" New York, Paris and Singapore land on the nearest relay and carry audio; a relay
// that drains gets no new calls, and one that starts registers itself and takes them again.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentServer } from "../../agent/agent-server.ts";
import { Caller, candidatePorts, waitForRegion } from "./fixtures.ts";
import { waitFor } from "../support/loopback.ts";
import { concat, dominantFrequency, isKeepalive, rms, sine } from "../support/audio.ts";
import { type Edge, type RelayProcess, startEdge, startRelayProcess } from "../support/relays.ts";

interface Site {
  region: string;
  lat: number;
  lon: number;
  udp: [number, number];
}

const SITES = {
  "us-east": { region: "us-east", lat: 39, lon: -77, udp: [32200, 32299] },
  "eu-west": { region: "eu-west", lat: 53, lon: -6, udp: [32300, 32399] },
  "ap-southeast": { region: "ap-southeast", lat: 1.3, lon: 103.8, udp: [32400, 32499] },
} satisfies Record<string, Site>;

const PLACES = {
  "New York": { geo: "40.7128,-74.0060", nearest: "us-east", tone: 440 },
  Paris: { geo: "48.8566,2.3522", nearest: "eu-west", tone: 660 },
  Singapore: { geo: "1.3521,103.8198", nearest: "ap-southeast", tone: 880 },
} as const;

interface CallView {
  state: string;
  relay: { id: string; region: string };
}

describe("three regional relays, one edge", { timeout: 180_000 }, () => {
  let agent: AgentServer;
  let edge: Edge;
  const relays = new Map<string, RelayProcess>();
  const callers: Caller[] = [];

  const startSite = (site: Site, id = `relay-${site.region}`) =>
    startRelayProcess({
      edge,
      id,
      region: site.region,
      lat: site.lat,
      lon: site.lon,
      inferenceUrl: agent.url,
      env: {
        RELAY_UDP_PORTS: `${site.udp[0]}-${site.udp[1]}`,
        RELAY_DRAIN_SECONDS: "5",
        RELAY_HEARTBEAT_SECONDS: "1",
      },
    });

  beforeAll(async () => {
    agent = await AgentServer.start({ port: 0, reply: "echo" });
    edge = await startEdge();
    for (const [name, relay] of await Promise.all(
      Object.values(SITES).map(async (site) => [site.region, await startSite(site)] as const),
    )) {
      relays.set(name, relay);
    }
    // Each relay registered itself by heartbeat: the edge places a call in every region.
    for (const site of Object.values(SITES)) {
      expect(await waitForRegion(edge, site.region)).toBe(`relay-${site.region}`);
    }
  }, 180_000);

  afterAll(async () => {
    await Promise.all(callers.map((c) => c.pc.close()));
    await Promise.all([...relays.values()].map((r) => r.stop()));
    await edge?.stop();
    await agent?.close();
  });

  /** A call placed from `geo`; returns the edge's view of it once connected. */
  async function callFrom(geo: string): Promise<{ caller: Caller; view: CallView }> {
    // The edge drops the caller's loopback candidates; the relay learns its address from the checks.
    const caller = new Caller();
    callers.push(caller);
    const response = await caller.place(edge, edge.apiKey, { "Earshot-Geo": geo });
    expect(response.status, await response.clone().text()).toBe(201);
    const view = (await (
      await fetch(`${edge.url}${caller.callPath}`, { headers: { Authorization: `Bearer ${edge.apiKey}` } })
    ).json()) as CallView;
    return { caller, view };
  }

  /** The answer's host candidates are on that relay's UDP ports, and the call carries audio both ways. */
  async function expectWorkingCallOn(caller: Caller, site: Site, tone: number) {
    const ports = candidatePorts(caller.answerSdp);
    expect(ports.length).toBeGreaterThan(0);
    for (const port of ports) {
      expect(port).toBeGreaterThanOrEqual(site.udp[0]);
      expect(port).toBeLessThanOrEqual(site.udp[1]);
    }
    await caller.connected();
    const remote = Number(caller.selectedPair()!.remoteAddress.split(":")[1]);
    expect(remote).toBeGreaterThanOrEqual(site.udp[0]);
    expect(remote).toBeLessThanOrEqual(site.udp[1]);
    // 1 s of tone, then 1 s of silence so the agent's VAD hears the turn end and echoes it.
    await caller.send(concat([sine(tone, 1000, 8000), new Int16Array(24_000)]));
    // Counted without the relay's idle keepalive, which flows while the agent listens.
    const sounding = () => caller.received.filter((p) => !isKeepalive(p)).length;
    await waitFor(() => sounding() >= 40, 15_000, "the echoed tone");
    const heard = caller.heard();
    expect(Math.abs(dominantFrequency(heard) - tone)).toBeLessThanOrEqual(10);
    expect(rms(heard)).toBeGreaterThan(1000);
  }

  it("calls from New York, Paris and Singapore land on the nearest relay and carry audio", async () => {
    for (const [place, { geo, nearest, tone }] of Object.entries(PLACES)) {
      const { caller, view } = await callFrom(geo);
      expect(view.relay, place).toEqual({ id: `relay-${nearest}`, region: nearest });
      await expectWorkingCallOn(caller, SITES[nearest], tone);
      await caller.hangUp(edge, edge.apiKey);
    }
  });

  it("a draining relay gets no new calls: Paris goes to the next nearest; a restarted relay takes them back", async () => {
    const euWest = relays.get("eu-west")!;
    // SIGTERM: the relay tells the edge it is draining, finishes (it has no calls) and exits.
    await euWest.stop("SIGTERM");
    expect(euWest.proc.exitCode).toBe(0);
    expect(euWest.output()).toContain("draining");
    expect(euWest.output()).toContain("drained; exiting");
    relays.delete("eu-west");

    const probe = new Caller();
    callers.push(probe);
    const pinned = await fetch(`${edge.url}/v1/realtime/calls?region=eu-west`, {
      method: "POST",
      headers: { Authorization: `Bearer ${edge.apiKey}`, "Content-Type": "application/sdp" },
      body: await probe.offer(),
    });
    expect(pinned.status).toBe(503);
    expect(((await pinned.json()) as { error: { code: string } }).error.code).toBe("no_relay_available");

    // Paris → us-east is about 5,900 km, Paris → ap-southeast about 10,700 km.
    const { caller, view } = await callFrom(PLACES.Paris.geo);
    expect(view.relay).toEqual({ id: "relay-us-east", region: "us-east" });
    await expectWorkingCallOn(caller, SITES["us-east"], PLACES.Paris.tone);
    await caller.hangUp(edge, edge.apiKey);

    // A new eu-west relay registers itself on start, and Paris is served from Europe again.
    relays.set("eu-west", await startSite(SITES["eu-west"], "relay-eu-west-2"));
    expect(await waitForRegion(edge, "eu-west")).toBe("relay-eu-west-2");
    const again = await callFrom(PLACES.Paris.geo);
    expect(again.view.relay).toEqual({ id: "relay-eu-west-2", region: "eu-west" });
    await expectWorkingCallOn(again.caller, SITES["eu-west"], PLACES.Paris.tone);
    await again.caller.hangUp(edge, edge.apiKey);
  });
});
