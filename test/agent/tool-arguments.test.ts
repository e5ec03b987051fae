// The built-in agent's tool arguments satisfy the tool's JSON Schema: checked by a real
// validator (ajv) on OpenAI's documented tool examples and on schemas fast-check makes up.
import Ajv from "ajv";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MAX_ARRAY_ITEMS, MAX_STRING_LENGTH, MAX_VALUES, argumentsFor } from "../../agent/tool-arguments.ts";

const ajv = new Ajv({ allErrors: true, format: "full", multipleOfPrecision: 9 });

function expectValid(schema: object): Record<string, unknown> {
  const args = argumentsFor(schema);
  const validate = ajv.compile(schema);
  expect(validate(args), `${JSON.stringify(args)}: ${ajv.errorsText(validate.errors)}`).toBe(true);
  return args;
}

describe("tool arguments from a JSON Schema", () => {
  it("fills OpenAI's documented get_weather example: required string, enum", () => {
    const args = expectValid({
      type: "object",
      properties: {
        location: { type: "string", description: "City and state, e.g. San Francisco, CA" },
        unit: { type: "string", enum: ["celsius", "fahrenheit"] },
      },
      required: ["location"],
      additionalProperties: false,
    });
    expect(args).toEqual({ location: "example", unit: "celsius" });
  });

  it("is deterministic: the same schema gives the same arguments", () => {
    const schema = { type: "object", properties: { n: { type: "integer", minimum: 3 } }, required: ["n"] };
    expect(argumentsFor(schema)).toEqual(argumentsFor(structuredClone(schema)));
    expect(argumentsFor(schema)).toEqual({ n: 3 });
  });

  it("honours bounds at and just past the limit: minimum, exclusive bounds, multipleOf, lengths, items", () => {
    const args = expectValid({
      type: "object",
      properties: {
        at_min: { type: "integer", minimum: 10, maximum: 10 },
        past_min: { type: "integer", exclusiveMinimum: 10, maximum: 11 },
        below_max: { type: "number", exclusiveMaximum: 0 },
        step: { type: "number", minimum: 0.25, multipleOf: 0.1 },
        short: { type: "string", minLength: 12, maxLength: 12 },
        tiny: { type: "string", maxLength: 3 },
        none: { type: "array", maxItems: 0 },
        three: { type: "array", items: { type: "integer" }, minItems: 3, uniqueItems: true },
        when: { type: "string", format: "date-time" },
        code: { type: "string", pattern: "^[A-Z]{3}$" },
      },
      required: ["at_min", "past_min", "below_max", "step", "short", "tiny", "none", "three", "when", "code"],
    });
    expect(args.at_min).toBe(10);
    expect(args.past_min).toBe(11);
    expect(args.step).toBe(0.3);
    expect(args.short).toHaveLength(12);
    expect(args.three).toEqual([1, 2, 3]);
    expect(args.code).toBe("USD");
  });

  it("follows $ref, allOf, anyOf and nested objects and arrays", () => {
    expectValid({
      type: "object",
      $defs: {
        item: {
          type: "object",
          properties: { sku: { type: "string" }, qty: { type: "integer", minimum: 1 } },
          required: ["sku", "qty"],
        },
      },
      properties: {
        order: {
          allOf: [
            {
              type: "object",
              properties: { items: { type: "array", items: { $ref: "#/$defs/item" }, minItems: 2 } },
              required: ["items"],
            },
            {
              type: "object",
              properties: { note: { anyOf: [{ type: "null" }, { type: "string", minLength: 2 }] } },
              required: ["note"],
            },
          ],
        },
        tree: {
          type: "object",
          properties: { children: { type: "array", items: { $ref: "#/properties/tree" } } },
        },
      },
      required: ["order", "tree"],
    });
  });

  it("bounds what a hostile schema can make it build, at each limit and one past it", () => {
    const arrayOf = (minItems: number) => ({
      type: "object",
      properties: { list: { type: "array", items: { type: "integer" }, minItems } },
      required: ["list"],
    });
    expectValid(arrayOf(MAX_ARRAY_ITEMS));
    expect((argumentsFor(arrayOf(MAX_ARRAY_ITEMS + 1)).list as unknown[]).length).toBe(MAX_ARRAY_ITEMS);
    const stringOf = (minLength: number) => ({
      type: "object",
      properties: { text: { type: "string", minLength } },
      required: ["text"],
    });
    expectValid(stringOf(MAX_STRING_LENGTH));
    expect((argumentsFor(stringOf(MAX_STRING_LENGTH + 1)).text as string).length).toBe(MAX_STRING_LENGTH);
    expect((argumentsFor(stringOf(1e9)).text as string).length).toBe(MAX_STRING_LENGTH);
    // Nested arrays asking for 64^4 values: generation stops at MAX_VALUES values.
    let nested: object = { type: "integer" };
    for (let i = 0; i < 4; i++) nested = { type: "array", items: nested, minItems: 64 };
    const started = performance.now();
    const huge = argumentsFor({ type: "object", properties: { v: nested }, required: ["v"] });
    const leaves = JSON.stringify(huge).match(/\d+|null/g)!.length;
    expect(leaves).toBeLessThanOrEqual(MAX_VALUES + 64 * 4);
    // A pattern that backtracks exponentially is not run on long strings.
    const redos = argumentsFor({
      type: "object",
      properties: { s: { type: "string", minLength: 40, pattern: "(x+)+y" } },
      required: ["s"],
    });
    expect(redos.s).toHaveLength(40);
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it("gives an object even when the tool has no parameters", () => {
    expect(argumentsFor(undefined)).toEqual({});
    expect(argumentsFor({ type: "object", properties: {} })).toEqual({});
  });

  it("satisfies any schema built from the keywords function tools use (property test)", () => {
    const bounded = fc
      .tuple(fc.integer({ min: -50, max: 50 }), fc.integer({ min: 0, max: 40 }))
      .map(([low, span]) => [low, low + span] as const);
    const leaf = fc.oneof(
      fc.constant({ type: "boolean" }),
      fc.constant({ type: "null" }),
      fc
        .record(
          { minLength: fc.integer({ min: 0, max: 20 }), extra: fc.integer({ min: 0, max: 20 }) },
          { requiredKeys: [] },
        )
        .map(({ minLength, extra }) => ({
          type: "string",
          ...(minLength !== undefined ? { minLength } : {}),
          ...(extra !== undefined ? { maxLength: (minLength ?? 0) + extra } : {}),
        })),
      fc
        .constantFrom("date", "date-time", "email", "uri", "uuid", "ipv4")
        .map((format) => ({ type: "string", format })),
      fc
        .uniqueArray(fc.oneof(fc.string(), fc.integer(), fc.boolean()), { minLength: 1, maxLength: 4 })
        .map((values) => ({ enum: values })),
      fc
        .tuple(
          bounded,
          fc.constantFrom("integer", "number"),
          fc.boolean(),
          fc.boolean(),
          fc.constantFrom(undefined, 1, 2, 5),
        )
        .map(([[low, high], type, lowOpen, highOpen, multipleOf]) => {
          // An exclusive pair needs room for a value between them (a multiple of the step).
          const roomy = high - low >= 2 * (multipleOf ?? 1) + 1;
          return {
            type,
            ...(lowOpen && roomy ? { exclusiveMinimum: low } : { minimum: low }),
            ...(highOpen && roomy ? { exclusiveMaximum: high } : { maximum: high + (multipleOf ?? 0) }),
            ...(multipleOf ? { multipleOf } : {}),
          };
        }),
    );
    const { schema } = fc.letrec<{ schema: object }>((tie) => ({
      schema: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        leaf,
        tie("object"),
        tie("array"),
      ) as fc.Arbitrary<object>,
      object: fc
        .dictionary(fc.stringMatching(/^[a-z_]{1,8}$/), tie("schema"), { maxKeys: 4 })
        .chain((properties) =>
          fc
            .subarray(Object.keys(properties))
            .map((required) => ({ type: "object", properties, required, additionalProperties: false })),
        ),
      array: fc
        .tuple(tie("schema"), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 3 }))
        .map(([items, minItems, extra]) => ({ type: "array", items, minItems, maxItems: minItems + extra })),
    }));
    fc.assert(
      fc.property(schema, (root) => {
        const tool = { type: "object", properties: { value: root }, required: ["value"] };
        const validate = ajv.compile(tool);
        const args = argumentsFor(tool);
        if (!validate(args)) throw new Error(`${JSON.stringify(args)}: ${ajv.errorsText(validate.errors)}`);
        // Deterministic: generating again gives the same JSON.
        expect(JSON.stringify(argumentsFor(tool))).toBe(JSON.stringify(args));
      }),
      { numRuns: 400, seed: 14 },
    );
  });
});
