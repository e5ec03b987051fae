// The edge's deploy configuration, checked without Cloudflare: `wrangler deploy --dry-run` builds
// and bundles every environment and lists its bindings; wrangler's own config reader shows what
// each environment resolves to (wrangler does not inherit vars, Durable Objects or [secrets]
// into [env.*], so a binding forgotten in one environment would only fail after deploying).
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { unstable_readConfig } from "wrangler";
import { afterAll, describe, expect, it } from "vitest";
import { root } from "../support/loopback.ts";

/** [label, --env value]: "" is the top-level environment. */
const ENVIRONMENTS = [
  ["the top level", ""],
  ["staging", "staging"],
  ["production", "production"],
] as const;
const DURABLE_OBJECTS = {
  CALL_SESSION: "CallSession",
  RELAY_REGISTRY: "RelayRegistry",
  CLIENT_SECRET_LEDGER: "ClientSecretLedger",
  RATE_LIMITER: "RateLimiter",
  CALL_INDEX: "CallIndex",
};
const REQUIRED_SECRETS = ["EARSHOT_API_KEYS", "EARSHOT_SIGNING_KEYS", "EARSHOT_RELAY_SECRET"];
const OPTIONAL_SECRETS = ["EARSHOT_TURN_SECRET"];
const label = (env: string) => env || "top level";

/** The part of wrangler's resolved config these checks read (its exported type does not resolve here). */
interface ResolvedConfig {
  name: string;
  vars: Record<string, unknown>;
  secrets?: { required?: string[] };
  durable_objects: { bindings: { name: string; class_name: string }[] };
  migrations: {
    tag: string;
    new_classes?: string[];
    new_sqlite_classes?: string[];
    deleted_classes?: string[];
  }[];
}

const outdir = mkdtempSync(join(tmpdir(), "earshot-dry-run-"));
afterAll(() => rmSync(outdir, { recursive: true, force: true }));

function readConfig(env: string): ResolvedConfig {
  return unstable_readConfig(
    { config: join(root, "wrangler.toml"), ...(env ? { env } : {}) },
    { hideWarnings: true },
  ) as unknown as ResolvedConfig;
}

describe("wrangler deploy --dry-run", { timeout: 120_000 }, () => {
  it.each(ENVIRONMENTS)("builds and lists every binding for %s", (_, env) => {
    const out = join(outdir, env || "default");
    const result = spawnSync(
      process.execPath,
      [
        join(root, "node_modules/wrangler/bin/wrangler.js"),
        "deploy",
        "--dry-run",
        "--outdir",
        out,
        // An empty --env is wrangler's way to name the top level without a warning.
        "--env",
        env,
      ],
      {
        cwd: root,
        encoding: "utf8",
        env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1", FORCE_COLOR: "0" },
      },
    );
    const output = `${result.stdout}\n${result.stderr}`;
    expect(result.status, output).toBe(0);
    expect(output).toContain("--dry-run: exiting now.");
    expect(output).not.toMatch(/\bERROR\b/);
    for (const [binding, className] of Object.entries(DURABLE_OBJECTS)) {
      expect(output).toMatch(new RegExp(`env\\.${binding} \\(${className}\\)\\s+Durable Object`));
    }
    // Production-like: the dev-only routes are off in every deployable environment.
    expect(output).toMatch(/env\.EARSHOT_DEV \("0"\)\s+Environment Variable/);
    expect(output).toMatch(/env\.EARSHOT_TURN_URLS \(""\)\s+Environment Variable/);
    // The bundle is the Worker, with its Durable Object classes exported.
    const bundle = readFileSync(join(out, "index.js"), "utf8");
    for (const className of Object.values(DURABLE_OBJECTS)) expect(bundle).toContain(className);
    expect(existsSync(join(out, "index.js.map"))).toBe(true);
  });
});

describe("each environment's resolved configuration", () => {
  const top = readConfig("");

  it.each(ENVIRONMENTS)("%s has every Durable Object, var and required secret", (_, env) => {
    const config = readConfig(env);
    expect(config.name).toBe(env ? `earshot-edge-${env}` : "earshot-edge");
    expect(
      Object.fromEntries(config.durable_objects.bindings.map((b) => [b.name, b.class_name])),
      label(env),
    ).toEqual(DURABLE_OBJECTS);
    expect(Object.keys(config.vars).sort(), label(env)).toEqual(Object.keys(top.vars).sort());
    expect(config.vars.EARSHOT_DEV).toBe("0");
    expect(config.secrets?.required, label(env)).toEqual(REQUIRED_SECRETS);
    // TURN is optional: its secret must not block a deploy.
    expect(config.secrets?.required).not.toContain("EARSHOT_TURN_SECRET");
  });

  it.each(ENVIRONMENTS)(
    "%s has the Durable Object migrations in order, each class created once",
    (_, env) => {
      const { migrations } = readConfig(env);
      expect(migrations.map((m) => m.tag)).toEqual(["v1", "v2", "v3"]);
      const created = migrations.flatMap((m) => [...(m.new_sqlite_classes ?? []), ...(m.new_classes ?? [])]);
      expect([...created].sort()).toEqual(Object.values(DURABLE_OBJECTS).sort());
      expect(migrations.every((m) => (m.new_classes ?? []).length === 0)).toBe(true); // SQLite-backed only
      expect(migrations.flatMap((m) => m.deleted_classes ?? [])).toEqual([]);
    },
  );
});

describe("README Deploy section", () => {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const deploy = readme.slice(readme.indexOf("## Deploy"));

  it("gives the `wrangler secret put` command for every secret in every deployed environment", () => {
    expect(readme).toContain("## Deploy");
    for (const name of [...REQUIRED_SECRETS, ...OPTIONAL_SECRETS]) {
      for (const env of ["staging", "production"]) {
        expect(deploy).toContain(`npx wrangler secret put ${name} --env ${env}`);
      }
    }
    expect(deploy).toContain("npm run deploy -- --env production");
  });

  it("documents every relay variable the relay reads", async () => {
    const { RelayEnv } = await import("../../relay/config.ts");
    for (const name of Object.keys(RelayEnv.shape)) expect(deploy, name).toContain(`\`${name}\``);
  });
});
