import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";
import { stubRoute } from "./test/stubs/stub-relays.ts";
import { RELAY_STUB_URL_VARIABLE, TEST_RELAY_SECRET } from "./test/stubs/relay-stub.setup.ts";

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
          // A relay stand-in on 127.0.0.1, reached by the tests through inject("relayStubUrl").
          globalSetup: ["test/stubs/relay-stub.setup.ts"],
        },
      },
      {
        test: {
          name: "node",
          include: [
            "test/{protocol,relay,agent,e2e,web,faults,soak,network}/**/*.test.ts",
            "test/deploy/**/*.test.ts",
          ],
          environment: "node",
          testTimeout: 30_000,
          hookTimeout: 30_000,
        },
      },
    ],
  },
});
