// What deploy/relay/Dockerfile does, without Docker (no engine here): the same production install
// (deploy/relay/install-production.sh: runtime dependencies only, patched, Opus built from
// source) into a copy of the package files, the same files copied in, and the same start command.
// The relay must start from that tree alone, answer the image's HEALTHCHECK, and drain on SIGTERM.
// The install takes about a minute on two cores (most of it compiling libopus).
import { spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, root, waitUntil } from "../support/loopback.ts";

const dockerfile = readFileSync(join(root, "deploy/relay/Dockerfile"), "utf8");
/** Node 24 first on PATH, so npm, npx and node-gyp all run on (and build for) it. */
const PATH = `${dirname(process.execPath)}:${process.env.PATH}`;

/** The werift patches, in the order patch-package applies them (werift+0.25.2+NNN+name.patch). */
function weriftPatches(): string[] {
  return readdirSync(join(root, "patches"))
    .filter((name) => name.startsWith("werift+"))
    .sort()
    .map((name) => readFileSync(join(root, "patches", name), "utf8"));
}

/** The non-blank lines a sequence of patch-package patches leaves added, per patched file. */
function addedLines(patches: string[]): Map<string, string[]> {
  const files = new Map<string, string[]>();
  for (const patch of patches) {
    for (const section of patch.split(/^diff --git /m).slice(1)) {
      const file = /^a\/node_modules\/werift\/(\S+) /.exec(section)![1]!;
      const lines = files.get(file) ?? [];
      files.set(file, lines);
      for (const line of section.split("\n")) {
        if (line.startsWith("+++") || line.startsWith("---")) continue;
        const text = line.slice(1).trim();
        if (text === "") continue;
        if (line.startsWith("+")) lines.push(text);
        // A later patch may rewrite a line an earlier one added.
        else if (line.startsWith("-") && lines.includes(text)) lines.splice(lines.indexOf(text), 1);
      }
    }
  }
  return files;
}

describe("the relay image's install and start, without Docker", { timeout: 600_000 }, () => {
  let app: string;
  let install: { status: number | null; output: string; ms: number };

  beforeAll(() => {
    app = mkdtempSync(join(tmpdir(), "earshot-image-"));
    // The build stage's COPY lines.
    for (const file of ["package.json", "package-lock.json", ".npmrc"])
      cpSync(join(root, file), join(app, file));
    cpSync(join(root, "patches"), join(app, "patches"), { recursive: true });
    cpSync(join(root, "deploy/relay/install-production.sh"), join(app, "install-production.sh"));
    const started = performance.now();
    const result = spawnSync("sh", ["install-production.sh"], {
      cwd: app,
      encoding: "utf8",
      env: { ...process.env, PATH, npm_config_update_notifier: "false" },
      timeout: 540_000,
    });
    install = {
      status: result.status,
      output: `${result.stdout}\n${result.stderr}`,
      ms: performance.now() - started,
    };
    // The run stage's COPY lines.
    for (const dir of ["protocol", "relay"]) cpSync(join(root, dir), join(app, dir), { recursive: true });
    cpSync(join(root, "deploy/relay/healthcheck.ts"), join(app, "deploy/relay/healthcheck.ts"));
  }, 600_000);

  afterAll(() => {
    if (app) rmSync(app, { recursive: true, force: true });
  });

  it("the Dockerfile runs this install script and starts `node relay/main.ts` with the healthcheck", () => {
    expect(dockerfile).toMatch(/^COPY deploy\/relay\/install-production\.sh \.\/$/m);
    expect(dockerfile).toMatch(/^RUN sh install-production\.sh/m);
    expect(dockerfile).toContain('CMD ["node", "relay/main.ts"]');
    expect(dockerfile).toContain('CMD ["node", "deploy/relay/healthcheck.ts"]');
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^FROM node:24-[a-z]+-slim AS build$/m);
  });

  it("installs runtime dependencies only, patched, with a working native Opus", () => {
    expect(install.status, install.output).toBe(0);
    const modules = join(app, "node_modules");
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
    };
    for (const name of Object.keys(pkg.dependencies))
      expect(existsSync(join(modules, name)), name).toBe(true);
    for (const name of Object.keys(pkg.devDependencies))
      expect(existsSync(join(modules, name)), name).toBe(false);
    // Every line the committed werift patches add is there, in the ESM build (what `import "werift"`
    // loads) and in the CJS build (`require("werift")`).
    const added = addedLines(weriftPatches());
    expect(added.get("lib/index.mjs")!.length).toBeGreaterThan(50);
    expect(added.get("lib/ice/src/ice.js")!.length).toBeGreaterThan(50);
    for (const [file, lines] of added) {
      const installed = readFileSync(join(modules, "werift", file), "utf8");
      for (const line of lines) expect(installed, `${file}: ${line}`).toContain(line);
    }
    // The patched binding's encodeInto/decodeInto exist and round-trip a tone.
    const probe = spawnSync(
      process.execPath,
      [
        "-e",
        `const { OpusEncoder } = require("@discordjs/opus");
         const codec = new OpusEncoder(24000, 1, 2048);
         const pcm = new Int16Array(480).map((_, i) => Math.round(8000 * Math.sin(2 * Math.PI * 440 * i / 24000)));
         const packet = Buffer.alloc(1500);
         const n = codec.encodeInto(Buffer.from(pcm.buffer), packet);
         const out = new Int16Array(480);
         const samples = codec.decodeInto(packet.subarray(0, n), out);
         console.log(JSON.stringify({ n, samples }));`,
      ],
      { cwd: app, encoding: "utf8" },
    );
    expect(probe.status, probe.stderr).toBe(0);
    const { n, samples } = JSON.parse(probe.stdout) as { n: number; samples: number };
    expect(n).toBeGreaterThan(10);
    expect(samples).toBe(480);
    console.log(`production install: ${(install.ms / 1000).toFixed(1)} s`);
  });

  it("starts from that tree, passes the HEALTHCHECK, and drains and exits 0 on SIGTERM", async () => {
    expect(install.status, install.output).toBe(0);
    const port = await freePort();
    // worker-configuration.d.ts widens NodeJS.ProcessEnv with the Worker's bindings; a relay needs none.
    const env = {
      PATH,
      NODE_ENV: "production",
      RELAY_HTTP_PORT: String(port),
      RELAY_HTTP_HOST: "127.0.0.1",
      RELAY_UDP_PORTS: "32600-32699",
      EARSHOT_RELAY_SECRET: "image-test-relay-secret",
      RELAY_DRAIN_SECONDS: "5",
    } as Record<string, string> as NodeJS.ProcessEnv;
    const healthcheck = () =>
      spawnSync(process.execPath, ["deploy/relay/healthcheck.ts"], { cwd: app, env, encoding: "utf8" })
        .status;
    expect(healthcheck()).toBe(1); // nothing listening yet

    const relay = spawn(process.execPath, ["relay/main.ts"], {
      cwd: app,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    relay.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    relay.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => relay.once("exit", (code) => resolve(code)));
    try {
      await waitUntil("the relay to answer", async () => {
        const response = await fetch(`http://127.0.0.1:${port}/healthz`);
        return response.ok ? ((await response.json()) as { status: string }) : undefined;
      });
      expect(healthcheck()).toBe(0);
      relay.kill("SIGTERM");
      expect(await exited, output).toBe(0);
      expect(output).toContain("draining");
      expect(output).toContain("drained; exiting");
      expect(healthcheck()).toBe(1);
    } finally {
      if (relay.exitCode === null) relay.kill("SIGKILL");
    }
  });
});
