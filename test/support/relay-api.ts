// Speaking the relay's HTTP API and the edge's call API as a client does: call ids, tickets
// signed with the relay's key (derived from its secret), and the POSTs that place a call.
import { randomBytes } from "node:crypto";
import { TICKET_HEADER, type Heartbeat } from "../../protocol/relay-api.ts";
import { deriveRelayKey } from "../../protocol/relay-key.ts";
import { signSidebandTicket, signTicket } from "../../protocol/ticket.ts";

/** The relay secret of relays the tests start unless told otherwise. */
export const TEST_SECRET = "test-relay-secret-0123456789";
/** The RELAY_ID of in-process relays, and the relay tickets are for unless told otherwise. */
export const TEST_RELAY_ID = "relay-test";
/** The test relays' RELAY_METRICS_TOKEN; `metricsAuth` is the header that carries it. */
export const TEST_METRICS_TOKEN = "test-metrics-token-0123456789";
export const metricsAuth = { authorization: `Bearer ${TEST_METRICS_TOKEN}` };

export function newCallId(): string {
  return `rtc_${randomBytes(12).toString("base64url")}`;
}

/** A test relay's own key (protocol/relay-key.ts), as the edge derives it to sign PATCH and DELETE. */
export function relayKeyOf(relayId = TEST_RELAY_ID, secret = TEST_SECRET): Promise<string> {
  return deriveRelayKey(secret, relayId);
}

/** The boot id a relay runs with now (its /healthz says), which its tickets must carry. */
export async function bootIdOf(relayUrl: string): Promise<string> {
  const response = await fetch(`${relayUrl}/healthz`);
  const { boot_id } = (await response.json()) as { boot_id: string };
  return boot_id;
}

/** A ticket as the edge signs it: with the relay's key, for its current boot (`bootId`). */
export async function ticketFor(
  callId: string,
  offerSdp: string,
  session: unknown = {},
  options: {
    secret?: string;
    relayId?: string;
    bootId: string;
    nonce?: string;
    nowSeconds?: number;
    ttlSeconds?: number;
  },
): Promise<string> {
  const relayId = options.relayId ?? TEST_RELAY_ID;
  return signTicket(
    await deriveRelayKey(options.secret ?? TEST_SECRET, relayId),
    { callId, relayId, bootId: options.bootId, offerSdp, session },
    options,
  );
}

/** A sideband ticket as the edge signs it, for the relay's current boot (`bootId`). */
export async function sidebandTicketFor(
  callId: string,
  options: { bootId: string; secret?: string; relayId?: string; keyId?: string; nowSeconds?: number },
): Promise<string> {
  const relayId = options.relayId ?? TEST_RELAY_ID;
  return signSidebandTicket(
    await deriveRelayKey(options.secret ?? TEST_SECRET, relayId),
    { callId, relayId, bootId: options.bootId, keyId: options.keyId ?? "key_test" },
    options,
  );
}

/** POST /calls on a relay, as the edge does. */
export async function postCall(
  url: string,
  body: { call_id: string; offer_sdp: string; session?: unknown },
  ticket: string | undefined,
): Promise<Response> {
  return fetch(`${url}/calls`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(ticket ? { [TICKET_HEADER]: ticket } : {}) },
    body: JSON.stringify({ session: {}, ...body }),
  });
}

/** POST /v1/realtime/calls on the edge with an SDP offer, as a browser does. */
export async function postEdgeCall(
  edgeUrl: string,
  bearer: string,
  offerSdp: string,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(`${edgeUrl}/v1/realtime/calls`, {
    method: "POST",
    headers: { authorization: `Bearer ${bearer}`, "content-type": "application/sdp", ...headers },
    body: offerSdp,
  });
}

/** A heartbeat of a small standalone test relay. */
export function testHeartbeat(relayId: string): Heartbeat {
  return {
    relay_id: relayId,
    boot_id: "test-boot",
    region: "local",
    lat: 0,
    lon: 0,
    public_url: "http://127.0.0.1:1",
    capacity: 10,
    active_calls: 0,
    draining: false,
    interval_seconds: 60,
  };
}
