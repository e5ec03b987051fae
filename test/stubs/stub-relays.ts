// How stub relays are named and what they record, shared by the stub (Node), the workers'
// outbound service (Node) and the workerd fixtures, so nothing here may import a Node built-in.

/** How a stub relay behaves (test/stubs/relay-stub.ts). */
export type StubMode = "ok" | "error" | "hang" | "full" | "badoffer" | "dropfail" | "rebooted";

/** The boot id every stub relay runs with (the tests' heartbeats send it). */
export const STUB_BOOT_ID = "stub-boot-0001";
const STUB_HOST_SUFFIX = ".relays.test";

/** The public URL of stub relay `name` behaving as `mode`: a bare origin. */
export function stubRelayOrigin(name: string, mode: StubMode = "ok"): string {
  return `http://${name}.${mode}${STUB_HOST_SUFFIX}`;
}

/**
 * Where a request to a stub relay's origin goes on the stub, or undefined for any other URL:
 * `http://{name}.{mode}.relays.test/calls` → `{stub}/relays/{name}/{mode}/calls`.
 */
export function stubRoute(stubUrl: string, url: URL): string | undefined {
  if (!url.hostname.endsWith(STUB_HOST_SUFFIX)) return undefined;
  const label = url.hostname.slice(0, -STUB_HOST_SUFFIX.length);
  const dot = label.lastIndexOf(".");
  return `${stubUrl}/relays/${label.slice(0, dot)}/${label.slice(dot + 1)}${url.pathname}${url.search}`;
}

export interface StubRecord {
  method: string;
  /** Path below the relay's public URL, e.g. `/calls/rtc_…`. */
  path: string;
  contentType: string | null;
  body: string;
  /** The ticket (POST /calls) or the signature (PATCH, DELETE) verified against the secret. */
  authenticated: boolean;
  authError?: string;
  callId?: string;
  /** The Earshot-Ticket header of a POST /calls, as received. */
  ticket?: string;
}
