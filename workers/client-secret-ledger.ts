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
}

export type CallClaim =
  | { ok: true; session: SessionConfig; callNumber: number }
  | { ok: false; reason: "unknown_secret" | "session_mismatch" | "call_limit_reached" };

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

  /** Counts one call against the secret's cap (0 = no cap) and hands back its session config. */
  claimCall(sessionSha256: string, maxCalls: number): CallClaim {
    const entry = this.#entry;
    if (!entry) return { ok: false, reason: "unknown_secret" };
    if (entry.sessionSha256 !== sessionSha256) return { ok: false, reason: "session_mismatch" };
    if (maxCalls > 0 && entry.calls >= maxCalls) return { ok: false, reason: "call_limit_reached" };
    entry.calls += 1;
    this.ctx.storage.kv.put("entry", entry);
    return { ok: true, session: entry.session, callNumber: entry.calls };
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
