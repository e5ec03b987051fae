// What each added call holds in the relay's heap: two V8 heap snapshots (bench/capacity.ts
// --heap=DIR writes one idle and one after each step), self sizes summed by node type and
// constructor name, the second minus the first, divided by the calls added between them.
// A snapshot is taken after a full GC, so this is what calls keep alive, not garbage.
// ArrayBuffers' backing stores (typed arrays, Buffers) appear as "native" or "hidden" nodes.
//   npx node bench/heap-diff.ts A.heapsnapshot B.heapsnapshot CALLS_ADDED [--top=25]
import { readFileSync } from "node:fs";
import { round, table } from "./lib/stats.ts";

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** Bytes by "type name", and the total. */
function sizes(path: string): { byKey: Map<string, { bytes: number; count: number }>; total: number } {
  const s = JSON.parse(readFileSync(path, "utf8")) as Snapshot;
  const fields = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const stride = fields.length;
  const typeAt = fields.indexOf("type");
  const nameAt = fields.indexOf("name");
  const sizeAt = fields.indexOf("self_size");
  const byKey = new Map<string, { bytes: number; count: number }>();
  let total = 0;
  for (let i = 0; i < s.nodes.length; i += stride) {
    const type = types[s.nodes[i + typeAt]!]!;
    const rawName = s.strings[s.nodes[i + nameAt]!]!;
    // Strings and code are many distinct names: one key each per type.
    const name =
      type === "string" || type === "concatenated string" || type === "sliced string" || type === "code"
        ? ""
        : rawName.slice(0, 60);
    const key = `${type} ${name}`;
    const size = s.nodes[i + sizeAt]!;
    const entry = byKey.get(key) ?? { bytes: 0, count: 0 };
    entry.bytes += size;
    entry.count++;
    byKey.set(key, entry);
    total += size;
  }
  return { byKey, total };
}

const [a, b, added, ...rest] = process.argv.slice(2);
if (!a || !b || !added) {
  process.stderr.write("usage: heap-diff.ts A.heapsnapshot B.heapsnapshot CALLS_ADDED [--top=25]\n");
  process.exit(2);
}
const calls = Number(added);
const top = Number(rest.find((x) => x.startsWith("--top="))?.slice(6) ?? 25);
const before = sizes(a);
const after = sizes(b);
const rows = [...after.byKey]
  .map(([key, { bytes, count }]) => {
    const old = before.byKey.get(key) ?? { bytes: 0, count: 0 };
    return { key, bytes: (bytes - old.bytes) / calls, count: (count - old.count) / calls };
  })
  .sort((x, y) => y.bytes - x.bytes)
  .slice(0, top);
process.stdout.write(
  `${table([
    ["type constructor", "KB per call", "objects per call"],
    ...rows.map((r) => [r.key, round(r.bytes / 1024, 1), round(r.count, 1)]),
  ])}\nheap (snapshot self sizes) per call: ${round((after.total - before.total) / calls / 1024, 1)} KB\n`,
);
