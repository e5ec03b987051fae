// The model's usage over a call: each `response.done`'s `usage` added field by field (numbers, and
// objects of numbers one level down, as OpenAI's input_token_details). What the model sends is
// untrusted: only names of lowercase letters, digits and `_`, finite non-negative numbers, and a
// bounded number of fields are kept (CallUsage's limits), so the call's record stays small.
import type { ModelUsage } from "../../protocol/relay-api.ts";

const MAX_FIELDS = 10;
const MAX_DETAIL_FIELDS = 8;
const NAME = /^[a-z0-9_]{1,40}$/;
const MAX_VALUE = 1e12;

export class UsageTally {
  turns = 0;
  readonly model: ModelUsage = {};

  /** One response finished, with its `usage` (anything, or nothing). */
  add(usage: unknown): void {
    this.turns++;
    if (!isRecord(usage)) return;
    for (const [name, value] of Object.entries(usage)) {
      if (!NAME.test(name)) continue;
      if (isCount(value)) {
        const current = this.model[name];
        if (current === undefined && Object.keys(this.model).length >= MAX_FIELDS) continue;
        if (current === undefined || typeof current === "number")
          this.model[name] = Math.min(MAX_VALUE, (current ?? 0) + value);
      } else if (isRecord(value)) {
        let detail = this.model[name];
        if (detail === undefined) {
          if (Object.keys(this.model).length >= MAX_FIELDS) continue;
          detail = this.model[name] = {};
        }
        if (typeof detail === "number") continue;
        for (const [key, count] of Object.entries(value)) {
          if (!NAME.test(key) || !isCount(count)) continue;
          if (detail[key] === undefined && Object.keys(detail).length >= MAX_DETAIL_FIELDS) continue;
          detail[key] = Math.min(MAX_VALUE, (detail[key] ?? 0) + count);
        }
      }
    }
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value) && value >= 0;
}
