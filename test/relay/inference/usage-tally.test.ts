import { describe, expect, it } from "vitest";
import { ModelUsage } from "../../../protocol/relay-api.ts";
import { UsageTally } from "../../../relay/inference/usage-tally.ts";

describe("the model's usage over a call", () => {
  it("sums each response's usage field by field, one level of details deep", () => {
    const tally = new UsageTally();
    const usage = { input_tokens: 20, output_tokens: 10, input_token_details: { audio_tokens: 8 } };
    tally.add(usage);
    tally.add({ ...usage, input_token_details: { audio_tokens: 2, cached_tokens: 5 } });
    tally.add(undefined);
    expect(tally.turns).toBe(3);
    expect(tally.model).toEqual({
      input_tokens: 40,
      output_tokens: 20,
      input_token_details: { audio_tokens: 10, cached_tokens: 5 },
    });
  });

  it("keeps what a model cannot be trusted with out: bad names and values, deep nesting, too many fields", () => {
    const tally = new UsageTally();
    tally.add({
      "Bad Name": 1,
      negative: -5,
      infinite: Infinity,
      text: "12",
      list: [1, 2],
      deep: { inner: { x: 1 } },
      ...Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`field_${i}`, 1])),
    });
    const detail = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`d_${i}`, 1]));
    tally.add({ field_0: 1, details: detail });
    // At the limits of the edge's schema exactly: 10 fields, 8 in a detail.
    expect(Object.keys(tally.model)).toHaveLength(10);
    expect(tally.model.field_0).toBe(2);
    expect(tally.model.deep).toEqual({});
    expect(ModelUsage.safeParse(tally.model).success).toBe(true);
    expect(ModelUsage.safeParse({ ...tally.model, eleventh: 1 }).success).toBe(false);
  });

  it("fills a detail to 8 fields and no more", () => {
    const tally = new UsageTally();
    tally.add({ details: Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`d_${i}`, 1])) });
    expect(Object.keys(tally.model.details as object)).toHaveLength(8);
    expect(ModelUsage.safeParse(tally.model).success).toBe(true);
    const nine = { details: Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`d_${i}`, 1])) };
    expect(ModelUsage.safeParse(nine).success).toBe(false);
  });
});
