// Arguments for a function tool, generated from its JSON Schema `parameters`: what the built-in
// agent passes when it calls a tool. Deterministic (the same schema always gives the same
// arguments, so an app's tests can assert on them) and valid for the schema keywords function
// tools use: type (and type lists), enum, const, properties/required, items/prefixItems,
// min/maxItems, uniqueItems, min/maxLength, format, pattern (from a list of candidates),
// minimum/maximum (inclusive and exclusive, draft-04 and later), multipleOf, anyOf/oneOf/allOf,
// local $ref ($defs, definitions), min/maxProperties with additionalProperties.

type Schema = Record<string, unknown>;

/** Nesting past this is a recursive schema; only what is required is generated below it. */
const MAX_DEPTH = 8;
/** Optional properties are filled in to this depth (apps see more of their schema exercised). */
const OPTIONAL_DEPTH = 2;
/**
 * Bounds on what a schema can make the agent build (the schema is client input): values in all,
 * items per array, properties per object, characters per string. Past them the arguments are
 * cut short and may not satisfy the schema; a real tool schema is nowhere near them.
 */
export const MAX_VALUES = 2000;
export const MAX_ARRAY_ITEMS = 64;
export const MAX_STRING_LENGTH = 1024;
/**
 * `pattern` is tried only on strings this short, and only for patterns this long: a pattern with
 * nested quantifiers backtracks exponentially in the length of the string it fails on.
 */
const PATTERN_MAX_TRIED_LENGTH = 16;
const PATTERN_MAX_SOURCE = 256;

const FORMATS: Record<string, string> = {
  "date-time": "2025-01-01T12:00:00Z",
  date: "2025-01-01",
  time: "12:00:00Z",
  email: "user@example.com",
  "idn-email": "user@example.com",
  uri: "https://example.com/",
  url: "https://example.com/",
  "uri-reference": "https://example.com/",
  iri: "https://example.com/",
  hostname: "example.com",
  "idn-hostname": "example.com",
  ipv4: "192.0.2.1",
  ipv6: "2001:db8::1",
  uuid: "00000000-0000-4000-8000-000000000001",
  duration: "PT1M",
};

/** Strings tried, in order, against a `pattern` the plain value does not match. */
const PATTERN_CANDIDATES = [
  "example",
  "EXAMPLE",
  "Example",
  "abc",
  "a",
  "A",
  "1",
  "123",
  "12345",
  "0",
  "a1",
  "A1",
  "abc123",
  "ABC-123",
  "2025-01-01",
  "12:00",
  "user@example.com",
  "https://example.com/",
  "+15555550123",
  "555-0123",
  "US",
  "USD",
  "en",
  "en-US",
  "true",
  "#ffffff",
  "00000000-0000-4000-8000-000000000001",
];

export function argumentsFor(parameters: unknown): Record<string, unknown> {
  const schema = isSchema(parameters) ? parameters : {};
  const value = new Generator(schema).value(schema, 0, 0);
  // Function arguments are always a JSON object, whatever the schema's root says.
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
}

function isSchema(value: unknown): value is Schema {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

class Generator {
  readonly #root: Schema;
  #valuesLeft = MAX_VALUES;

  constructor(root: Schema) {
    this.#root = root;
  }

  /** A value for `schema`; `variant` makes sibling array items differ (uniqueItems). */
  value(schemaIn: unknown, depth: number, variant: number): unknown {
    // A schema that requires itself has no finite instance; stop rather than recurse forever.
    if (depth > 3 * MAX_DEPTH || --this.#valuesLeft < 0) return null;
    if (!isSchema(schemaIn)) return schemaIn === false ? null : `example${suffix(variant)}`;
    const schema = this.#resolve(schemaIn, depth);
    if ("const" in schema) return schema.const;
    if (Array.isArray(schema.enum) && schema.enum.length > 0)
      return schema.enum[variant % schema.enum.length];
    const choices =
      (Array.isArray(schema.anyOf) && schema.anyOf) || (Array.isArray(schema.oneOf) && schema.oneOf);
    if (choices && choices.length > 0) {
      // The first alternative that is not `null`, so the tool gets something to act on.
      const chosen = choices.find((c) => !(isSchema(c) && c.type === "null")) ?? choices[0];
      const { anyOf: _a, oneOf: _o, ...rest } = schema;
      return this.value(
        isSchema(chosen) ? merge(rest, this.#resolve(chosen, depth)) : chosen,
        depth,
        variant,
      );
    }
    switch (typeOf(schema)) {
      case "object":
        return this.#object(schema, depth, variant);
      case "array":
        return this.#array(schema, depth);
      case "integer":
        return numberIn(schema, variant, true);
      case "number":
        return numberIn(schema, variant, false);
      case "boolean":
        return variant % 2 === 0;
      case "null":
        return null;
      default:
        return stringFor(schema, variant);
    }
  }

  /** Inlines local `$ref`s and flattens `allOf`, to a bounded depth. */
  #resolve(schema: Schema, depth: number): Schema {
    let current = schema;
    for (let hops = 0; hops < MAX_DEPTH; hops++) {
      if (typeof current.$ref === "string") {
        const target = pointer(this.#root, current.$ref);
        const { $ref: _r, ...rest } = current;
        current = merge(rest, isSchema(target) ? target : {});
        continue;
      }
      if (Array.isArray(current.allOf)) {
        const { allOf, ...rest } = current;
        current = (allOf as unknown[]).reduce<Schema>(
          (acc, part) => merge(acc, isSchema(part) ? this.#resolve(part, depth + 1) : {}),
          rest,
        );
        continue;
      }
      return current;
    }
    return current;
  }

  #object(schema: Schema, depth: number, variant: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    const properties = isSchema(schema.properties) ? schema.properties : {};
    const required = new Set(Array.isArray(schema.required) ? schema.required.map(String) : []);
    const maxProperties = typeof schema.maxProperties === "number" ? schema.maxProperties : Infinity;
    for (const key of required) out[key] = this.value(properties[key] ?? {}, depth + 1, variant);
    if (depth < OPTIONAL_DEPTH) {
      for (const [key, property] of Object.entries(properties)) {
        if (key in out || Object.keys(out).length >= maxProperties) continue;
        out[key] = this.value(property, depth + 1, variant);
      }
    }
    const minProperties = typeof schema.minProperties === "number" ? schema.minProperties : 0;
    const extra = schema.additionalProperties === undefined ? {} : schema.additionalProperties;
    const wantedProperties = Math.min(minProperties, MAX_ARRAY_ITEMS);
    for (let n = 1; Object.keys(out).length < wantedProperties && extra !== false; n++) {
      const key = `property_${n}`;
      if (!(key in out)) out[key] = this.value(extra, depth + 1, n);
    }
    return out;
  }

  #array(schema: Schema, depth: number): unknown[] {
    const min = typeof schema.minItems === "number" ? schema.minItems : 0;
    const max = typeof schema.maxItems === "number" ? schema.maxItems : Infinity;
    const tuple = Array.isArray(schema.prefixItems)
      ? schema.prefixItems
      : Array.isArray(schema.items)
        ? schema.items
        : [];
    const rest = Array.isArray(schema.items) ? schema.additionalItems : schema.items;
    // One item when nothing asks for more (a list with something in it is the useful case),
    // none past the depth limit unless required.
    const wanted = depth >= MAX_DEPTH ? min : Math.max(min, tuple.length, 1);
    const count = Math.min(wanted, max, rest === false ? tuple.length : Infinity, MAX_ARRAY_ITEMS);
    const out: unknown[] = [];
    for (let i = 0; i < count; i++)
      out.push(this.value(i < tuple.length ? tuple[i] : (rest ?? {}), depth + 1, i));
    return out;
  }
}

function typeOf(schema: Schema): string {
  const type = Array.isArray(schema.type)
    ? (schema.type.find((t) => t !== "null") ?? schema.type[0])
    : schema.type;
  if (typeof type === "string") return type;
  if ("properties" in schema || "required" in schema || "additionalProperties" in schema) return "object";
  if ("items" in schema || "prefixItems" in schema) return "array";
  if ("minimum" in schema || "maximum" in schema || "multipleOf" in schema) return "number";
  return "string";
}

function stringFor(schema: Schema, variant: number): string {
  const minLength = typeof schema.minLength === "number" ? schema.minLength : 0;
  const maxLength = typeof schema.maxLength === "number" ? schema.maxLength : Infinity;
  const format = typeof schema.format === "string" ? FORMATS[schema.format] : undefined;
  const fit = (s: string) => {
    let out = s;
    if (out.length < minLength) out += "x".repeat(Math.min(minLength, MAX_STRING_LENGTH) - out.length);
    return out.length > maxLength ? out.slice(0, maxLength) : out;
  };
  const base = fit(format ?? `example${suffix(variant)}`);
  if (typeof schema.pattern !== "string" || schema.pattern.length > PATTERN_MAX_SOURCE) return base;
  let pattern: RegExp;
  try {
    pattern = new RegExp(schema.pattern, "u");
  } catch {
    return base;
  }
  const ok = (s: string) =>
    s.length <= PATTERN_MAX_TRIED_LENGTH && s.length >= minLength && s.length <= maxLength && pattern.test(s);
  if (ok(base)) return base;
  for (const candidate of PATTERN_CANDIDATES) {
    const withVariant = variant > 0 ? `${candidate}${variant}` : candidate;
    if (ok(withVariant)) return withVariant;
    if (ok(candidate)) return candidate;
    if (ok(fit(candidate))) return fit(candidate);
  }
  // No candidate matches: the value may fail the pattern (documented limit of the double).
  return base;
}

function numberIn(schema: Schema, variant: number, integer: boolean): number {
  let low = -Infinity;
  let high = Infinity;
  let lowOpen = false;
  let highOpen = false;
  if (typeof schema.minimum === "number") low = schema.minimum;
  if (typeof schema.maximum === "number") high = schema.maximum;
  // Draft-04 booleans make minimum/maximum exclusive; later drafts give the bound itself.
  if (schema.exclusiveMinimum === true) lowOpen = true;
  if (schema.exclusiveMaximum === true) highOpen = true;
  if (typeof schema.exclusiveMinimum === "number" && schema.exclusiveMinimum >= low) {
    low = schema.exclusiveMinimum;
    lowOpen = true;
  }
  if (typeof schema.exclusiveMaximum === "number" && schema.exclusiveMaximum <= high) {
    high = schema.exclusiveMaximum;
    highOpen = true;
  }
  const step =
    typeof schema.multipleOf === "number" && schema.multipleOf > 0 ? schema.multipleOf : integer ? 1 : 0;
  // The smallest allowed value at or above the start: the low bound, else 1 (clamped to high).
  let start = Number.isFinite(low) ? low : Math.min(1, Number.isFinite(high) ? high : 1);
  if (!Number.isFinite(low) && Number.isFinite(high) && start >= high && highOpen) start = high - (step || 1);
  let value: number;
  if (step > 0) {
    let k = Math.ceil(start / step) + variant;
    if (lowOpen && k * step <= low) k++;
    value = k * step;
    if (value > high || (highOpen && value >= high))
      value = (Math.ceil(start / step) + (lowOpen ? 1 : 0)) * step;
    if (integer) value = Math.round(value);
  } else if (lowOpen || highOpen) {
    const top = Number.isFinite(high) ? high : start + 2;
    const bottom = Number.isFinite(low) ? low : top - 2;
    value = bottom + (top - bottom) / (2 + variant);
  } else {
    value = start + variant;
    if (value > high) value = start;
  }
  // Floating-point multiples (0.1 × 3) land a hair off; round to the step's decimals.
  const decimals = decimalsOf(step);
  return decimals > 0 ? Number(value.toFixed(decimals)) : value;
}

function decimalsOf(n: number): number {
  const text = String(n);
  const dot = text.indexOf(".");
  return dot < 0 ? 0 : Math.min(12, text.length - dot - 1);
}

function suffix(variant: number): string {
  return variant > 0 ? ` ${variant + 1}` : "";
}

/** Merges two schemas for allOf: properties and required united, later keywords win otherwise. */
function merge(a: Schema, b: Schema): Schema {
  const out: Schema = { ...a, ...b };
  if (isSchema(a.properties) || isSchema(b.properties))
    out.properties = { ...(a.properties as Schema), ...(b.properties as Schema) };
  if (Array.isArray(a.required) || Array.isArray(b.required))
    out.required = [...new Set([...((a.required as string[]) ?? []), ...((b.required as string[]) ?? [])])];
  return out;
}

/** A local JSON pointer (`#/$defs/Name`); anything else resolves to nothing. */
function pointer(root: Schema, ref: string): unknown {
  if (ref === "#") return root;
  if (!ref.startsWith("#/")) return undefined;
  let node: unknown = root;
  for (const raw of ref.slice(2).split("/")) {
    const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
    if (!isSchema(node)) return undefined;
    node = node[key];
  }
  return node;
}
