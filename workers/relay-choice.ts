// Which relay takes a new call: among the usable ones, the nearest by great-circle distance
// to the caller, with a load penalty so a nearly full relay loses to a slightly farther one.
import type { Heartbeat } from "../protocol/relay-api.ts";

/** A relay as the registry knows it: its last heartbeat and when that arrived (epoch ms). */
export interface RelayRecord extends Heartbeat {
  last_seen_ms: number;
}

export interface GeoPoint {
  lat: number;
  lon: number;
}

/** A relay that missed this many heartbeat intervals gets no new calls. */
export const MISSED_HEARTBEATS = 3;
const EARTH_RADIUS_KM = 6371;

export function greatCircleKm(a: GeoPoint, b: GeoPoint): number {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(h)));
}

export type Unusable = "stale" | "draining" | "full";

export function whyUnusable(relay: RelayRecord, nowMs: number): Unusable | undefined {
  if (nowMs - relay.last_seen_ms > MISSED_HEARTBEATS * relay.interval_seconds * 1000) return "stale";
  if (relay.draining) return "draining";
  if (relay.active_calls >= relay.capacity) return "full";
  return undefined;
}

export function relayScore(relay: RelayRecord, from: GeoPoint | undefined, loadPenaltyKm: number): number {
  const distance = from ? greatCircleKm(from, relay) : 0;
  const load = relay.capacity > 0 ? relay.active_calls / relay.capacity : 1;
  return distance + loadPenaltyKm * load;
}

export interface ChoiceOptions {
  from: GeoPoint | undefined;
  region?: string | undefined;
  nowMs: number;
  loadPenaltyKm: number;
}

export function chooseRelay(relays: readonly RelayRecord[], options: ChoiceOptions): RelayRecord | undefined {
  return rankRelays(relays, options)[0];
}

/**
 * The usable relays, best first: what a new call tries in order when a relay turns out to be
 * full (its last heartbeat is a few seconds old, so the registry's load can be stale).
 */
export function rankRelays(relays: readonly RelayRecord[], options: ChoiceOptions): RelayRecord[] {
  const scored: { relay: RelayRecord; score: number }[] = [];
  for (const relay of relays) {
    if (options.region !== undefined && relay.region !== options.region) continue;
    if (whyUnusable(relay, options.nowMs)) continue;
    scored.push({ relay, score: relayScore(relay, options.from, options.loadPenaltyKm) });
  }
  // Ties go to the lower id, so the choice does not depend on the registry's order.
  scored.sort((a, b) => a.score - b.score || (a.relay.relay_id < b.relay.relay_id ? -1 : 1));
  return scored.map((s) => s.relay);
}

/** The caller's location: Cloudflare's `request.cf` geo, or under EARSHOT_DEV the `Earshot-Geo: lat,lon` header. */
export const GEO_OVERRIDE_HEADER = "Earshot-Geo";

export function callerLocation(request: Request, dev: boolean): GeoPoint | undefined {
  if (dev) {
    const override = request.headers.get(GEO_OVERRIDE_HEADER);
    if (override) {
      const point = parsePoint(override.split(",")[0], override.split(",")[1]);
      if (point) return point;
    }
  }
  const cf = (request as Request & { cf?: IncomingRequestCfProperties }).cf;
  return parsePoint(cf?.latitude, cf?.longitude);
}

function parsePoint(lat: unknown, lon: unknown): GeoPoint | undefined {
  const la = typeof lat === "number" ? lat : typeof lat === "string" && lat.trim() !== "" ? Number(lat) : NaN;
  const lo = typeof lon === "number" ? lon : typeof lon === "string" && lon.trim() !== "" ? Number(lon) : NaN;
  if (!Number.isFinite(la) || !Number.isFinite(lo) || Math.abs(la) > 90 || Math.abs(lo) > 180)
    return undefined;
  return { lat: la, lon: lo };
}
