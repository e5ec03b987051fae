// ClientSecretLedger: one Durable Object per client secret, whose id the secret's id carries
// (`cs_<object id>`, from `newUniqueId()`; see object-ids.ts). It keeps the session config the
// secret was minted with (the secret itself carries only its hash) and counts the calls it starts,
// so EARSHOT_MAX_CALLS_PER_SECRET holds even when two offers race: `claimCall` runs without an
// await, so no two claims interleave.
import { DurableObject } from "cloudflare:workers";
import type { SessionConfig } from "../protocol/session.ts";

/** Kept this long past the secret's expiry, then deleted by the alarm. */
const KEEP_AFTER_EXPIRY_MS = 60_000;

interface LedgerEntry {
  session: SessionConfig;
  sessionSha256: string;
  expiresAtMs: number;
  calls: number;
  /** Calls placed and not yet connected: call id → when its slot lapses (epoch ms). */
  unconnected?: Record<string, number>;
}

/** A claimed call's hold on the secret's unconnected slots, until it connects or times out. */
export interface UnconnectedHold {
  callId: string;
  /** 0: no cap. */
  maxUnconnected: number;
  untilMs: number;
}

export type CallClaim =
  | { ok: true; session: SessionConfig; callNumber: number }
  | {
      ok: false;
      reason: "unknown_secret" | "session_mismatch" | "call_limit_reached" | "too_many_unconnected";
    };

export class ClientSecretLedger extends DurableObject<Env> {
  #entry: LedgerEntry | undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => {
      this.#entry = ctx.storage.kv.get<LedgerEntry>("entry");
    });
  }

  /**
   * Records the secret at minting. Idempotent: a repeat keeps the call count. The alarm write is
   * not awaited: like put(), it holds this answer in the output gate until it is durable (see
   * CallSession's #schedule for the documents), so the secret is never handed out unrecorded.
   */
  issue(session: SessionConfig, sessionSha256: string, expiresAtMs: number): void {
    if (!this.#entry) {
      this.#entry = { session, sessionSha256, expiresAtMs, calls: 0 };
      this.ctx.storage.kv.put("entry", this.#entry);
    }
    void this.ctx.storage.setAlarm(this.#entry.expiresAtMs + KEEP_AFTER_EXPIRY_MS);
  }

  /**
   * Counts one call against the secret's cap (0 = no cap) and hands back its session config.
   * With `hold`, the call also takes one of the secret's unconnected slots until it connects
   * (callSettled) or its connect timeout passes.
   */
  claimCall(sessionSha256: string, maxCalls: number, hold?: UnconnectedHold): CallClaim {
    const entry = this.#entry;
    if (!entry) return { ok: false, reason: "unknown_secret" };
    if (entry.sessionSha256 !== sessionSha256) return { ok: false, reason: "session_mismatch" };
    if (maxCalls > 0 && entry.calls >= maxCalls) return { ok: false, reason: "call_limit_reached" };
    if (hold) {
      const now = Date.now();
      const unconnected = (entry.unconnected ??= {});
      for (const [id, until] of Object.entries(unconnected)) if (until <= now) delete unconnected[id];
      if (hold.maxUnconnected > 0 && Object.keys(unconnected).length >= hold.maxUnconnected)
        return { ok: false, reason: "too_many_unconnected" };
      unconnected[hold.callId] = hold.untilMs;
    }
    entry.calls += 1;
    this.ctx.storage.kv.put("entry", entry);
    return { ok: true, session: entry.session, callNumber: entry.calls };
  }

  /** The call connected or ended: it no longer holds an unconnected slot. */
  callSettled(callId: string): void {
    const entry = this.#entry;
    if (!entry?.unconnected || !(callId in entry.unconnected)) return;
    delete entry.unconnected[callId];
    this.ctx.storage.kv.put("entry", entry);
  }

  /** No relay took the call (all full, or the offer was refused): it does not count against the cap. */
  refundCall(callId: string): void {
    const entry = this.#entry;
    // Only a call still holding its slot: a repeat, or a call that connected, refunds nothing.
    if (!entry?.unconnected || !(callId in entry.unconnected)) return;
    delete entry.unconnected[callId];
    entry.calls = Math.max(0, entry.calls - 1);
    this.ctx.storage.kv.put("entry", entry);
  }

  override async alarm(): Promise<void> {
    if (this.#entry && Date.now() < this.#entry.expiresAtMs + KEEP_AFTER_EXPIRY_MS) {
      void this.ctx.storage.setAlarm(this.#entry.expiresAtMs + KEEP_AFTER_EXPIRY_MS);
      return;
    }
    this.#entry = undefined;
    await this.ctx.storage.deleteAll();
  }
}
