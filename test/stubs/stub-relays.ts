// How stub relays are named, shared by the stub (Node), the workers' outbound service (Node) and
// the workerd fixtures, so nothing here may import a Node built-in.

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
