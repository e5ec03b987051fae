// Where the time goes in a `node --cpu-prof` profile: self time by function and by source
// (package or project file). Usage: npx node bench/profile-summary.ts FILE.cpuprofile [top]
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export function summarizeProfile(file: string, top = 25): string {
  const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const total = profile.endTime - profile.startTime;
  const byFunction = new Map<string, number>();
  const bySource = new Map<string, number>();
  for (const [id, us] of self) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    const source = sourceOf(url, functionName);
    const key = `${functionName || "(anonymous)"} ${shortUrl(url)}:${lineNumber + 1}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
    bySource.set(source, (bySource.get(source) ?? 0) + us);
  }
  const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)} %`;
  const lines = [`profile ${(total / 1e6).toFixed(1)} s`, "", "by source (self time):"];
  for (const [k, v] of [...bySource].sort((a, b) => b[1] - a[1]).slice(0, 15)) lines.push(`${pct(v)}  ${k}`);
  lines.push("", "by function (self time):");
  for (const [k, v] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top))
    lines.push(`${pct(v)}  ${k}`);
  return lines.join("\n");
}

function shortUrl(url: string): string {
  return url.replace(/^file:\/\/.*?\/node_modules\//, "").replace(/^file:\/\/.*?\/main\//, "");
}

function sourceOf(url: string, fn: string): string {
  if (!url) return fn.startsWith("(") ? fn : "(native)";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  if (url.startsWith("node:")) return url;
  return shortUrl(url);
}

if (import.meta.main) {
  process.stdout.write(`${summarizeProfile(process.argv[2]!, Number(process.argv[3] ?? 25))}\n`);
}
