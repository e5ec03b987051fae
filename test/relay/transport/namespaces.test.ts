// Clients on hosts of their own: three network namespaces made by this test, each a werift
// client with its own address, joined by veth pairs to a bridge in this namespace that holds the
// relay's media address. Every call comes in on the relay's one shared UDP port from a distinct
// address, as in production, and carries its own audio both ways: to one relay process, and to
// the host's port shared by two relay processes behind the dispatcher. Skipped, saying why, where the
// machine allows no namespaces (CI runs as root and does).
import { execFileSync, spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CreateCallResponse } from "../../../protocol/relay-api.ts";
import { dominantFrequency, sine } from "../../support/audio.ts";
import { root, waitFor } from "../../support/loopback.ts";
import { bootIdOf, newCallId, postCall, ticketFor } from "../../support/relay-api.ts";
import { startRelay, type InProcessRelay, type RelayProcess } from "../../support/relays.ts";
import { RecordingBridge } from "../fixtures.ts";
import { HOST_RELAYS_START_MS, startHostRelays, type HostRelays } from "./host-relays.ts";

const CLIENTS = 3;
/** A /24 of 198.18.0.0/15 (RFC 2544, benchmarking), picked at random so runs don't collide. */
const SUBNET = `198.18.${Math.floor(Math.random() * 250) + 2}`;
const TAG = SUBNET.split(".")[2]!;
const BRIDGE = `es-br${TAG}`;
const namespace = (i: number) => `es-c${TAG}-${i}`;
const hostSide = (i: number) => `es-v${TAG}-${i}`;
const clientAddress = (i: number) => `${SUBNET}.${10 + i}`;
const RELAY_ADDRESS = `${SUBNET}.1`;

const ip = (...args: string[]) => execFileSync("ip", args, { stdio: "pipe" });

/** Why namespaces cannot be used here, or undefined when they can. */
function namespacesUnavailable(): string | undefined {
  if (process.platform !== "linux") return "not Linux";
  const probe = spawnSync("ip", ["netns", "add", `es-probe-${process.pid}`], { encoding: "utf8" });
  if (probe.status !== 0) return `\`ip netns add\` failed: ${(probe.stderr || String(probe.error)).trim()}`;
  spawnSync("ip", ["netns", "del", `es-probe-${process.pid}`]);
  // The subnet must be nobody's here: no address in it and no route more specific than the default.
  const routes = execFileSync("ip", ["-4", "route", "show"], { encoding: "utf8" });
  const addresses = execFileSync("ip", ["-4", "-o", "addr", "show"], { encoding: "utf8" });
  if (routes.includes(`${SUBNET}.`) || addresses.includes(`${SUBNET}.`)) return `${SUBNET}.0/24 is in use`;
  const via = execFileSync("ip", ["route", "get", RELAY_ADDRESS], { encoding: "utf8" });
  if (/\blocal\b/.test(via)) return `${RELAY_ADDRESS} is local already`;
  return undefined;
}

const unavailable = namespacesUnavailable();
if (unavailable) console.warn(`[skip] namespace tests: ${unavailable}`);

function tearDown(): void {
  for (let i = 0; i < CLIENTS; i++) spawnSync("ip", ["netns", "del", namespace(i)]);
  spawnSync("ip", ["link", "del", BRIDGE]);
}

function setUp(): void {
  ip("link", "add", BRIDGE, "type", "bridge");
  ip("addr", "add", `${RELAY_ADDRESS}/24`, "dev", BRIDGE);
  ip("link", "set", BRIDGE, "up");
  for (let i = 0; i < CLIENTS; i++) {
    ip("netns", "add", namespace(i));
    ip("link", "add", hostSide(i), "type", "veth", "peer", "name", "eth0", "netns", namespace(i));
    ip("link", "set", hostSide(i), "master", BRIDGE, "up");
    ip("-n", namespace(i), "addr", "add", `${clientAddress(i)}/24`, "dev", "eth0");
    ip("-n", namespace(i), "link", "set", "eth0", "up");
    ip("-n", namespace(i), "link", "set", "lo", "up");
  }
}

/** One client process in its namespace, spoken to by JSON lines. */
class NamespaceClient {
  readonly callId = newCallId();
  readonly #proc: ChildProcessWithoutNullStreams;
  readonly #lines: AsyncIterator<string>;
  #stderr = "";

  constructor(i: number, upHz: number) {
    this.#proc = spawn(
      "ip",
      [
        "netns",
        "exec",
        namespace(i),
        process.execPath,
        "test/relay/transport/netns-client.ts",
        clientAddress(i),
        String(upHz),
      ],
      { cwd: root, env: { ...process.env, FORCE_COLOR: "0" } },
    );
    this.#proc.stderr.on("data", (chunk: Buffer) => (this.#stderr += chunk.toString()));
    this.#lines = createInterface({ input: this.#proc.stdout })[Symbol.asyncIterator]();
  }

  async read<T>(): Promise<T> {
    const next = await this.#lines.next();
    if (next.done) throw new Error(`namespace client exited: ${this.#stderr.slice(-2000)}`);
    return JSON.parse(next.value) as T;
  }

  send(message: object): void {
    this.#proc.stdin.write(`${JSON.stringify(message)}\n`);
  }

  kill(): void {
    this.#proc.kill("SIGKILL");
  }
}

beforeAll(() => {
  if (unavailable) return;
  tearDown(); // leftovers of a killed run with the same subnet
  setUp();
});
afterAll(() => {
  if (!unavailable) tearDown();
});

describe.skipIf(unavailable !== undefined)(
  "clients on hosts of their own (network namespaces)",
  { timeout: 90_000 },
  () => {
    let relay: InProcessRelay;
    const clients: NamespaceClient[] = [];

    beforeAll(async () => {
      relay = await startRelay({
        bridgeFactory: RecordingBridge.factory,
        env: { RELAY_UDP_PORT: "0", RELAY_MEDIA_IP: RELAY_ADDRESS },
      });
    });

    afterAll(async () => {
      for (const client of clients) client.kill();
      await relay?.close();
    });

    it("takes each client's call on the one port, from its own address, with its own audio both ways", async () => {
      const up = (i: number) => 400 + 150 * i;
      const down = (i: number) => 475 + 150 * i;
      await Promise.all(
        Array.from({ length: CLIENTS }, async (_, i) => {
          const client = new NamespaceClient(i, up(i));
          clients[i] = client;
          const { offer } = await client.read<{ offer: string }>();
          const ticket = await ticketFor(client.callId, offer, {}, { bootId: await bootIdOf(relay.url) });
          const response = await postCall(relay.url, { call_id: client.callId, offer_sdp: offer }, ticket);
          expect(response.status).toBe(201);
          const { answer_sdp } = (await response.json()) as CreateCallResponse;
          expect(answer_sdp).toContain(` ${RELAY_ADDRESS} ${relay.udpMux!.port} typ host`);
          client.send({ answer: answer_sdp });
          const { pair } = await client.read<{ pair: { remoteAddress: string } }>();
          expect(pair.remoteAddress).toBe(`${RELAY_ADDRESS}:${relay.udpMux!.port}`);
        }),
      );
      // Every call is live on the one socket, each bound to its client's own address.
      expect(relay.udpMux!.stats).toMatchObject({ ufrags: CLIENTS, addresses: CLIENTS });
      await Promise.all(
        clients.map(async (client, i) => {
          const bridge = RecordingBridge.of(client.callId);
          const tone = sine(down(i), 1000, 8000);
          for (let at = 0; at < tone.length; at += 2400)
            bridge.ctx.downlink.push("item_1", 0, tone.subarray(at, at + 2400));
          await waitFor(() => bridge.frames.length >= 50, 10_000, `uplink of client ${i}`);
          expect(Math.abs(dominantFrequency(bridge.pcm().subarray(4800)) - up(i))).toBeLessThanOrEqual(10);
          client.send({ report: true });
          const heard = await client.read<{ packets: number; downHz: number }>();
          expect(heard.packets).toBeGreaterThanOrEqual(45);
          expect(Math.abs(heard.downHz - down(i))).toBeLessThanOrEqual(10);
        }),
      );
    });
  },
);

describe.skipIf(unavailable !== undefined)(
  "clients on hosts of their own, calling the host's one port shared by RELAY_PROCESSES=2",
  { timeout: 90_000 },
  () => {
    let host: RelayProcess;
    let udpPort: number;
    let url: HostRelays["url"];
    let relayId: HostRelays["relayId"];
    const clients: NamespaceClient[] = [];

    beforeAll(async () => {
      ({ host, udpPort, url, relayId } = await startHostRelays(RELAY_ADDRESS));
    }, HOST_RELAYS_START_MS);

    afterAll(async () => {
      for (const client of clients) client.kill();
      await host?.stop("SIGTERM");
    });

    it("spreads the clients' calls over both processes, each from its own address with its own audio both ways", async () => {
      const up = (i: number) => 400 + 150 * i;
      await Promise.all(
        Array.from({ length: CLIENTS }, async (_, i) => {
          const client = new NamespaceClient(i, up(i));
          clients[i] = client;
          const worker = (i % 2) + 1;
          const { offer } = await client.read<{ offer: string }>();
          const ticket = await ticketFor(
            client.callId,
            offer,
            {},
            {
              bootId: await bootIdOf(url(worker)),
              relayId: relayId(worker),
            },
          );
          const response = await postCall(url(worker), { call_id: client.callId, offer_sdp: offer }, ticket);
          expect(response.status).toBe(201);
          const { answer_sdp } = (await response.json()) as CreateCallResponse;
          expect(answer_sdp).toContain(` ${RELAY_ADDRESS} ${udpPort} typ host`);
          client.send({ answer: answer_sdp });
          const { pair } = await client.read<{ pair: { remoteAddress: string } }>();
          expect(pair.remoteAddress).toBe(`${RELAY_ADDRESS}:${udpPort}`);
          // The client says a second of its tone; the echoing agent plays it back.
          await new Promise((r) => setTimeout(r, 3500));
          client.send({ report: true });
          const heard = await client.read<{ packets: number; downHz: number }>();
          expect(heard.packets).toBeGreaterThanOrEqual(45);
          expect(Math.abs(heard.downHz - up(i))).toBeLessThanOrEqual(15);
        }),
      );
    });
  },
);
