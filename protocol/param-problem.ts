// The first problem zod found in a request, said the way OpenAI says it: a code
// (`unknown_parameter`, `missing_required_parameter`, `invalid_type`, `invalid_value`), a message
// that quotes the parameter, and `param` in OpenAI's notation (`session.tools[0].name`). Shared by
// the edge (HTTP 400 bodies) and the relay and agent (`error` events), so a client gets the same
// answer for the same mistake from the mint and from `session.update`.
import type { z } from "zod";

export type ParamProblemCode =
  "unknown_parameter" | "missing_required_parameter" | "invalid_type" | "invalid_value";

export interface ParamProblem {
  code: ParamProblemCode;
  message: string;
  /** The offending parameter, or null when the problem is the whole input. */
  param: string | null;
}

type Path = readonly PropertyKey[];

/** `a.b[0].c` from a path, under an optional prefix (`session`). */
export function paramName(path: Path, prefix?: string): string {
  let name = prefix ?? "";
  for (const key of path) {
    if (typeof key === "number") name += `[${key}]`;
    else name += name === "" ? String(key) : `.${String(key)}`;
  }
  return name;
}

/**
 * The first issue of `error` (raised parsing `input`) as OpenAI would report it. `prefix` names
 * where `input` sits in the request (`session` for a client secret's body.session).
 */
export function paramProblem(error: z.ZodError, input: unknown, prefix?: string): ParamProblem {
  const first = error.issues[0];
  if (!first) return { code: "invalid_value", message: "Invalid input.", param: prefix ?? null };
  const { issue, path } = deepest(first, first.path);
  const param = paramName(path, prefix) || null;
  const quoted = param ?? "input";
  switch (issue.code) {
    case "unrecognized_keys": {
      const unknown = paramName([...path, issue.keys[0] ?? ""], prefix);
      return { code: "unknown_parameter", message: `Unknown parameter: '${unknown}'.`, param: unknown };
    }
    case "invalid_type": {
      const actual = valueAt(input, path);
      if (actual === undefined) return missing(quoted, param);
      return {
        code: "invalid_type",
        message: `Invalid type for '${quoted}': expected ${article(issue.expected)}, but got ${article(typeName(actual))} instead.`,
        param,
      };
    }
    case "invalid_union": {
      // Every branch failed at the union's own level: a value of none of the accepted types.
      const actual = valueAt(input, path);
      if (actual === undefined) return missing(quoted, param);
      if ("options" in issue && Array.isArray(issue.options)) {
        // A discriminated union whose `type` matched no branch (zod reports it at the key).
        return {
          code: "invalid_value",
          message: `Invalid value for '${quoted}': ${show(actual)}. Supported values are: ${listOf(issue.options)}.`,
          param,
        };
      }
      const expected = issue.errors.flatMap((branch) =>
        branch[0]?.code === "invalid_type" ? [article(branch[0].expected)] : [],
      );
      return {
        code: "invalid_type",
        message: `Invalid type for '${quoted}': expected ${[...new Set(expected)].join(" or ") || "another type"}, but got ${article(typeName(actual))} instead.`,
        param,
      };
    }
    case "invalid_value":
      return {
        code: "invalid_value",
        message: `Invalid value for '${quoted}': ${show(valueAt(input, path))}. Supported values are: ${listOf(issue.values)}.`,
        param,
      };
    case "too_big":
    case "too_small": {
      const bound = issue.code === "too_big" ? issue.maximum : issue.minimum;
      const sign = issue.code === "too_big" ? (issue.inclusive ? "<=" : "<") : issue.inclusive ? ">=" : ">";
      const actual = valueAt(input, path);
      const what =
        issue.origin === "string"
          ? "string length"
          : issue.origin === "array"
            ? "array length"
            : `${issue.origin}`;
      const size =
        typeof actual === "string" || Array.isArray(actual) ? actual.length : JSON.stringify(actual);
      return {
        code: "invalid_value",
        message: `Invalid '${quoted}': ${what} ${issue.code === "too_big" ? "above maximum" : "below minimum"} value. Expected ${sign} ${String(bound)}, but got ${String(size)} instead.`,
        param,
      };
    }
    default:
      return { code: "invalid_value", message: `Invalid '${quoted}': ${issue.message}.`, param };
  }
}

/**
 * Inside a union every branch reports; the one that got furthest into the value is the one the
 * client meant (`{"type":"function"}` without a name is a function tool missing its name, not a
 * bad MCP tool).
 */
function deepest(issue: z.core.$ZodIssue, path: Path): { issue: z.core.$ZodIssue; path: Path } {
  if (issue.code !== "invalid_union" || issue.errors.length === 0) return { issue, path };
  let best: { issue: z.core.$ZodIssue; path: Path } | null = null;
  for (const branch of issue.errors) {
    const first = branch[0];
    if (!first) continue;
    const candidate = deepest(first, [...path, ...first.path]);
    // Deeper wins; at equal depth, a branch whose type matched (a bad enum value, say) wins.
    if (
      !best ||
      candidate.path.length > best.path.length ||
      (candidate.path.length === best.path.length &&
        best.issue.code === "invalid_type" &&
        candidate.issue.code !== "invalid_type")
    ) {
      best = candidate;
    }
  }
  // Every branch failed on the value's type at the union's own level: report the union.
  return best && (best.path.length > path.length || best.issue.code !== "invalid_type")
    ? best
    : { issue, path };
}

function missing(quoted: string, param: string | null): ParamProblem {
  return { code: "missing_required_parameter", message: `Missing required parameter: '${quoted}'.`, param };
}

function valueAt(input: unknown, path: Path): unknown {
  let value = input;
  for (const key of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "decimal";
  return typeof value;
}

const show = (value: unknown) => (typeof value === "string" ? `'${value}'` : JSON.stringify(value));

const article = (type: string) => (/^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`);

function listOf(values: readonly unknown[]): string {
  const quoted = values.filter((v) => v !== undefined).map((v) => `'${String(v)}'`);
  return quoted.length <= 1
    ? (quoted[0] ?? "none")
    : `${quoted.slice(0, -1).join(", ")} and ${quoted.at(-1)!}`;
}
