// TURN end to end: Debian's coturn with `use-auth-secret` on loopback, the edge (wrangler dev)
// configured with EARSHOT_TURN_URLS / EARSHOT_TURN_SECRET, a relay process and the built-in agent.
// A client restricted to relay candidates completes a call with the edge-issued credentials and
// hears its own tone echoed back through TURN; expired and forged credentials get coturn's 401.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentServer } from "../../agent/agent-server.ts";
import {
  allocate,
  Caller,
  candidatePorts,
  mintClientSecret,
  restCredential,
  startEdgeWithTurn,
  startTurnServer,
  waitForRegion,
  type TurnServer,
} from "./fixtures.ts";
import { freePort, waitFor } from "../support/loopback.ts";
import { concat, dominantFrequency, isKeepalive, rms, sine } from "../support/audio.ts";
import { type Edge, type RelayProcess, startRelayProcess } from "../support/relays.ts";

const hasCoturn = (() => {
  try {
    execFileSync("turnserver", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

// coturn comes from Debian's package (.ci/run installs it); without it this suite cannot run.
describe.skipIf(!hasCoturn)("TURN through coturn", { timeout: 120_000 }, () => {
  const secret = randomBytes(24).toString("base64url");
  const relayPorts: [number, number] = [31_000 + (process.pid % 200) * 10, 31_009 + (process.pid % 200) * 10];
  let dir: string;
  let turn: TurnServer;
  let agent: AgentServer;
  let edge: Edge;
  let relay: RelayProcess;
  const callers: Caller[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "earshot-turn-"));
    turn = await startTurnServer({ port: await freePort(), secret, relayPorts, pidDir: dir });
    agent = await AgentServer.start({ port: 0, reply: "echo" });
    edge = await startEdgeWithTurn({ urls: turn.url, secret });
    relay = await startRelayProcess({
      edge,
      region: "local",
      inferenceUrl: agent.url,
      env: { RELAY_UDP_PORTS: "32100-32199" },
    });
    await waitForRegion(edge, "local");
  }, 120_000);

  afterAll(async () => {
    await Promise.all(callers.map((c) => c.pc.close()));
    await relay?.stop();
    await edge?.stop();
    await agent?.close();
    await turn?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("a relay-only client completes a call through TURN with the edge's credentials and hears its tone", async () => {
    const minted = await mintClientSecret(edge);
    expect(minted.ice_servers).toHaveLength(1);
    const [server] = minted.ice_servers;
    expect(server!.urls).toEqual([turn.url]);

    // The edge strips loopback candidates, and coturn's relayed address is 127.0.0.1 here (a
    // public address in production): the relay learns it as peer-reflexive from the checks
    // arriving through coturn.
    const caller = new Caller({ iceServers: minted.ice_servers, relayOnly: true });
    callers.push(caller);
    const offer = await caller.offer();
    // Only relayed candidates, on coturn's relay port range: no host address leaks.
    expect(candidatePorts(offer, "host")).toEqual([]);
    const relayed = candidatePorts(offer, "relay");
    expect(relayed.length).toBeGreaterThanOrEqual(1);
    for (const port of relayed) {
      expect(port).toBeGreaterThanOrEqual(relayPorts[0]);
      expect(port).toBeLessThanOrEqual(relayPorts[1]);
    }

    const response = await caller.place(edge, minted.value);
    expect(response.status, await response.clone().text()).toBe(201);
    await caller.connected();
    expect(caller.selectedPair()).toMatchObject({ local: "relay", remote: "host" });

    // 1 s of 440 Hz; the built-in agent in echo mode answers in the caller's own pitch.
    await caller.send(concat([sine(440, 1000, 8000), new Int16Array(24_000)]));
    // Counted without the relay's idle keepalive, which flows while the agent listens.
    const sounding = () => caller.received.filter((p) => !isKeepalive(p)).length;
    await waitFor(() => sounding() >= 50, 15_000, "1 s of the echoed reply");
    const heard = caller.heard();
    expect(Math.abs(dominantFrequency(heard) - 440)).toBeLessThanOrEqual(10);
    expect(rms(heard)).toBeGreaterThan(1000);
    // coturn carried it: it logged the allocation for this credential's username.
    expect(turn.output()).toContain(server!.username);
    await caller.hangUp(edge, minted.value);
  });

  it("coturn accepts the edge's credential and refuses expired, forged and altered ones with 401", async () => {
    const { ice_servers } = await mintClientSecret(edge);
    const { username, credential } = ice_servers[0]!;
    // The edge's WebCrypto HMAC agrees with node:crypto's.
    expect(credential).toBe(restCredential(secret, username));
    expect(await allocate(turn.port, username, credential)).toMatchObject({ ok: true });

    const past = `${Math.floor(Date.now() / 1000) - 60}:cs_expired`;
    expect(await allocate(turn.port, past, restCredential(secret, past))).toMatchObject({
      ok: false,
      status: 401,
    });

    const forged = restCredential("not-the-turn-secret-at-all", username);
    expect(await allocate(turn.port, username, forged)).toMatchObject({ ok: false, status: 401 });

    // Pushing the expiry forward breaks the HMAC.
    const [expiry, id] = username.split(":");
    const extended = `${Number(expiry) + 86_400}:${id}`;
    expect(await allocate(turn.port, extended, credential)).toMatchObject({ ok: false, status: 401 });
  });

  it("with a forged credential a relay-only client gathers nothing and the call never connects", async () => {
    const { value, ice_servers } = await mintClientSecret(edge);
    const forged = [{ ...ice_servers[0]!, credential: restCredential("not-the-turn-secret-at-all", "x") }];
    const caller = new Caller({ iceServers: forged, relayOnly: true });
    callers.push(caller);
    const offer = await caller.offer();
    expect(candidatePorts(offer, "relay")).toEqual([]);
    expect(candidatePorts(offer, "host")).toEqual([]);
    const response = await caller.place(edge, value);
    // The edge and relay accept the offer; ICE has nothing to pair, so no media path exists.
    expect(response.status).toBe(201);
    await expect(caller.connected(3000)).rejects.toThrow(/timed out/);
    expect(caller.selectedPair()).toBeUndefined();
    await caller.hangUp(edge, value);
  });
});
