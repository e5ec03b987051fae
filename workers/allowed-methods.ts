// 405 for a known path asked with the wrong method, with the Allow header RFC 9110 requires;
// 404 only when no route has the path at all. Read from the router's own table, so a route
// added later is covered without a second list to keep in step.
import type { RouteEntry } from "itty-router";
import { ApiError, notFound } from "./errors.ts";

/** The methods routed for `pathname`, in table order, OPTIONS last when present. */
export function allowedMethods(routes: readonly RouteEntry[], pathname: string): string[] {
  const methods = new Set<string>();
  for (const [method, pattern] of routes) {
    if (method !== "ALL" && pattern.test(pathname)) methods.add(method);
  }
  return [...methods];
}

/** What an unrouted request gets: 405 with Allow when the path exists, else 404. */
export function unrouted(routes: readonly RouteEntry[], request: Request): ApiError {
  const { pathname } = new URL(request.url);
  const allow = allowedMethods(routes, pathname);
  if (allow.length === 0) return notFound();
  return new ApiError(
    405,
    "method_not_allowed",
    `${request.method} is not allowed here; use ${allow.join(", ")}.`,
    { headers: { Allow: allow.join(", ") } },
  );
}
