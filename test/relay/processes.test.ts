// RELAY_PROCESSES: one `node relay/main.ts` supervising N real relay processes, each a complete
// relay with its own id, HTTP port and UDP slice. Calls are real werift calls with audio both
// ways through the echoing built-in agent; the processes are killed and signalled for real.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  EventClient,
  connectViaEdge,
  callRelay,
  expectEchoOf,
  freePort,
  getCallView,
  startEdgeOn,
  udpRange,
  waitUntil,
  type EdgeProcess,
} from "../faults/fixtures.ts";
import { root, waitFor, withTimeout } from "../support/loopback.ts";
import { bootIdOf, postCall, TEST_RELAY_ID, ticketFor } from "../support/relay-api.ts";
import {
  type RelayProcess,
  relaysAtEdge,
  startRelayProcess,
  testEnv,
  waitForRelayAtEdge,
} from "../support/relays.ts";

/** `node relay/main.ts` with `env` (RELAY_PROCESSES: a supervisor), ready once a relay listens. */
function startHost(env: Record<string, string>): Promise<RelayProcess> {
  return startRelayProcess({ id: TEST_RELAY_ID, env, readyWhen: "listening" });
}

/** `count` consecutive free TCP ports on loopback, for relays listening on base + i - 1. */
async function freePortRun(count: number): Promise<number> {
  for (;;) {
    const base = await freePort();
    if (base + count - 1 > 65535) continue;
    const free = await Promise.all(Array.from({ length: count - 1 }, (_, i) => portIsFree(base + i + 1)));
    if (free.every(Boolean)) return base;
  }
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The supervisor's log: the pid each relay process was last started with, and how often. */
function relayStarts(relays: RelayProcess): Map<number, number[]> {
  const starts = new Map<number, number[]>();
  for (const line of relays.output().split("\n")) {
    if (!line.includes('"relay process started"')) continue;
    const { worker, pid } = JSON.parse(line) as { worker: number; pid: number };
    starts.set(worker, [...(starts.get(worker) ?? []), pid]);
  }
  return starts;
}

async function healthy(url: string): Promise<{ status: string; relay_id: string } | undefined> {
  const response = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
  return response.ok ? ((await response.json()) as { status: string; relay_id: string }) : undefined;
}

/** Host-candidate ports in an SDP answer. */
function candidatePorts(sdp: string): number[] {
  return [...sdp.matchAll(/^a=candidate:\S+ \d+ udp \d+ \S+ (\d+) typ/gm)].map((m) => Number(m[1]));
}

/** The supervisor's children, whatever state the test left them in. */
function killAll(relays: RelayProcess | undefined): void {
  if (!relays) return;
  void relays.stop("SIGKILL");
  for (const pids of relayStarts(relays).values())
    for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
}

describe("RELAY_PROCESSES=2 on one host", { timeout: 120_000 }, () => {
  let relays: RelayProcess;
  let base: number;
  let slices: [number, number][];
  let env: Record<string, string>;
  /** The image's HEALTHCHECK, run with the relays' configuration. */
  const healthcheck = () =>
    spawnSync(process.execPath, ["deploy/relay/healthcheck.ts"], {
      cwd: root,
      env: { PATH: process.env.PATH, ...testEnv(env) } as unknown as NodeJS.ProcessEnv,
    }).status;
  const urls: string[] = [];
  const clients: EventClient[] = [];

  beforeAll(async () => {
    base = await freePortRun(2);
    const [lo, hi] = udpRange().split("-").map(Number) as [number, number];
    const half = Math.floor((hi - lo + 1) / 2);
    slices = [
      [lo, lo + half - 1],
      [lo + half, lo + 2 * half - 1],
    ];
    env = {
      RELAY_PROCESSES: "2",
      RELAY_HTTP_PORT: String(base),
      RELAY_UDP_PORTS: `${lo}-${hi}`,
      RELAY_VAD: "off",
      RELAY_DRAIN_SECONDS: "3",
    };
    relays = await startHost(env);
    urls.push(`http://127.0.0.1:${base}`, `http://127.0.0.1:${base + 1}`);
    for (const url of urls) await waitUntil(`${url} to answer`, () => healthy(url), 15_000);
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    killAll(relays);
  });

  it("runs two relays, each on its own port under its own id, carrying calls with audio in its own UDP slice", async () => {
    expect(await healthy(urls[0]!)).toMatchObject({ status: "ok", relay_id: "relay-test-1" });
    expect(await healthy(urls[1]!)).toMatchObject({ status: "ok", relay_id: "relay-test-2" });
    const starts = relayStarts(relays);
    expect([...starts.keys()].sort()).toEqual([1, 2]);
    expect(starts.get(1)![0]).not.toBe(starts.get(2)![0]);
    expect(healthcheck()).toBe(0);

    for (const [i, url] of urls.entries()) {
      const client = await callRelay(url, new EventClient(), `relay-test-${i + 1}`);
      clients.push(client);
      await expectEchoOf(client, i === 0 ? 440 : 660);
      const ports = candidatePorts(client.pc.remoteDescription!.sdp);
      expect(ports.length).toBeGreaterThan(0);
      for (const port of ports) {
        expect(port).toBeGreaterThanOrEqual(slices[i]![0]);
        expect(port).toBeLessThanOrEqual(slices[i]![1]);
      }
    }
    // A ticket names the relay it was signed for: the sibling on the same host refuses it.
    const stray = new EventClient();
    clients.push(stray);
    const offer = await stray.offer();
    const refused = await postCall(
      urls[1]!,
      { call_id: stray.callId, offer_sdp: offer },
      await ticketFor(stray.callId, offer, {}, { relayId: "relay-test-1", bootId: await bootIdOf(urls[1]!) }),
    );
    expect(refused.status).toBe(403);
  });

  it("restarts a relay killed outright on the same port; its sibling's call carries on", async () => {
    const second = clients[1]!;
    const victim = relayStarts(relays).get(1)![0]!;
    const survivor = relayStarts(relays).get(2)![0]!;
    process.kill(victim, "SIGKILL");
    await waitUntil(
      "relay-test-1 to be restarted",
      () => relayStarts(relays).get(1)!.length === 2 || undefined,
      10_000,
    );
    await waitUntil("relay-test-1 to answer again", () => healthy(urls[0]!), 10_000);
    expect(relays.output()).toMatch(
      /"worker":1,"relay_id":"relay-test-1".*"signal":"SIGKILL".*relay process died; restarting/,
    );

    // The killed relay's call died with it; the new process takes a new call on the same port.
    const again = await callRelay(urls[0]!, new EventClient(), "relay-test-1");
    clients.push(again);
    await expectEchoOf(again, 523);

    // The sibling never stopped: same process, same call, still echoing.
    expect(relayStarts(relays).get(2)).toEqual([survivor]);
    expect(second.pc.connectionState).toBe("connected");
    await expectEchoOf(second, 880);
    expect(second.errors()).toEqual([]);
  });

  it("drains every relay on SIGTERM to the supervisor; all exit 0 and free their ports", async () => {
    const pids = [...relayStarts(relays).values()].map((p) => p.at(-1)!);
    const startsBefore = relays.output().split('"relay process started"').length;
    relays.proc.kill("SIGTERM");
    // RELAY_DRAIN_SECONDS=3: the open calls hold the drain to the deadline, then end.
    expect(await withTimeout(relays.exited, 20_000, "the supervisor to exit")).toBe(0);
    for (const pid of pids) expect(alive(pid), `relay pid ${pid}`).toBe(false);
    const output = relays.output();
    expect(output.split('"relay process started"').length).toBe(startsBefore);
    for (const id of ["relay-test-1", "relay-test-2"])
      expect(output).toMatch(new RegExp(`"relay_id":"${id}".*"reason":"relay_draining".*"call ended"`));
    expect(await portIsFree(base)).toBe(true);
    expect(await portIsFree(base + 1)).toBe(true);
    expect(healthcheck()).toBe(1);
  });
});

describe("RELAY_PROCESSES refusals", () => {
  const run = (env: Record<string, string>) =>
    spawnSync(process.execPath, ["relay/main.ts"], {
      cwd: root,
      env: { PATH: process.env.PATH, ...testEnv(env) } as unknown as NodeJS.ProcessEnv,
      encoding: "utf8",
      timeout: 15_000,
    });

  it.each(["0", "257", "x"])("RELAY_PROCESSES=%s exits 78 naming the variable", (value) => {
    const result = run({ RELAY_PROCESSES: value, RELAY_HTTP_PORT: "18790" });
    expect(result.status).toBe(78);
    expect(result.stderr).toContain("RELAY_PROCESSES");
  });

  it("a UDP range too small to split exits 78 naming RELAY_UDP_PORTS", () => {
    const result = run({
      RELAY_PROCESSES: "2",
      RELAY_HTTP_PORT: "18790",
      RELAY_UDP_PORTS: "40000-40002",
      RELAY_CAPACITY: "1",
    });
    expect(result.status).toBe(78);
    expect(result.stderr).toContain("RELAY_UDP_PORTS");
  });
});

const hasOpenssl = spawnSync("openssl", ["version"]).status === 0;

describe.skipIf(!hasOpenssl)("a relay that refuses its configuration", { timeout: 60_000 }, () => {
  let dir: string;
  let relays: RelayProcess | undefined;
  afterAll(() => {
    killAll(relays);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("stops the supervisor with 78 instead of a restart loop", async () => {
    dir = mkdtempSync(join(tmpdir(), "earshot-processes-"));
    const cert = join(dir, "cert.pem");
    const key = join(dir, "key.pem");
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"].concat([
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        key,
        "-out",
        cert,
      ]),
      { stdio: "ignore" },
    );
    relays = await startHost({
      RELAY_PROCESSES: "2",
      RELAY_HTTP_PORT: String(await freePortRun(2)),
      RELAY_UDP_PORTS: udpRange(),
      RELAY_TLS_CERT: cert,
      RELAY_TLS_KEY: key,
    });
    await waitFor(
      () => relays!.output().split("relay listening").length === 3,
      15_000,
      "both relays listening",
    );
    // The certificate goes away under a running host; the next relay to start cannot read it.
    rmSync(cert);
    process.kill(relayStarts(relays).get(1)![0]!, "SIGKILL");
    expect(await withTimeout(relays.exited, 20_000, "the supervisor to exit")).toBe(78);
    const output = relays.output();
    expect(output).toContain("RELAY_TLS_CERT");
    expect(output).toContain("refused its configuration");
    expect(relayStarts(relays).get(1)).toHaveLength(2);
    for (const pids of relayStarts(relays).values()) for (const pid of pids) expect(alive(pid)).toBe(false);
  });
});

describe("the supervisor's own life", { timeout: 60_000 }, () => {
  const started: RelayProcess[] = [];
  afterAll(() => started.forEach(killAll));

  async function startTwo(
    env: Record<string, string> = {},
  ): Promise<{ relays: RelayProcess; urls: string[] }> {
    const base = await freePortRun(2);
    const relays = await startHost({
      RELAY_PROCESSES: "2",
      RELAY_HTTP_PORT: String(base),
      RELAY_UDP_PORTS: udpRange(),
      RELAY_VAD: "off",
      ...env,
    });
    started.push(relays);
    const urls = [`http://127.0.0.1:${base}`, `http://127.0.0.1:${base + 1}`];
    for (const url of urls) await waitUntil(`${url} to answer`, () => healthy(url), 15_000);
    return { relays, urls };
  }

  it("a second signal during the drain ends every process at once", async () => {
    const { relays, urls } = await startTwo({ RELAY_DRAIN_SECONDS: "60" });
    const client = await callRelay(urls[0]!, new EventClient(), "relay-test-1");
    const pids = [...relayStarts(relays).values()].map((p) => p[0]!);
    relays.proc.kill("SIGTERM");
    await waitUntil("relay-test-1 to drain", async () => (await healthy(urls[0]!))?.status === "draining");
    relays.proc.kill("SIGTERM");
    // The call would have held the drain for 60 s.
    expect(await withTimeout(relays.exited, 5000, "the supervisor to exit")).toBe(1);
    await waitUntil("every relay to exit", () => pids.every((pid) => !alive(pid)) || undefined, 5000);
    await client.close();
  });

  it("restarts a relay that keeps dying later each time; a supervisor killed outright leaves no relay behind", async () => {
    const { relays, urls } = await startTwo();
    for (const expected of [1000, 2000]) {
      const pid = relayStarts(relays).get(2)!.at(-1)!;
      const deaths = relays.output().split("relay process died").length;
      process.kill(pid, "SIGKILL");
      await waitUntil(
        "the death to be logged",
        () => relays.output().split("relay process died").length > deaths || undefined,
        5000,
      );
      expect(relays.output()).toContain(`"restart_in_ms":${expected}`);
      await waitUntil(
        "relay-test-2 to be back",
        async () => relayStarts(relays).get(2)!.at(-1) !== pid && (await healthy(urls[1]!)),
        15_000,
      );
    }
    const pids = [...relayStarts(relays).values()].map((p) => p.at(-1)!);
    relays.proc.kill("SIGKILL");
    // Orphaned, each relay notices its supervisor is gone and drains (no calls: at once).
    await waitUntil(
      "the orphaned relays to exit",
      () => pids.every((pid) => !alive(pid)) || undefined,
      10_000,
    );
    expect(await portIsFree(Number(new URL(urls[0]!).port))).toBe(true);
  });
});

describe("RELAY_PROCESSES=2 behind a real edge", { timeout: 180_000 }, () => {
  let edge: EdgeProcess;
  let relays: RelayProcess;
  const clients: EventClient[] = [];
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    killAll(relays);
    await edge?.stop();
  });

  it("registers as two relays at one location, and the edge spreads calls between them", async () => {
    edge = await startEdgeOn();
    const base = await freePortRun(2);
    relays = await startHost({
      RELAY_PROCESSES: "2",
      RELAY_ID: "fra",
      RELAY_HTTP_PORT: String(base),
      RELAY_PUBLIC_URL: `http://127.0.0.1:${base}`,
      RELAY_UDP_PORTS: udpRange(),
      EARSHOT_EDGE_URL: edge.url,
      EARSHOT_RELAY_SECRET: edge.relaySecret,
      RELAY_HEARTBEAT_SECONDS: "1",
      RELAY_VAD: "off",
    });
    await waitForRelayAtEdge(edge, "fra-1");
    await waitForRelayAtEdge(edge, "fra-2");
    expect((await relaysAtEdge(edge)).map((r) => r.relay_id).sort()).toEqual(["fra-1", "fra-2"]);

    // The same distance to both: the first call goes to one, its load sends the second to the other.
    const chosen: string[] = [];
    for (let i = 0; i < 2; i++) {
      const client = await connectViaEdge(edge, clients);
      const relayId = (await getCallView(edge.url, edge.apiKey, client.edgeCallId)).relay.id;
      chosen.push(relayId);
      // A heartbeat carries the call to the registry (and the edge's cached copy) before the next one.
      await waitUntil("the edge to see the call on its relay", async () =>
        (await relaysAtEdge(edge)).some((r) => r.relay_id === relayId && r.active_calls === 1),
      );
    }
    expect(chosen.sort()).toEqual(["fra-1", "fra-2"]);
  });
});
