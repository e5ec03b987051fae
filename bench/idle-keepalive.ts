// What the idle downlink's keepalive costs (issue 18): a relay process holds N connected calls
// that are silent both ways (the model says nothing, the clients send nothing), and its CPU
// time is read from /proc over a window. With the keepalive, each idle call sends a 3-byte Opus
// silence frame every 300 ms (SRTP-protected, one UDP datagram); without it, nothing.
// `--baseline=DIR` runs the same measurement, interleaved, against another checkout's relay
// (e.g. `git worktree add DIR <commit before the keepalive>`), so both see the same load.
//   npx node bench/idle-keepalive.ts [--calls=50] [--seconds=20] [--rounds=2] [--baseline=DIR]
import { join } from "node:path";
import { BenchClient } from "./lib/bench-client.ts";
import { cpuSeconds, loadAverage } from "./lib/procs.ts";
import { TEST_SECRET } from "../test/support/relay-api.ts";
import { startRelayProcess } from "../test/support/relays.ts";
import { AgentServer } from "../agent/agent-server.ts";

const arg = (name: string, fallback: string) =>
  process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback;
const CALLS = Number(arg("calls", "50"));
const SECONDS = Number(arg("seconds", "20"));
const ROUNDS = Number(arg("rounds", "2"));
const baseline = arg("baseline", "");

/** Relay CPU ms per idle call per second, with `calls` idle calls held for SECONDS. */
async function idleCost(main: string | undefined, calls: number): Promise<number> {
  // The built-in agent, told nothing, says nothing: the calls stay idle.
  const agent = await AgentServer.start({ port: 0, reply: "echo" });
  const relay = await startRelayProcess({
    secret: TEST_SECRET,
    inferenceUrl: agent.url,
    main,
    env: { LOG_LEVEL: "warn", RELAY_VAD: "off" },
  });
  const clients: BenchClient[] = [];
  try {
    const target = { kind: "relay" as const, url: relay.url, relayId: relay.id, secret: TEST_SECRET };
    for (let i = 0; i < calls; i++) {
      const client = new BenchClient();
      clients.push(client);
      await client.connect(target);
    }
    await new Promise((r) => setTimeout(r, 2000)); // set-up work settles
    const before = cpuSeconds(relay.pid);
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    return ((cpuSeconds(relay.pid) - before) * 1000) / SECONDS / Math.max(1, calls);
  } finally {
    await Promise.all(clients.map((c) => c.peer.close()));
    await relay.stop("SIGKILL");
    await agent.close();
  }
}

const runs: { build: string; perCallMsPerS: number }[] = [];
for (let round = 0; round < ROUNDS; round++) {
  runs.push({ build: "this", perCallMsPerS: await idleCost(undefined, CALLS) });
  if (baseline) {
    runs.push({ build: "baseline", perCallMsPerS: await idleCost(join(baseline, "relay/main.ts"), CALLS) });
  }
}
for (const run of runs)
  console.log(
    `${run.build}: ${CALLS} idle calls, ${run.perCallMsPerS.toFixed(3)} ms relay CPU per call per second`,
  );
console.log(`load average ${loadAverage()}`);
process.exit(0); // werift clients keep handles open
