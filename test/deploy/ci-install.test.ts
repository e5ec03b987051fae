// CI installs as the README tells a new user to, and the committed lockfile is one `npm ci` can
// install from on any platform: every optional (per-platform) package a dependency names is in it.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { root } from "../support/loopback.ts";

interface LockEntry {
  optionalDependencies?: Record<string, string>;
}

describe("installing", () => {
  it("the README's install command is the one .ci/run runs, and it is npm ci", () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    const start = /## Start\n[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? "";
    const readmeInstall = start.split("\n").find((line) => /^npm (ci|install)\b/.test(line));
    expect(readmeInstall).toMatch(/^npm ci\b/);
    const ciCommands = readFileSync(join(root, ".ci/run"), "utf8")
      .split("\n")
      .filter((line) => /^npm /.test(line));
    expect(ciCommands).toEqual(["npm ci", "npm run check"]);
    expect(readme).toContain("npm run check");
  });

  it("package-lock.json lists every optional package its packages name (npm ci fails on another platform otherwise)", () => {
    const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8")) as {
      packages: Record<string, LockEntry>;
    };
    const missing: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      for (const name of Object.keys(entry.optionalDependencies ?? {})) {
        // npm resolves from the package's own node_modules outwards, as Node does.
        const candidates: string[] = [];
        for (let dir = path; ; dir = dir.slice(0, Math.max(0, dir.lastIndexOf("/node_modules/")))) {
          candidates.push(`${dir ? `${dir}/` : ""}node_modules/${name}`);
          if (!dir.includes("/node_modules/")) {
            candidates.push(`node_modules/${name}`);
            break;
          }
        }
        if (!candidates.some((candidate) => candidate in lock.packages)) missing.push(`${path} → ${name}`);
      }
    }
    expect(missing).toEqual([]);
    // The one that broke `npm ci` before: workerd's binaries for the other platforms.
    expect(Object.keys(lock.packages)).toEqual(
      expect.arrayContaining([
        "node_modules/@cloudflare/workerd-darwin-arm64",
        "node_modules/@cloudflare/workerd-linux-64",
        "node_modules/@cloudflare/workerd-windows-64",
      ]),
    );
  });
});
