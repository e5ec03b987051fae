// What the relay stub (relay-stub.ts, Node) does and records, as types only, so the edge tests
// inside workerd can share them without importing Node code.
export type StubMode = "ok" | "error" | "hang" | "full" | "badoffer" | "dropfail";

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
