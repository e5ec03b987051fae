import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              // Test-only secrets; real ones come from `wrangler secret put` or .dev.vars.
              bindings: {
                EARSHOT_API_KEYS: "sk_test_primary,sk_test_secondary",
                EARSHOT_SIGNING_KEYS: "k2:test-signing-secret-two,k1:test-signing-secret-one",
                EARSHOT_RELAY_SECRET: "test-relay-secret",
                EARSHOT_DEV: "0",
              },
            },
          }),
        ],
        test: { name: "workers", include: ["test/workers/**/*.test.ts"] },
      },
      {
        test: {
          name: "node",
          include: ["test/{protocol,relay,e2e,web}/**/*.test.ts"],
          environment: "node",
          testTimeout: 30_000,
          hookTimeout: 30_000,
        },
      },
    ],
  },
});
