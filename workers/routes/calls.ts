// The call resource: POST /v1/realtime/calls places a call (OpenAI's WebRTC flow, and WHIP),
// GET / PATCH / DELETE /v1/realtime/calls/{id} and POST …/hangup read, ICE-restart and end it;
// POST …/resume moves a live call whose relay was lost to another relay (an Earshot extension).
import type { IRequest } from "itty-router";
import { CallId } from "../../protocol/relay-api.ts";
import { requireCaller } from "../auth.ts";
import { decodeText, mediaType, parseJson, readCapped, tooLarge, unsupportedMediaType } from "../body.ts";
import type { CallOwner, Outcome, StartedCall } from "../call-session.ts";
import type { CallClaim } from "../client-secret-ledger.ts";
import { edgeConfig, type EdgeConfig } from "../config.ts";
import { ApiError, badRequest, forbidden, notFound, unauthorized } from "../errors.ts";
import { callSession, newCallSession, secretLedger } from "../object-ids.ts";
import { ipBucket } from "../client-ip.ts";
import { enforceRateLimit, limitApiKey } from "../rate-limiter.ts";
import { cachedRelays } from "../relay-cache.ts";
import { callerLocation, rankRelays } from "../relay-choice.ts";
import { checkOffer, checkSdpFragment, MAX_OFFER_BYTES } from "../sdp.ts";
import { timingOf } from "../server-timing.ts";
import { bindSession, MAX_SESSION_BYTES, type BoundSession } from "../session-config.ts";

const MAX_MULTIPART_BYTES = MAX_OFFER_BYTES + MAX_SESSION_BYTES + 4096;
const SDP = "application/sdp";
const MULTIPART = "multipart/form-data";
const SDPFRAG = "application/trickle-ice-sdpfrag";
/** Relays one offer may try, best first, when the nearer ones turn out to be full. */
const MAX_RELAY_ATTEMPTS = 3;
/** Failures after which no relay holds the call: the client secret gets the call back. */
const REFUNDED = new Set(["no_relay_available", "invalid_offer"]);

export async function createCall(request: IRequest, env: Env, ctx: ExecutionContext): Promise<Response> {
  const config = edgeConfig(env);
  const timing = timingOf(request);
  const type = mediaType(request);
  if (type !== SDP && type !== MULTIPART) {
    throw unsupportedMediaType(`${SDP}, or ${MULTIPART} with sdp and session fields`);
  }
  const body = await timing.time("body", () =>
    readCapped(request, type === SDP ? MAX_OFFER_BYTES : MAX_MULTIPART_BYTES, "SDP offer"),
  );
  const caller = await timing.time("auth", () => requireCaller(config, request));
  if (caller.kind === "api_key") {
    await timing.time("limit", () => limitApiKey(env, config, caller.keyId));
  }

  let offerText: string;
  let sessionField: string | undefined;
  if (type === SDP) {
    offerText = decodeText(body, "SDP offer", "sdp");
  } else {
    ({ offerText, sessionField } = await readMultipart(request, body));
  }
  const offer = checkOffer(offerText);

  // An API key's call brings its session config, checked before a relay is chosen; a client
  // secret's runs under the secret's, claimed from its ledger once there is a relay to call.
  const placedBy =
    caller.kind === "api_key"
      ? { ...caller, bound: await bindSession(parseSessionField(sessionField)) }
      : caller;
  if (placedBy.kind === "client_secret" && sessionField !== undefined) {
    throw badRequest(
      "session_fixed",
      "A client secret's call runs under the secret's session config.",
      "session",
    );
  }

  const region = regionParam(request);
  const relays = await timing.time("relays", () => cachedRelays(env, ctx, config));
  const candidates = rankRelays(relays, {
    from: callerLocation(request, config.dev),
    region,
    nowMs: Date.now(),
    loadPenaltyKm: config.loadPenaltyKm,
  }).slice(0, MAX_RELAY_ATTEMPTS);
  if (candidates.length === 0) {
    throw new ApiError(
      503,
      "no_relay_available",
      region === undefined
        ? "No media relay is available right now; try again shortly."
        : `No media relay is available in region "${region}" right now.`,
      { headers: { "Retry-After": "5" } },
    );
  }

  // An offer that never connects holds a relay slot until the connect timeout: bounded per IP
  // (offers per connect timeout) and, below, per client secret (calls not yet connected).
  // Not under EARSHOT_DEV, where every request is one local client (client-ip.ts).
  if (config.maxUnconnectedPerIp > 0 && !config.dev) {
    await enforceRateLimit(env, `offers:${ipBucket(config, request)}`, {
      requests: config.maxUnconnectedPerIp,
      periodSeconds: config.connectTimeoutSeconds,
    });
  }
  const { callId, stub: session } = newCallSession(env);
  let bound: BoundSession;
  let owner: CallOwner;
  let project: string | undefined;
  let ledger: ReturnType<typeof secretLedger>;
  if (placedBy.kind === "client_secret") {
    const { claims } = placedBy;
    const secret = secretLedger(env, claims.id);
    if (!secret) throw unauthorized("invalid_client_secret", "The client secret is not valid.");
    ledger = secret;
    const hold = {
      callId,
      maxUnconnected: config.maxUnconnectedPerSecret,
      untilMs: Date.now() + config.connectTimeoutSeconds * 1000 + config.relayTimeoutMs,
    };
    // RPC retypes the loose session object; it is the same plain data.
    const claim = (await timing.time("ledger", () =>
      secret.claimCall(claims.sessionSha256, config.maxCallsPerSecret, hold),
    )) as CallClaim;
    if (!claim.ok) {
      if (claim.reason === "call_limit_reached") {
        throw forbidden(
          "call_limit_reached",
          `This client secret has started its ${config.maxCallsPerSecret} calls.`,
        );
      }
      if (claim.reason === "too_many_unconnected") {
        throw new ApiError(
          429,
          "too_many_unconnected_calls",
          `This client secret has ${config.maxUnconnectedPerSecret} calls that have not connected yet; ` +
            "connect or end one first.",
          { headers: { "Retry-After": String(config.connectTimeoutSeconds) } },
        );
      }
      throw unauthorized("invalid_client_secret", "The client secret is not valid.");
    }
    bound = { session: claim.session, sha256: claims.sessionSha256 };
    owner = { kind: "client_secret", secretId: claims.id };
    project = claims.project;
  } else {
    bound = placedBy.bound;
    owner = { kind: "api_key", keyId: placedBy.keyId };
    project = placedBy.keyId;
  }

  // RPC retypes the result (tuples become arrays); it is the same plain data.
  const outcome = (await timing.time("session", async () =>
    session.start({
      callId,
      owner,
      project,
      relays: candidates.map((r) => ({
        id: r.relay_id,
        region: r.region,
        publicUrl: r.public_url,
        bootId: r.boot_id,
      })),
      offerSdp: offer.sdp,
      session: bound.session,
    }),
  )) as Outcome<StartedCall>;
  if (!outcome.ok && ledger) {
    // No relay holds the call: refused calls are given back; others just free their slot.
    const settle = REFUNDED.has(outcome.error.code) ? ledger.refundCall(callId) : ledger.callSettled(callId);
    ctx.waitUntil(settle);
  }
  const started = unwrap(outcome);
  timing.merge(started.timing);
  return new Response(started.answerSdp, {
    status: 201,
    headers: { "Content-Type": SDP, Location: `/v1/realtime/calls/${callId}`, "Cache-Control": "no-store" },
  });
}

/**
 * `POST /v1/realtime/calls/{id}/resume` with a fresh SDP offer, by the call's client secret (even
 * expired: a call outlives its secret) or an API key of its project. Another relay answers; the
 * call keeps its id, record and conversation. 404 for someone else's call, 410 for an ended one.
 */
export async function resumeCall(request: IRequest, env: Env, ctx: ExecutionContext): Promise<Response> {
  if (mediaType(request) !== SDP) throw unsupportedMediaType(SDP);
  const config = edgeConfig(env);
  const timing = timingOf(request);
  const offer = checkOffer(
    decodeText(await readCapped(request, MAX_OFFER_BYTES, "SDP offer"), "SDP offer", "sdp"),
  );
  const { stub, actor } = await resolveCall(request, env);
  const relays = await timing.time("relays", () => cachedRelays(env, ctx, config));
  // One more than a new call tries: the lost relay may still be listed, and is left out.
  const candidates = rankRelays(relays, {
    from: callerLocation(request, config.dev),
    nowMs: Date.now(),
    loadPenaltyKm: config.loadPenaltyKm,
  }).slice(0, MAX_RELAY_ATTEMPTS + 1);
  const outcome = (await timing.time("session", async () =>
    stub.resume(actor, {
      offerSdp: offer.sdp,
      relays: candidates.map((r) => ({
        id: r.relay_id,
        region: r.region,
        publicUrl: r.public_url,
        bootId: r.boot_id,
      })),
    }),
  )) as Outcome<StartedCall>;
  const started = unwrap(outcome);
  timing.merge(started.timing);
  return new Response(started.answerSdp, {
    status: 201,
    headers: {
      "Content-Type": SDP,
      Location: `/v1/realtime/calls/${String(request.params.id)}`,
      "Cache-Control": "no-store",
    },
  });
}

export async function getCall(request: IRequest, env: Env): Promise<Response> {
  const { stub, actor } = await resolveCall(request, env);
  return Response.json(unwrap(await stub.inspect(actor)), { headers: { "Cache-Control": "no-store" } });
}

export async function patchCall(request: IRequest, env: Env): Promise<Response> {
  if (mediaType(request) !== SDPFRAG) throw unsupportedMediaType(SDPFRAG);
  const fragment = checkSdpFragment(
    decodeText(await readCapped(request, MAX_OFFER_BYTES, "SDP fragment"), "SDP fragment"),
  );
  const { stub, actor } = await resolveCall(request, env);
  const result = unwrap(await stub.updateIce(actor, fragment));
  if (result.status === 204) return new Response(null, { status: 204 });
  return new Response(result.body, { status: 200, headers: { "Content-Type": SDPFRAG } });
}

export async function hangupCall(request: IRequest, env: Env): Promise<Response> {
  const { stub, actor } = await resolveCall(request, env);
  unwrap(await stub.hangup(actor));
  return new Response(null, { status: 200 });
}

export async function resolveCall(request: IRequest, env: Env) {
  const config = edgeConfig(env);
  const id = CallId.safeParse(request.params.id);
  const stub = id.success ? callSession(env, id.data) : undefined;
  if (!stub) throw notFound("No such call.");
  const actor = await callActor(config, env, request);
  return { stub, actor };
}

/** A call's holder may manage it even after its client secret has expired. */
async function callActor(config: EdgeConfig, env: Env, request: Request): Promise<CallOwner> {
  const caller = await requireCaller(config, request, { allowExpired: true });
  if (caller.kind === "api_key") {
    await limitApiKey(env, config, caller.keyId);
    return { kind: "api_key", keyId: caller.keyId };
  }
  return { kind: "client_secret", secretId: caller.claims.id };
}

export function unwrap<T>(outcome: Outcome<T>): T {
  if (!outcome.ok) throw ApiError.from(outcome.error);
  return outcome.value;
}

async function readMultipart(request: Request, body: Uint8Array<ArrayBuffer>) {
  let form: FormData;
  try {
    form = await new Response(body, {
      headers: { "content-type": request.headers.get("content-type")! },
    }).formData();
  } catch {
    throw badRequest("invalid_multipart", "The multipart/form-data body could not be parsed.");
  }
  const sdp = form.get("sdp");
  if (sdp === null) throw badRequest("missing_sdp", "The form has no sdp field.", "sdp");
  const session = form.get("session");
  const text = async (field: string | File, name: string, limit: number) => {
    if (typeof field === "string") {
      if (new TextEncoder().encode(field).byteLength > limit) throw tooLarge(limit, name);
      return field;
    }
    if (field.size > limit) throw tooLarge(limit, name);
    return decodeText(new Uint8Array(await field.arrayBuffer()), name, name);
  };
  return {
    offerText: await text(sdp, "sdp", MAX_OFFER_BYTES),
    sessionField: session === null ? undefined : await text(session, "session", MAX_SESSION_BYTES),
  };
}

function parseSessionField(field: string | undefined): unknown {
  return field === undefined ? undefined : parseJson(field, "session field", "session");
}

function regionParam(request: IRequest): string | undefined {
  const region = request.query.region;
  if (region === undefined) return undefined;
  if (typeof region !== "string" || !/^[a-z0-9-]{1,32}$/.test(region)) {
    throw badRequest("invalid_region", "The region must be a relay region name such as eu-west.", "region");
  }
  return region;
}
