// The Worker's view of the relay registry: one snapshot per isolate, re-read every
// EARSHOT_REGISTRY_CACHE_SECONDS. A stale snapshot is served while a fresh one is fetched in
// the background, so a call waits on the registry only when the isolate has none at all.
import type { EdgeConfig } from "./config.ts";
import type { RelayRecord } from "./relay-choice.ts";
import { registry } from "./object-ids.ts";
import type { RelaySnapshot } from "./relay-registry.ts";

/** Past this many refresh periods a snapshot is too old to serve even once more. */
const MAX_STALE_PERIODS = 10;

let snapshot: { relays: RelayRecord[]; fetchedAt: number } | undefined;
let inflight: Promise<RelayRecord[]> | undefined;

function refresh(env: Env): Promise<RelayRecord[]> {
  inflight ??= (async () => {
    try {
      const fresh = await registry(env).snapshot();
      remember(fresh);
      return fresh.relays;
    } finally {
      inflight = undefined;
    }
  })();
  return inflight;
}

export async function cachedRelays(
  env: Env,
  ctx: ExecutionContext,
  config: EdgeConfig,
): Promise<RelayRecord[]> {
  const age = snapshot ? Date.now() - snapshot.fetchedAt : Infinity;
  const period = config.registryCacheSeconds * 1000;
  if (snapshot && age < period) return snapshot.relays;
  if (snapshot && age < period * MAX_STALE_PERIODS) {
    ctx.waitUntil(refresh(env).catch(() => undefined));
    return snapshot.relays;
  }
  return refresh(env);
}

/** A heartbeat handled by this isolate brings back a fresh snapshot; keep it. */
export function remember(fresh: RelaySnapshot): void {
  snapshot = { relays: fresh.relays, fetchedAt: Date.now() };
}
