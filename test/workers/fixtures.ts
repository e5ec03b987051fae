// Arrange helpers for the edge tests: requests through the Worker's front door, SDP offers,
// relays that heartbeat into the registry and are served by the loopback relay stub, and
// signed relay events.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { expect, inject } from "vitest";
import { randomToken } from "../../protocol/encoding.ts";
import type { Heartbeat, RelayCallEvent } from "../../protocol/relay-api.ts";
import { RELAY_HEADER, deriveRelayKey } from "../../protocol/relay-key.ts";
import { SIGNATURE_HEADER, signRequest } from "../../protocol/signed-request.ts";
import { STUB_BOOT_ID, stubRelayOrigin, type StubMode, type StubRecord } from "../stubs/stub-relays.ts";
import worker from "../../workers/index.ts";

export const API_KEY = "sk_test_primary";
export const OTHER_API_KEY = "sk_test_secondary";
export const RELAY_SECRET = "test-relay-secret";
export const SIGNING_KEYS = { k2: "test-signing-secret-two", k1: "test-signing-secret-one" } as const;
export const STUB_URL = inject("relayStubUrl");
export { STUB_BOOT_ID, type StubMode };
/** A loopback name: the tests' edge runs with EARSHOT_DEV=1, which answers no other (dev-host.ts). */
const BASE = "https://edge.localhost";

export type Geo = { latitude: string; longitude: string };
export const PLACES = {
  paris: { latitude: "48.8566", longitude: "2.3522" },
  newYork: { latitude: "40.7128", longitude: "-74.0060" },
  tokyo: { latitude: "35.6762", longitude: "139.6503" },
  berlin: { latitude: "52.5200", longitude: "13.4050" },
  saoPaulo: { latitude: "-23.5505", longitude: "-46.6333" },
  sydney: { latitude: "-33.8688", longitude: "151.2093" },
} satisfies Record<string, Geo>;

export interface EdgeInit extends Omit<RequestInit, "cf"> {
  cf?: Geo;
  /**
   * CF-Connecting-IP; a fresh documentation address per request unless given. The per-IP limit
   * reads it only with EARSHOT_DEV=0 (on Cloudflare); a dev edge, as here by default, counts every
   * request against one local bucket (120 a minute; each test file has its own workerd).
   */
  ip?: string;
  apiKey?: string;
  bearer?: string;
  /** The Host the request is addressed to (`name[:port]`, over http); the tests' base unless given. */
  host?: string;
}

/** An address in a /64 of its own, so per-IP rate limits on Cloudflare never couple unrelated tests. */
export function freshIp(): string {
  const groups = crypto.getRandomValues(new Uint16Array(4));
  return `2001:db8:${[...groups].map((g) => g.toString(16)).join(":")}::1`;
}

export function unique(prefix: string): string {
  return `${prefix}-${randomToken(6)
    .toLowerCase()
    .replace(/[^a-z0-9]/g, "x")}`;
}

function buildRequest(path: string, init: EdgeInit = {}): Request {
  const { cf, ip, apiKey, bearer, host, ...rest } = init;
  const headers = new Headers(rest.headers);
  if (!headers.has("cf-connecting-ip")) headers.set("cf-connecting-ip", ip ?? freshIp());
  const token = apiKey ?? bearer;
  if (token !== undefined) headers.set("authorization", `Bearer ${token}`);
  const base = host === undefined ? BASE : `http://${host}`;
  return new Request(`${base}${path}`, { ...rest, headers, ...(cf ? { cf } : {}) } as RequestInit);
}

/** Through the runtime's front door, exactly as a client's request arrives. */
export function edge(path: string, init: EdgeInit = {}): Promise<Response> {
  return exports.default.fetch(buildRequest(path, init));
}

/** The same handler with some bindings changed, e.g. EARSHOT_DEV=0 for production behaviour. */
export function edgeWith(overrides: Partial<Record<keyof Env, string>>, path: string, init: EdgeInit = {}) {
  return handleWith(overrides, buildRequest(path, init));
}

export async function handleWith(
  overrides: Partial<Record<keyof Env, string>>,
  request: Request,
): Promise<Response> {
  const ctx = createExecutionContext();
  const response = await worker.fetch(
    request as Request<unknown, IncomingRequestCfProperties>,
    { ...env, ...overrides } as unknown as Env,
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return response;
}

export async function errorOf(
  response: Response,
): Promise<{ type: string; code: string; message: string; param: string | null }> {
  const body = (await response.json()) as {
    error: { type: string; code: string; message: string; param: string | null };
  };
  expect(Object.keys(body)).toEqual(["error"]);
  expect(body.error.message).not.toMatch(/\n\s+at /);
  return body.error;
}

export interface ClientSecretBody {
  value: string;
  expires_at: number;
  session: Record<string, unknown>;
}

export function postClientSecret(body: unknown = {}, apiKey = API_KEY): Promise<Response> {
  return edge("/v1/realtime/client_secrets", {
    method: "POST",
    apiKey,
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

export async function mintSecret(body: unknown = {}, apiKey = API_KEY): Promise<ClientSecretBody> {
  const response = await postClientSecret(body, apiKey);
  expect(response.status).toBe(200);
  return (await response.json()) as ClientSecretBody;
}

// ─── SDP ───────────────────────────────────────────────────────────────────────────────────────

export interface OfferShape {
  audioLines?: number;
  application?: boolean;
  video?: boolean;
  fingerprint?: boolean;
  ice?: boolean;
  candidates?: string[];
}

export const PUBLIC_CANDIDATE =
  "a=candidate:1 1 udp 1686052607 203.0.113.7 54400 typ srflx raddr 0.0.0.0 rport 0";

/** An offer shaped like Chrome's: audio (Opus) plus the data channel. */
export function offerSdp(shape: OfferShape = {}): string {
  const {
    audioLines = 1,
    application = true,
    video = false,
    fingerprint = true,
    ice = true,
    candidates = [
      "a=candidate:2 1 udp 2122260223 3f2a9d1e-8c6b-4a57-9d1e-0123456789ab.local 54399 typ host generation 0",
      PUBLIC_CANDIDATE,
    ],
  } = shape;
  const mids: string[] = [];
  const sections: string[][] = [];
  const common = (mid: string) => [
    "c=IN IP4 0.0.0.0",
    ...(ice ? ["a=ice-ufrag:Zx9q", "a=ice-pwd:d2VhcmVhbGx5c2VjcmV0cGFzcw12"] : []),
    ...(fingerprint
      ? [
          "a=fingerprint:sha-256 5B:6C:7D:8E:9F:A0:B1:C2:D3:E4:F5:06:17:28:39:4A:5B:6C:7D:8E:9F:A0:B1:C2:D3:E4:F5:06:17:28:39:4A",
        ]
      : []),
    "a=setup:actpass",
    `a=mid:${mid}`,
  ];
  for (let i = 0; i < audioLines; i++) {
    const mid = String(mids.length);
    mids.push(mid);
    sections.push([
      "m=audio 9 UDP/TLS/RTP/SAVPF 111",
      ...common(mid),
      "a=sendrecv",
      "a=rtcp-mux",
      "a=rtpmap:111 opus/48000/2",
      "a=fmtp:111 minptime=10;useinbandfec=1",
      ...(i === 0 ? candidates : []),
    ]);
  }
  if (video) {
    const mid = String(mids.length);
    mids.push(mid);
    sections.push(["m=video 9 UDP/TLS/RTP/SAVPF 96", ...common(mid), "a=rtpmap:96 VP8/90000"]);
  }
  if (application) {
    const mid = String(mids.length);
    mids.push(mid);
    sections.push(["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", ...common(mid), "a=sctp-port:5000"]);
  }
  return [
    "v=0",
    "o=- 4215775240449105457 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    `a=group:BUNDLE ${mids.join(" ")}`,
    "a=msid-semantic: WMS",
    ...sections.flat(),
    "",
  ].join("\r\n");
}

export function postOffer(sdp: string, init: EdgeInit & { query?: string } = {}): Promise<Response> {
  const { query = "", ...rest } = init;
  return edge(`/v1/realtime/calls${query}`, {
    method: "POST",
    ...rest,
    headers: { "content-type": "application/sdp", ...(rest.headers as Record<string, string> | undefined) },
    body: sdp,
  });
}

export function callIdOf(response: Response): string {
  const location = response.headers.get("location");
  expect(location).toMatch(/^\/v1\/realtime\/calls\/rtc_[A-Za-z0-9_-]+$/);
  return location!.split("/").at(-1)!;
}

// ─── Relays ────────────────────────────────────────────────────────────────────────────────────

export type { StubRecord };

export interface RelaySpec extends Partial<Omit<Heartbeat, "relay_id">> {
  relay_id: string;
  mode?: StubMode;
}

export function stubRelayUrl(relayId: string, mode: StubMode = "ok"): string {
  return stubRelayOrigin(relayId, mode);
}

export function heartbeatOf(spec: RelaySpec): Heartbeat {
  const { mode = "ok", ...beat } = spec;
  return {
    region: "test",
    lat: 50.11,
    lon: 8.68,
    boot_id: STUB_BOOT_ID,
    public_url: stubRelayUrl(spec.relay_id, mode),
    capacity: 100,
    active_calls: 0,
    draining: false,
    interval_seconds: 5,
    ...beat,
  };
}

/**
 * A relay's signed POST, as its edge client sends it: signed with the key of the relay it names
 * (the body's relay_id, or the batch path's, unless `relayId` says otherwise) derived from `secret`.
 */
export async function signedPost(
  path: string,
  body: string,
  options: { secret?: string; relayId?: string; key?: string; nowSeconds?: number } = {},
): Promise<Request> {
  const relayId = options.relayId ?? relayIdOf(path, body);
  const key = options.key ?? (await deriveRelayKey(options.secret ?? RELAY_SECRET, relayId));
  return buildRequest(path, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      [RELAY_HEADER]: relayId,
      [SIGNATURE_HEADER]: await signRequest(key, "POST", path, body, options.nowSeconds),
    },
    body,
  });
}

function relayIdOf(path: string, body: string): string {
  const batch = /^\/internal\/relays\/([^/]+)\/events$/.exec(path);
  if (batch) return decodeURIComponent(batch[1]!);
  try {
    const parsed = JSON.parse(body) as { relay_id?: unknown };
    if (typeof parsed.relay_id === "string") return parsed.relay_id;
  } catch {
    // not JSON: the tests of malformed bodies sign as some relay
  }
  return "relay-unnamed";
}

export async function heartbeat(spec: RelaySpec): Promise<Response> {
  return exports.default.fetch(
    await signedPost("/internal/relays/heartbeat", JSON.stringify(heartbeatOf(spec))),
  );
}

/** Registers relays and checks the edge took each heartbeat. */
export async function registerRelays(...specs: RelaySpec[]): Promise<void> {
  for (const spec of specs) expect((await heartbeat(spec)).status).toBe(204);
}

/** One relay in a region of its own, so a test can pin calls to it with `?region=`. */
export async function soloRelay(
  mode: StubMode = "ok",
): Promise<{ relayId: string; region: string; query: string }> {
  const relayId = unique("relay");
  const region = unique("r");
  await registerRelays({ relay_id: relayId, region, mode });
  return { relayId, region, query: `?region=${region}` };
}

/** A body as text without workerd's warning about non-text types (application/sdp). */
export async function textOf(response: Response): Promise<string> {
  return new TextDecoder().decode(await response.arrayBuffer());
}

export async function stubRecords(relayId: string): Promise<StubRecord[]> {
  const response = await fetch(`${STUB_URL}/records/${relayId}`);
  return (await response.json()) as StubRecord[];
}

/** A relay event without its call id (the helper fills it in). */
export type RelayEventInput = RelayCallEvent extends infer E
  ? E extends RelayCallEvent
    ? Omit<E, "call_id">
    : never
  : never;

export async function relayEvent(callId: string, event: RelayEventInput): Promise<Response> {
  const path = `/internal/calls/${callId}/events`;
  return exports.default.fetch(await signedPost(path, JSON.stringify({ ...event, call_id: callId })));
}

export function getCall(callId: string, init: EdgeInit = { apiKey: API_KEY }): Promise<Response> {
  return edge(`/v1/realtime/calls/${callId}`, init);
}

export async function callView(callId: string): Promise<{
  state: string;
  end_reason: string | null;
  relay: { id: string; region: string };
  timestamps: Record<string, number>;
}> {
  const response = await getCall(callId);
  expect(response.status).toBe(200);
  return (await response.json()) as Awaited<ReturnType<typeof callView>>;
}

/** Places a call with an API key on a relay pinned by region; returns its id. */
export async function placeCall(query: string, init: EdgeInit = { apiKey: API_KEY }): Promise<string> {
  const response = await postOffer(offerSdp(), { ...init, query });
  expect(response.status).toBe(201);
  return callIdOf(response);
}

/** Polls until `probe` returns a value (not undefined), or fails after `timeoutMs`. */
export async function waitFor<T>(
  probe: () => Promise<T | undefined>,
  what: string,
  timeoutMs = 3000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
