// GET /metrics: only for a bearer of RELAY_METRICS_TOKEN on the API port (or on a loopback
// listener of its own), and cheap enough that a flood of scrapes during a call delays its audio
// no more than the same flood of /healthz; the event-loop-lag gauge is not reset by scraping.
import { performance } from "node:perf_hooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../../relay/config.ts";
import { createLogger } from "../../../relay/log.ts";
import { slotEnv } from "../../../relay/supervisor.ts";
import { LOOP_LAG_WINDOW_MS } from "../../../relay/metrics.ts";
import { serveRelay, type ServedRelay } from "../../../relay/serve.ts";
import { TestPeer } from "../../support/peer.ts";
import { metricsAuth, TEST_METRICS_TOKEN, TEST_SECRET, TEST_RELAY_ID } from "../../support/relay-api.ts";
import { metricValue, startRelayProcess, testConfig, type RelayProcess } from "../../support/relays.ts";

async function serve(env: Record<string, string> = {}): Promise<ServedRelay & { url: string }> {
  const served = await serveRelay({ config: testConfig(env), log: createLogger("silent") });
  return { ...served, url: `http://127.0.0.1:${served.port}` };
}

describe("who may scrape", () => {
  let relay: ServedRelay & { url: string };
  beforeAll(async () => (relay = await serve()));
  afterAll(() => relay.close());

  it("with RELAY_METRICS_TOKEN set, a scrape without it or with another is 401; with it, 200", async () => {
    const wrong: Record<string, string>[] = [
      {},
      { authorization: "Bearer not-the-token-0123456789" },
      { authorization: TEST_METRICS_TOKEN },
    ];
    for (const headers of wrong) {
      const refused = await fetch(`${relay.url}/metrics`, { headers });
      expect(refused.status).toBe(401);
      expect(refused.headers.get("www-authenticate")).toMatch(/^Bearer /);
      expect(await refused.json()).toMatchObject({
        error: { type: "authentication_error", code: "metrics_unauthorized", param: "authorization" },
      });
    }
    const scraped = await fetch(`${relay.url}/metrics`, { headers: metricsAuth });
    expect(scraped.status).toBe(200);
    expect(scraped.headers.get("content-type")).toMatch(/^text\/plain/);
    expect(await scraped.text()).toMatch(/^earshot_relay_active_calls 0$/m);
  });

  it("without a token the API port serves no metrics, and RELAY_METRICS_PORT serves them on loopback", async () => {
    const open = await serve({ RELAY_METRICS_TOKEN: "", RELAY_METRICS_PORT: "0" });
    try {
      const refused = await fetch(`${open.url}/metrics`);
      expect(refused.status).toBe(404);
      await refused.body?.cancel();
      const metricsUrl = `http://127.0.0.1:${open.metricsPort}`;
      const scraped = await fetch(`${metricsUrl}/metrics`);
      expect(scraped.status).toBe(200);
      expect(await scraped.text()).toMatch(/^earshot_relay_active_calls 0$/m);
      // That listener is for metrics only.
      const other = await fetch(`${metricsUrl}/healthz`);
      expect(other.status).toBe(404);
      await other.body?.cancel();
    } finally {
      await open.close();
    }
  });
});

describe("RELAY_METRICS_PORT with RELAY_PROCESSES > 1", () => {
  const env = { EARSHOT_RELAY_SECRET: TEST_SECRET, RELAY_PROCESSES: "2", RELAY_UDP_PORTS: "40000-40399" };
  it("gives process i the port + i - 1, as RELAY_HTTP_PORT", () => {
    const slots = loadConfig({ ...env, RELAY_METRICS_PORT: "9100" }).processes;
    expect(slots.map((slot) => slotEnv(slot).RELAY_METRICS_PORT)).toEqual(["9100", "9101"]);
    expect(loadConfig(env).processes.map((slot) => slotEnv(slot).RELAY_METRICS_PORT)).toEqual([
      undefined,
      undefined,
    ]);
  });
  it("refuses metrics ports that overlap the HTTP ports", () => {
    expect(() => loadConfig({ ...env, RELAY_HTTP_PORT: "8790", RELAY_METRICS_PORT: "8791" })).toThrow(
      ConfigError,
    );
    expect(() => loadConfig({ ...env, RELAY_HTTP_PORT: "8790", RELAY_METRICS_PORT: "8791" })).toThrow(
      "RELAY_METRICS_PORT",
    );
  });
});

describe("the event-loop-lag gauge", () => {
  let relay: ServedRelay & { url: string };
  beforeAll(async () => (relay = await serve()));
  afterAll(() => relay.close());

  const lag = async () => {
    const text = await (await fetch(`${relay.url}/metrics`, { headers: metricsAuth })).text();
    return Number(/^earshot_relay_event_loop_lag_p99_seconds (\S+)$/m.exec(text)?.[1]);
  };

  it("is not reset by a scrape: back-to-back scrapes read the same window", async () => {
    // A second of 40 ms stalls (the relay is in this process), well over 1 % of any window.
    const until = performance.now() + 1000;
    while (performance.now() < until) {
      const stallEnd = performance.now() + 40;
      while (performance.now() < stallEnd);
      await new Promise((resolve) => setImmediate(resolve));
    }
    // The window that held the stalls ends within LOOP_LAG_WINDOW_MS.
    const deadline = performance.now() + LOOP_LAG_WINDOW_MS + 3000;
    let first: number;
    while ((first = await lag()) < 0.03) {
      if (performance.now() > deadline) throw new Error(`the lag gauge never showed the stalls (${first})`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const again = [];
    for (let i = 0; i < 5; i++) again.push(await lag());
    expect(
      again.every((value) => value >= 0.03),
      `${first} then ${again.join(", ")}`,
    ).toBe(true);
  });
});

describe("a flood of scrapes during a call", () => {
  const FLOOD_MS = 5000;
  const SCRAPERS = 4;
  const MAX_AGE_SECONDS = 1;
  let relay: RelayProcess;
  let client: TestPeer;

  beforeAll(async () => {
    relay = await startRelayProcess({
      id: TEST_RELAY_ID,
      env: {
        RELAY_VAD: "off",
        RELAY_METRICS_MAX_AGE_SECONDS: String(MAX_AGE_SECONDS),
      },
    });
    client = new TestPeer();
    expect((await client.call(relay.url)).status).toBe(201);
    await client.connected();
  });
  afterAll(async () => {
    await client?.close();
    await relay?.stop("SIGKILL");
    await relay?.exited;
  });

  /** Late pacer ticks so far, from a fresh rendering: waits out the cached one. */
  async function lateTicks(): Promise<number> {
    await new Promise((resolve) => setTimeout(resolve, MAX_AGE_SECONDS * 1000 + 100));
    const text = await (await fetch(`${relay.url}/metrics`, { headers: metricsAuth })).text();
    return metricValue(text, "earshot_relay_pacer_late_ticks_total");
  }

  /** Back-to-back GETs of `path` from SCRAPERS connections for FLOOD_MS; returns how many. */
  async function flood(path: string): Promise<number> {
    const end = performance.now() + FLOOD_MS;
    let requests = 0;
    await Promise.all(
      Array.from({ length: SCRAPERS }, async () => {
        while (performance.now() < end) {
          const response = await fetch(`${relay.url}${path}`, { headers: metricsAuth });
          expect(response.status).toBe(200);
          await response.arrayBuffer();
          requests++;
        }
      }),
    );
    return requests;
  }

  it(`(${FLOOD_MS / 1000} s, ${SCRAPERS} at a time) costs no more late pacer ticks than the same flood of /healthz`, async () => {
    const start = await lateTicks();
    const healthzRequests = await flood("/healthz");
    const afterHealthz = await lateTicks();
    const metricsRequests = await flood("/metrics");
    const afterMetrics = await lateTicks();
    const healthzLate = afterHealthz - start;
    const metricsLate = afterMetrics - afterHealthz;
    const report = `late ticks: /healthz flood ${healthzLate} (${healthzRequests} requests), /metrics flood ${metricsLate} (${metricsRequests} requests)`;
    console.log(report);
    expect(client.pc.connectionState).toBe("connected");
    // A scrape costs about what a /healthz does (each rendered afresh, the relay managed a tenth
    // as many), and delays the audio no more. Generous: two cores are shared with other work.
    expect(metricsRequests, report).toBeGreaterThan(healthzRequests / 2);
    expect(metricsLate, report).toBeLessThanOrEqual(healthzLate * 2 + 10);
  });
});
