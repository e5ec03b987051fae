// Vitest globalSetup for the "workers" project: starts the relay stub in Node before the
// workerd tests run and hands its URL to them (see vitest.config.ts). workerd, as Miniflare
// runs it, fetches 127.0.0.1 directly, from the tests and from inside Durable Objects alike,
// so no outboundService is needed: the edge reaches the stub exactly as it reaches a relay.
import type { TestProject } from "vitest/node";
import { startRelayStub } from "./relay-stub.ts";

/** Shared with vitest.config.ts, which gives the edge the same value as EARSHOT_RELAY_SECRET. */
export const TEST_RELAY_SECRET = "test-relay-secret";

declare module "vitest" {
  export interface ProvidedContext {
    relayStubUrl: string;
  }
}

export default async function setup(project: TestProject) {
  const stub = await startRelayStub(TEST_RELAY_SECRET);
  project.provide("relayStubUrl", stub.url);
  return () => stub.close();
}
