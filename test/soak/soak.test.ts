// Soak (issue 7): many calls opened and closed, in sequence and in parallel, against one real
// relay process bridging to the built-in agent. Afterwards the relay's RSS is flat (after a
// warm-up, within RSS_MARGIN_MB), its UDP sockets and file descriptors are back at baseline,
// it reports no active call, and it never printed an unhandled rejection.
//   npm test:                ~30 calls in about 30 s
//   EARSHOT_SOAK=long:        calls for 10 minutes (SOAK_MINUTES overrides)
import { readdirSync, readFileSync } from "node:fs";
import { afterAll, beforeAll, expect, it } from "vitest";
import { AgentServer } from "../../agent/agent-server.ts";
import { EventClient, callRelay, startRelayProc, type RelayProcess } from "../faults/fixtures.ts";
import { waitFor } from "../support/loopback.ts";
import { concat, isKeepalive, sine } from "../support/audio.ts";
import { TEST_SECRET } from "../support/relay-api.ts";

const LONG = process.env.EARSHOT_SOAK === "long";
const SOAK_MS = LONG ? Number(process.env.SOAK_MINUTES ?? 10) * 60_000 : 0;
/** RSS growth allowed after warm-up: V8 heap growth and allocator slack, not a per-call leak. */
const RSS_MARGIN_MB = LONG ? 40 : 30;
const PARALLEL = 4;

let agent: AgentServer;
let relay: RelayProcess;

beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, reply: "echo" });
  relay = await startRelayProc({
    id: "relay-test",
    secret: TEST_SECRET,
    inferenceUrl: `${agent.url}?reply=echo`,
    env: { RELAY_ECHO_SUPPRESSION: "0", RELAY_CAPACITY: "50" },
  });
}, 60_000);
afterAll(async () => {
  await relay?.stop("SIGKILL");
  await agent?.close();
});

function rssMb(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb) / 1024;
}
const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const udpHere = () => process.getActiveResourcesInfo().filter((r) => r === "UDPWRAP").length;

/** One whole call: connect, configure, talk 300 ms, hear the start of the reply, hang up. */
async function oneCall(): Promise<void> {
  const client = new EventClient();
  try {
    await callRelay(relay.url, client);
    await client.sendPackets(
      client.encodeFrames(concat([sine(440, 300, 8000), new Int16Array(24_000 * 0.7)])),
    );
    await waitFor(() => client.received.filter((p) => !isKeepalive(p)).length >= 5, 10_000, "reply audio");
  } finally {
    await client.close();
  }
}

async function round(calls: number, parallel: number): Promise<void> {
  for (let done = 0; done < calls; done += parallel) {
    await Promise.all(Array.from({ length: Math.min(parallel, calls - done) }, () => oneCall()));
  }
}

async function settled(): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if ((await relay.health()).active_calls === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  // Let closed sockets and timers go, and idle keep-alive connections time out (5 s), before counting.
  await new Promise((resolve) => setTimeout(resolve, 5500));
}

it(
  `opens and closes calls in sequence and in parallel; RSS flat, sockets and calls back to baseline${LONG ? " (long)" : ""}`,
  async () => {
    const pid = relay.proc.pid!;
    const udpTestBefore = udpHere();
    const udpRelayIdle = relay.udpSockets();
    const fdsIdle = fds(pid);

    // Warm-up: code paths, JIT, Opus and WebSocket pools, V8 heap sizing.
    await round(4, 1);
    await round(4, PARALLEL);
    await settled();
    const rssWarm = rssMb(pid);
    const started = Date.now();
    let calls = 0;

    do {
      await round(6, 1);
      await round(16, PARALLEL);
      calls += 22;
    } while (Date.now() - started < SOAK_MS);
    await settled();
    const rssAfter = rssMb(pid);
    const seconds = Math.round((Date.now() - started) / 1000);

    console.log(
      `soak: ${calls} calls after 8 warm-up in ${seconds} s; relay RSS ${rssWarm.toFixed(1)} MB after warm-up → ` +
        `${rssAfter.toFixed(1)} MB after (${(rssAfter - rssWarm).toFixed(1)} MB); fds ${fdsIdle} idle → ${fds(pid)}; ` +
        `UDP sockets ${udpRelayIdle} idle → ${relay.udpSockets()}`,
    );
    expect((await relay.health()).active_calls).toBe(0);
    expect(await relay.metric("earshot_relay_active_calls")).toBe(0);
    expect(await relay.metric("earshot_relay_calls_total")).toBe(calls + 8);
    expect(relay.udpSockets()).toBe(udpRelayIdle);
    // A few TCP connections of the test's own /healthz and /metrics probes may be open; one call
    // holds several descriptors (UDP, the upstream WebSocket), so a per-call leak exceeds this.
    expect(fds(pid)).toBeLessThanOrEqual(fdsIdle + 4);
    expect(rssAfter - rssWarm).toBeLessThan(RSS_MARGIN_MB);
    expect(udpHere()).toBe(udpTestBefore);
    expect(relay.output()).not.toMatch(/unhandled rejection|uncaughtException|UnhandledPromiseRejection/i);
    expect(relay.output()).not.toMatch(/"level":(50|60)/); // no error or fatal log line
  },
  LONG ? SOAK_MS + 300_000 : 180_000,
);
