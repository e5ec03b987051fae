// Values the workers project's globalSetup provides (test/stubs/relay-stub.setup.ts).
declare module "vitest" {
  export interface ProvidedContext {
    relayStubUrl: string;
  }
}
export {};
