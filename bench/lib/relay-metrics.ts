// Reads a relay's Prometheus /metrics: counters, and percentiles of the per-frame work
// histograms between two scrapes (linear interpolation inside the bucket that holds the rank).

export interface Scrape {
  values: Map<string, number>;
  /** histogram name → [upper bound in seconds, cumulative count][] */
  buckets: Map<string, [number, number][]>;
}

/** The bench relays' RELAY_METRICS_TOKEN (the API port serves /metrics only with one). */
export const BENCH_METRICS_TOKEN = "bench-metrics-token-0123456789";

export async function scrape(relayUrl: string): Promise<Scrape> {
  const res = await fetch(`${relayUrl}/metrics`, {
    headers: { authorization: `Bearer ${BENCH_METRICS_TOKEN}` },
  });
  if (!res.ok) throw new Error(`GET ${relayUrl}/metrics: ${res.status}`);
  return parse(await res.text());
}

export function parse(text: string): Scrape {
  const values = new Map<string, number>();
  const buckets = new Map<string, [number, number][]>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const bucket = /^(\w+)_bucket\{le="([^"]+)"\} (\S+)$/.exec(line);
    if (bucket) {
      const list = buckets.get(bucket[1]!) ?? [];
      list.push([bucket[2] === "+Inf" ? Infinity : Number(bucket[2]), Number(bucket[3])]);
      buckets.set(bucket[1]!, list);
      continue;
    }
    const value = /^(\S+) (\S+)$/.exec(line);
    if (value) values.set(value[1]!, Number(value[2]));
  }
  return { values, buckets };
}

export function counterDelta(before: Scrape, after: Scrape, name: string): number {
  return (after.values.get(name) ?? 0) - (before.values.get(name) ?? 0);
}

/** A labelled counter's change between two scrapes, summed over its labels. */
export function counterSumDelta(before: Scrape, after: Scrape, name: string): number {
  let sum = 0;
  for (const [key, value] of after.values)
    if (key.startsWith(`${name}{`)) sum += value - (before.values.get(key) ?? 0);
  return sum;
}

/** Percentile (0–100) of a histogram's observations between two scrapes, in µs. */
export function histogramPercentileUs(before: Scrape, after: Scrape, name: string, p: number): number {
  const a = after.buckets.get(name);
  if (!a) throw new Error(`no histogram ${name}`);
  const b = before.buckets.get(name) ?? a.map(([le]) => [le, 0] as [number, number]);
  const counts = a.map(([le, c], i) => [le, c - b[i]![1]] as [number, number]);
  const total = counts.at(-1)![1];
  if (total === 0) return NaN;
  const rank = (p / 100) * total;
  let lower = 0;
  let below = 0;
  for (const [le, cumulative] of counts) {
    if (cumulative >= rank) {
      if (le === Infinity) return lower * 1e6;
      const inBucket = cumulative - below;
      const fraction = inBucket === 0 ? 1 : (rank - below) / inBucket;
      return (lower + (le - lower) * fraction) * 1e6;
    }
    lower = le;
    below = cumulative;
  }
  return NaN;
}

export function histogramCount(before: Scrape, after: Scrape, name: string): number {
  return counterDelta(before, after, `${name}_count`);
}

export function histogramMeanUs(before: Scrape, after: Scrape, name: string): number {
  const n = histogramCount(before, after, name);
  return n === 0 ? NaN : (counterDelta(before, after, `${name}_sum`) / n) * 1e6;
}
