import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";
import { stubRoute } from "./test/stubs/stub-relays.ts";
import { RELAY_STUB_URL_VARIABLE, TEST_RELAY_SECRET } from "./test/stubs/relay-stub.setup.ts";

// Test files that assert no timing tighter than seconds: they run two at a time (the edge's
// tests in workerd beside these), before the timing-sensitive rest. On 2 cores this is most of
// the edge's and the deploy tests' time hidden behind each other.
const TOLERANT = {
  sequence: { groupOrder: 0 },
  maxWorkers: 2,
  testTimeout: 30_000,
  hookTimeout: 30_000,
};
const NODE_TOLERANT = [
  "test/protocol/**/*.test.ts",
  "test/deploy/**/*.test.ts",
  "test/soak/**/*.test.ts",
  "test/e2e/npm-start.test.ts",
  "test/relay/config.test.ts",
  "test/relay/processes.test.ts",
  "test/relay/call/hostile-oversize-events.test.ts",
  "test/e2e/call-resume.test.ts",
  // Faults whose bounds are whole seconds (deadlines, restarts, records); edge-events and
  // relay-process measure sub-second timing and stay with the timing-sensitive files.
  "test/faults/{edge-faults,call-end-partitions,conversation-log,relay-identity,relay-restart,relay-capacity,inference}.test.ts",
  "test/relay/edge/{api,edge-client,nonce-cache,http-limits}.test.ts",
  "test/agent/{agent,conversation,tool-arguments}.test.ts",
];

export default defineConfig({
  test: {
    projects: [
      {
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              // Stub relays' origins (test/stubs/relay-stub.ts) go to the stub; the rest out as asked.
              outboundService: (request: Request) => {
                const url = new URL(request.url);
                const route = stubRoute(process.env[RELAY_STUB_URL_VARIABLE] ?? "", url) ?? url.href;
                return fetch(route, {
                  method: request.method,
                  headers: request.headers,
                  body: request.method === "GET" || request.method === "HEAD" ? undefined : request.body,
                  duplex: "half",
                } as RequestInit);
              },
              // Test-only secrets; real ones come from `wrangler secret put` or .dev.vars.
              bindings: {
                // sk_test_ratelimit is used only by the rate-limit tests, so its bucket is their own.
                EARSHOT_API_KEYS: "sk_test_primary,sk_test_secondary,sk_test_ratelimit",
                EARSHOT_SIGNING_KEYS: "k2:test-signing-secret-two,k1:test-signing-secret-one",
                EARSHOT_RELAY_SECRET: TEST_RELAY_SECRET,
                // The relay stub is plain http on loopback, which only dev mode accepts. Tests of
                // production behaviour call the handler with EARSHOT_DEV=0 (see fixtures.ts).
                EARSHOT_DEV: "1",
                // Small, so the relay-timeout and per-secret-cap tests reach them quickly.
                EARSHOT_RELAY_TIMEOUT_MS: "1000",
                EARSHOT_MAX_CALLS_PER_SECRET: "2",
              },
            },
          }),
        ],
        test: {
          name: "workers",
          include: ["test/workers/**/*.test.ts"],
          ...TOLERANT,
          // A relay stand-in on 127.0.0.1, reached by the tests through inject("relayStubUrl").
          globalSetup: ["test/stubs/relay-stub.setup.ts"],
        },
      },
      {
        test: {
          name: "node-tolerant",
          include: NODE_TOLERANT,
          environment: "node",
          ...TOLERANT,
        },
      },
      {
        test: {
          name: "node",
          include: ["test/{protocol,relay,agent,e2e,web,faults,soak,deploy,network}/**/*.test.ts"],
          exclude: NODE_TOLERANT,
          environment: "node",
          testTimeout: 30_000,
          hookTimeout: 30_000,
          // Timing-sensitive files (latency bounds, pacing, floods) run one at a time, after
          // the rest, so no other test file shares the two cores with them.
          sequence: { groupOrder: 1 },
          maxWorkers: 1,
        },
      },
    ],
  },
});
