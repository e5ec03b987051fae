// Vitest globalSetup for the "workers" project: starts the relay stub in Node before the
// workerd tests run and hands its URL to them (see vitest.config.ts). Stub relays have origins
// of their own (`http://{name}.{mode}.relays.test`, since a relay's public_url must be a bare
// origin); the workers' outbound service, in this process, sends those to the stub through
// RELAY_STUB_URL_VARIABLE and lets every other fetch through.
import type { TestProject } from "vitest/node";
import { startRelayStub } from "./relay-stub.ts";

/** Shared with vitest.config.ts, which gives the edge the same value as EARSHOT_RELAY_SECRET. */
export const TEST_RELAY_SECRET = "test-relay-secret";
/** Where this process's outbound service finds the stub (set once it listens). */
export const RELAY_STUB_URL_VARIABLE = "EARSHOT_TEST_RELAY_STUB_URL";

declare module "vitest" {
  export interface ProvidedContext {
    relayStubUrl: string;
  }
}

export default async function setup(project: TestProject) {
  const stub = await startRelayStub(TEST_RELAY_SECRET);
  process.env[RELAY_STUB_URL_VARIABLE] = stub.url;
  project.provide("relayStubUrl", stub.url);
  return () => stub.close();
}
