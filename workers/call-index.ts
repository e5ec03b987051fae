// CallIndex: one Durable Object per project (idFromName("project:<key id>")), listing its calls'
// records for GET /admin/calls. Each CallSession writes its record here as the call starts and
// ends; the full record and the conversation log stay in the CallSession.
//
// Why a Durable Object per project: D1 is not available in the tests' workerd, and the one
// RelayRegistry is on every call's setup path for every project; loading it with every call's
// record (and every project's listing) would make it the deployment's bottleneck. A project's
// listing reads one object's SQLite table with an index, never fans out to its calls' objects.
// It stays bounded: rows older than the retention are deleted by the alarm, and a project keeps
// at most MAX_INDEXED_CALLS (the oldest go first).
import { DurableObject } from "cloudflare:workers";
import type { CallView } from "./call-session.ts";
import { edgeConfig } from "./config.ts";

/** Most calls one project's index keeps; past it the oldest rows are deleted. */
export const MAX_INDEXED_CALLS = 100_000;
/** Most records in one page of GET /admin/calls. */
export const MAX_PAGE_SIZE = 100;
/** How often the index looks for records past their retention. */
const SWEEP_EVERY_MS = 3600_000;

/** Later states outrank earlier ones; an ended call's record may still gain its usage. */
const STATE_RANK: Record<CallView["state"], number> = {
  created: 0,
  offered: 1,
  answered: 2,
  connected: 3,
  ended: 4,
  failed: 4,
};

export interface CallPage {
  records: CallView[];
  /** Where the next page starts (pass back as `after`); null on the last page. */
  next: { createdMs: number; callId: string } | null;
}

export class CallIndex extends DurableObject<Env> {
  #sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#sql = ctx.storage.sql;
    ctx.blockConcurrencyWhile(async () => {
      this.#sql.exec(
        `CREATE TABLE IF NOT EXISTS calls (
           call_id TEXT PRIMARY KEY,
           created_ms INTEGER NOT NULL,
           record TEXT NOT NULL,
           rank INTEGER NOT NULL
         )`,
      );
      this.#sql.exec("CREATE INDEX IF NOT EXISTS calls_by_created ON calls (created_ms, call_id)");
    });
  }

  /**
   * Writes (or rewrites) one call's record. Idempotent; writes are not awaited by the CallSession
   * and may land out of order, so a record never replaces one of a later state.
   */
  async put(record: CallView): Promise<void> {
    const createdMs = record.timestamps.created ?? Date.now();
    this.#sql.exec(
      `INSERT INTO calls (call_id, created_ms, record, rank) VALUES (?, ?, ?, ?)
       ON CONFLICT (call_id) DO UPDATE SET record = excluded.record, rank = excluded.rank
       WHERE excluded.rank >= calls.rank`,
      record.id,
      createdMs,
      JSON.stringify(record),
      STATE_RANK[record.state],
    );
    const count = this.#sql.exec<{ n: number }>("SELECT count(*) AS n FROM calls").one().n;
    if (count > MAX_INDEXED_CALLS) {
      this.#sql.exec(
        `DELETE FROM calls WHERE call_id IN
           (SELECT call_id FROM calls ORDER BY created_ms, call_id LIMIT ?)`,
        count - MAX_INDEXED_CALLS,
      );
    }
    if ((await this.ctx.storage.getAlarm()) === null)
      await this.ctx.storage.setAlarm(Date.now() + SWEEP_EVERY_MS);
  }

  /**
   * Records created at or after `sinceMs`, newest first, `limit` of them, starting after the
   * cursor `after` (the last record of the previous page).
   */
  list(sinceMs: number, limit: number, after: { createdMs: number; callId: string } | null): CallPage {
    const rows = after
      ? this.#sql.exec<{ record: string; created_ms: number; call_id: string }>(
          `SELECT record, created_ms, call_id FROM calls
           WHERE created_ms >= ? AND (created_ms < ? OR (created_ms = ? AND call_id < ?))
           ORDER BY created_ms DESC, call_id DESC LIMIT ?`,
          sinceMs,
          after.createdMs,
          after.createdMs,
          after.callId,
          limit + 1,
        )
      : this.#sql.exec<{ record: string; created_ms: number; call_id: string }>(
          `SELECT record, created_ms, call_id FROM calls WHERE created_ms >= ?
           ORDER BY created_ms DESC, call_id DESC LIMIT ?`,
          sinceMs,
          limit + 1,
        );
    const found = rows.toArray();
    const page = found.slice(0, limit);
    const last = page.at(-1);
    return {
      records: page.map((row) => JSON.parse(row.record) as CallView),
      next: found.length > limit && last ? { createdMs: last.created_ms, callId: last.call_id } : null,
    };
  }

  /** Deletes records past the retention (by their end, or their start if they never ended). */
  override async alarm(): Promise<void> {
    const cutoff = Date.now() - edgeConfig(this.env).callRecordDays * 86_400_000;
    // A call ends after it starts: only rows started before the cutoff can have ended before it.
    const expired = this.#sql
      .exec<{ call_id: string; record: string }>(
        "SELECT call_id, record FROM calls WHERE created_ms < ?",
        cutoff,
      )
      .toArray()
      .filter((row) => {
        const record = JSON.parse(row.record) as CallView;
        return (record.timestamps.ended ?? record.timestamps.created ?? 0) < cutoff;
      });
    for (const row of expired) this.#sql.exec("DELETE FROM calls WHERE call_id = ?", row.call_id);
    const left = this.#sql.exec<{ n: number }>("SELECT count(*) AS n FROM calls").one().n;
    if (left > 0) await this.ctx.storage.setAlarm(Date.now() + SWEEP_EVERY_MS);
  }
}
