// Load generator process for the capacity benchmark: many werift clients in one process, each
// sending a 20 ms Opus packet every 20 ms and counting what comes back. Driven over IPC by
// bench/capacity.ts (which pins it to a core other than the relay's):
//   {cmd:"connect", count, target} → {connected, failed}
//   {cmd:"stats"} → {clients, packetsIn, packetsOut, gaps, lateTicks, ticks}
//   {cmd:"close"} → closes every client and exits.
import { performance } from "node:perf_hooks";
import { BenchClient, type RelayTarget } from "./lib/bench-client.ts";

type Command = { cmd: "connect"; count: number; target: RelayTarget } | { cmd: "stats" } | { cmd: "close" };

const clients: BenchClient[] = [];
let ticks = 0;
let lateTicks = 0;
const origin = performance.now();

// One drift-free 20 ms clock for all clients, like the relay's pacer.
function schedule(): void {
  const delay = origin + (ticks + 1) * 20 - performance.now();
  setTimeout(tick, Math.max(0, delay));
}
function tick(): void {
  ticks++;
  if (performance.now() - (origin + ticks * 20) > 20) lateTicks++;
  for (const c of clients) c.sendFrame();
  schedule();
}
schedule();

async function connect(count: number, target: RelayTarget): Promise<{ connected: number; failed: number }> {
  let connected = 0;
  let failed = 0;
  // A few at a time: setup is not what this measures, and a burst of DTLS handshakes would be.
  for (let i = 0; i < count; i += 4) {
    await Promise.all(
      Array.from({ length: Math.min(4, count - i) }, async () => {
        // One retry: a rare DTLS failure under load is a setup problem, not a capacity limit
        // (bench/setup.ts counts those); it is reported on stderr either way.
        for (let attempt = 0; attempt < 2; attempt++) {
          const client = new BenchClient();
          try {
            await client.connect(target);
            clients.push(client);
            connected++;
            return;
          } catch (error) {
            process.stderr.write(`connect failed: ${(error as Error).message}\n`);
            await client.close().catch(() => {});
          }
        }
        failed++;
      }),
    );
  }
  return { connected, failed };
}

process.on("message", (message: Command) => {
  void (async () => {
    switch (message.cmd) {
      case "connect":
        process.send!(await connect(message.count, message.target));
        return;
      case "stats": {
        let packetsIn = 0;
        let packetsOut = 0;
        let gaps = 0;
        for (const c of clients) {
          packetsIn += c.packetsIn;
          packetsOut += c.packetsOut;
          gaps += c.gaps;
        }
        process.send!({ clients: clients.length, packetsIn, packetsOut, gaps, lateTicks, ticks });
        return;
      }
      case "close":
        await Promise.all(clients.map((c) => c.close().catch(() => {})));
        process.exit(0);
    }
  })();
});
process.on("disconnect", () => process.exit(0));
