// RelayRegistry: one per deployment (`idFromName("global")`). Relays report here every few
// seconds; Workers read a snapshot through a per-isolate cache (relay-cache.ts), never per call.
//
// A relay id is pinned to the origin of its first heartbeat: a heartbeat for that id from any
// other origin is refused until an operator removes the relay (DELETE /admin/relays/{id}). With
// per-relay keys a host can only sign as its own id, and the pin keeps even that relay from
// moving its calls elsewhere unseen. The pin outlives the record: a relay forgotten after an hour
// of silence keeps its origin.
import { DurableObject } from "cloudflare:workers";
import { bareOrigin, type Heartbeat } from "../protocol/relay-api.ts";
import { ApiError } from "./errors.ts";
import type { Outcome } from "./call-session.ts";
import type { RelayRecord } from "./relay-choice.ts";
import { SeenNonces } from "./seen-nonces.ts";

export const REGISTRY_NAME = "global";
/** A relay not heard from for this long is forgotten altogether, not just skipped. */
const FORGET_AFTER_MS = 60 * 60 * 1000;
const KEY_PREFIX = "relay:";
const PIN_PREFIX = "origin:";

export interface RelaySnapshot {
  relays: RelayRecord[];
  /** Registry clock when the snapshot was taken, epoch ms. */
  at: number;
}

/** What a heartbeat changed: the fresh snapshot, and the calls the relay listed last time and no longer does. */
export interface HeartbeatResult {
  snapshot: RelaySnapshot;
  goneCalls: string[];
}

/** The signature a heartbeat came with: accepted once. */
export interface SignatureNonce {
  nonce: string;
  expires: number;
}

export class RelayRegistry extends DurableObject<Env> {
  readonly #relays = new Map<string, RelayRecord>();
  /**
   * Each relay's live calls at its last heartbeat, to see which have gone since (in memory: after
   * an eviction the next heartbeat only starts the comparison again).
   */
  readonly #liveCalls = new Map<string, Set<string>>();
  /** relay id → the origin it was first heard from. */
  readonly #origins = new Map<string, string>();
  #nonces!: SeenNonces;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => {
      for (const [, relay] of ctx.storage.kv.list<RelayRecord>({ prefix: KEY_PREFIX })) {
        this.#relays.set(relay.relay_id, relay);
      }
      for (const [key, origin] of ctx.storage.kv.list<string>({ prefix: PIN_PREFIX })) {
        this.#origins.set(key.slice(PIN_PREFIX.length), origin);
      }
      // Records from before pinning: their origin is the one they have.
      for (const relay of this.#relays.values()) {
        if (!this.#origins.has(relay.relay_id)) this.#pin(relay.relay_id, bareOrigin(relay.public_url));
      }
      this.#nonces = new SeenNonces(ctx.storage);
    });
  }

  /**
   * Records a (verified, validated) heartbeat and returns the fresh snapshot. Refuses a replayed
   * signature and a relay id heard from another origin before. Idempotent.
   */
  heartbeat(beat: Heartbeat, signature: SignatureNonce): Outcome<HeartbeatResult> {
    const origin = bareOrigin(beat.public_url);
    if (origin === undefined) {
      return refuse(new ApiError(400, "invalid_relay_url", "public_url must be a bare origin."));
    }
    const pinned = this.#origins.get(beat.relay_id);
    if (pinned !== undefined && pinned !== origin) {
      return refuse(
        new ApiError(
          409,
          "relay_origin_mismatch",
          `Relay ${beat.relay_id} is registered at another origin; an operator must remove it ` +
            `(DELETE /admin/relays/${beat.relay_id}) before it can move.`,
          { param: "public_url" },
        ),
      );
    }
    if (!this.#nonces.claim(`${beat.relay_id}:${signature.nonce}`, signature.expires)) {
      return refuse(new ApiError(401, "signature_replayed", "This signature has been used already."));
    }
    if (pinned === undefined) this.#pin(beat.relay_id, origin);
    const now = Date.now();
    // The call list stays here (it is not part of the snapshot every isolate caches).
    const { call_ids: callIds, ...rest } = beat;
    const record: RelayRecord = { ...rest, public_url: origin, last_seen_ms: now };
    let goneCalls: string[] = [];
    if (callIds !== undefined) {
      const listed = new Set(callIds);
      const before = this.#liveCalls.get(beat.relay_id);
      if (before) goneCalls = [...before].filter((id) => !listed.has(id));
      this.#liveCalls.set(beat.relay_id, listed);
    } else {
      this.#liveCalls.delete(beat.relay_id);
    }
    this.#relays.set(beat.relay_id, record);
    this.ctx.storage.kv.put(KEY_PREFIX + beat.relay_id, record);
    for (const [id, relay] of this.#relays) {
      if (now - relay.last_seen_ms > FORGET_AFTER_MS) {
        this.#relays.delete(id);
        this.ctx.storage.kv.delete(KEY_PREFIX + id);
      }
    }
    return { ok: true, value: { snapshot: this.snapshot(), goneCalls } };
  }

  /** Forgets a relay and its origin (an operator's DELETE /admin/relays/{id}); false if unknown. */
  remove(relayId: string): boolean {
    const known = this.#relays.delete(relayId) || this.#origins.has(relayId);
    this.#origins.delete(relayId);
    this.ctx.storage.kv.delete(KEY_PREFIX + relayId);
    this.ctx.storage.kv.delete(PIN_PREFIX + relayId);
    return known;
  }

  snapshot(): RelaySnapshot {
    return { relays: [...this.#relays.values()], at: Date.now() };
  }

  #pin(relayId: string, origin: string | undefined): void {
    if (origin === undefined) return;
    this.#origins.set(relayId, origin);
    this.ctx.storage.kv.put(PIN_PREFIX + relayId, origin);
  }
}

function refuse<T>(error: ApiError): Outcome<T> {
  return { ok: false, error: error.toData() };
}
