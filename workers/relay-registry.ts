// RelayRegistry: one per deployment (`idFromName("global")`). Relays report here every few
// seconds; Workers read a snapshot through a per-isolate cache (relay-cache.ts), never per call.
import { DurableObject } from "cloudflare:workers";
import type { Heartbeat } from "../protocol/relay-api.ts";
import type { RelayRecord } from "./relay-choice.ts";

export const REGISTRY_NAME = "global";
/** A relay not heard from for this long is forgotten altogether, not just skipped. */
const FORGET_AFTER_MS = 60 * 60 * 1000;
const KEY_PREFIX = "relay:";

export interface RelaySnapshot {
  relays: RelayRecord[];
  /** Registry clock when the snapshot was taken, epoch ms. */
  at: number;
}

export class RelayRegistry extends DurableObject<Env> {
  readonly #relays = new Map<string, RelayRecord>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => {
      for (const [, relay] of ctx.storage.kv.list<RelayRecord>({ prefix: KEY_PREFIX })) {
        this.#relays.set(relay.relay_id, relay);
      }
    });
  }

  /** Records a (verified, validated) heartbeat and returns the fresh snapshot. Idempotent. */
  heartbeat(beat: Heartbeat): RelaySnapshot {
    const now = Date.now();
    const record: RelayRecord = { ...beat, last_seen_ms: now };
    this.#relays.set(beat.relay_id, record);
    this.ctx.storage.kv.put(KEY_PREFIX + beat.relay_id, record);
    for (const [id, relay] of this.#relays) {
      if (now - relay.last_seen_ms > FORGET_AFTER_MS) {
        this.#relays.delete(id);
        this.ctx.storage.kv.delete(KEY_PREFIX + id);
      }
    }
    return this.snapshot();
  }

  snapshot(): RelaySnapshot {
    return { relays: [...this.#relays.values()], at: Date.now() };
  }
}
