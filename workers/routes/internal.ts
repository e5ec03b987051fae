// Relay → edge: heartbeats and call events. Each is signed over method, path and body
// (protocol/signed-request.ts) with the sending relay's own key, derived from
// EARSHOT_RELAY_SECRET and the id in its Earshot-Relay header (protocol/relay-key.ts); the body
// must speak for that relay only. A signature is accepted once: the object that applies the
// request remembers its nonce (the RelayRegistry for heartbeats, the CallSession for events).
import type { IRequest } from "itty-router";
import type { z } from "zod";
import {
  CallId,
  Heartbeat,
  MAX_EVENT_BATCH_BYTES,
  RelayCallEvent,
  RelayEventBatch,
  RelayId,
  bareOrigin,
  type RelayEventBatchResponse,
  type RelayEventResult,
} from "../../protocol/relay-api.ts";
import { RELAY_HEADER, deriveRelayKey } from "../../protocol/relay-key.ts";
import { SIGNATURE_HEADER, verifyRequest } from "../../protocol/signed-request.ts";
import { readJson } from "../body.ts";
import { edgeConfig } from "../config.ts";
import { requireApiKey } from "../auth.ts";
import { ApiError, badRequest, forbidden, notFound, unauthorized } from "../errors.ts";
import { log } from "../log.ts";
import { callSession, registry } from "../object-ids.ts";
import { remember } from "../relay-cache.ts";
import type { SignatureNonce } from "../relay-registry.ts";
import { whyUnusable } from "../relay-choice.ts";

const MAX_BODY_BYTES = 16 * 1024;
/** A heartbeat lists up to MAX_HEARTBEAT_CALL_IDS calls (about 72 KB). */
const MAX_HEARTBEAT_BYTES = 96 * 1024;

interface Signed<T> {
  /** The relay the request is from (its Earshot-Relay header, whose key verified it). */
  relayId: string;
  value: T;
  signature: SignatureNonce;
}

/**
 * The body, once the signature of the relay named in Earshot-Relay is verified (before the body
 * is parsed), as a value `schema` accepts.
 */
async function signedJson<S extends z.ZodType>(
  request: Request,
  env: Env,
  schema: S,
  maxBytes = MAX_BODY_BYTES,
): Promise<Signed<z.output<S>>> {
  const relayId = RelayId.safeParse(request.headers.get(RELAY_HEADER));
  if (!relayId.success) {
    throw unauthorized("invalid_signature", `The ${RELAY_HEADER} header must name the relay.`);
  }
  let signature: SignatureNonce | undefined;
  const value = await readJson(request, schema, maxBytes, {
    verify: async (text) => {
      const verified = await verifyRequest(
        await deriveRelayKey(edgeConfig(env).relaySecret, relayId.data),
        request.headers.get(SIGNATURE_HEADER),
        "POST",
        new URL(request.url).pathname,
        text,
      );
      if (!verified.ok) throw unauthorized("invalid_signature", verified.message);
      signature = { nonce: verified.nonce, expires: verified.expires };
    },
  });
  return { relayId: relayId.data, value, signature: signature! };
}

const otherRelay = () =>
  forbidden("relay_id_mismatch", `The body speaks for another relay than ${RELAY_HEADER}.`);

export async function relayHeartbeat(request: IRequest, env: Env): Promise<Response> {
  const { relayId, value: beat, signature } = await signedJson(request, env, Heartbeat, MAX_HEARTBEAT_BYTES);
  if (beat.relay_id !== relayId) throw otherRelay();
  // Calls go to public_url + "/calls": a path there would send them wherever it points.
  if (bareOrigin(beat.public_url) === undefined) {
    throw badRequest(
      "invalid_relay_url",
      "A relay's public_url must be a bare origin (scheme, host and port: no path, query, fragment or credentials).",
      "public_url",
    );
  }
  if (new URL(beat.public_url).protocol !== "https:" && !edgeConfig(env).dev) {
    throw badRequest(
      "insecure_relay_url",
      "A relay's public_url must be https (plain http only with EARSHOT_DEV=1).",
      "public_url",
    );
  }
  const outcome = await registry(env).heartbeat(beat, signature);
  if (!outcome.ok) throw ApiError.from(outcome.error);
  remember(outcome.value.snapshot);
  // Calls the relay no longer runs: each CallSession checks it is not still live in its records.
  await Promise.all(
    outcome.value.goneCalls.map(async (callId) => {
      try {
        await callSession(env, callId)?.relayNoLongerHas(relayId);
      } catch (error) {
        log.warn("could not reconcile a call the relay dropped", { call_id: callId, error: String(error) });
      }
    }),
  );
  return new Response(null, { status: 204 });
}

export async function relayCallEvent(request: IRequest, env: Env): Promise<Response> {
  const id = CallId.safeParse(request.params.id);
  if (!id.success) throw notFound("No such call.");
  const { relayId, value: event, signature } = await signedJson(request, env, RelayCallEvent);
  if (event.relay_id !== relayId) throw otherRelay();
  if (event.call_id !== id.data)
    throw badRequest("call_id_mismatch", "The event is for another call.", "call_id");
  const session = callSession(env, id.data);
  if (!session) throw notFound("No such call.");
  const outcome = await session.relayEvent(event, signature);
  if (!outcome.ok) throw ApiError.from(outcome.error);
  return new Response(null, { status: 204 });
}

/**
 * POST /internal/relays/{relay_id}/events: many calls' events in one request. Each call's events
 * go to its CallSession in one call of the object, in the order sent (connected before ended);
 * different calls go at the same time. The answer is 200 with one result per event, so the relay
 * retries only what can succeed later (429, 5xx) and keeps each call's order.
 */
export async function relayEventBatch(request: IRequest, env: Env): Promise<Response> {
  const relayId = RelayId.safeParse(request.params.relay_id);
  if (!relayId.success) throw notFound("No such relay.");
  const signed = await signedJson(request, env, RelayEventBatch, MAX_EVENT_BATCH_BYTES);
  if (signed.relayId !== relayId.data) throw otherRelay();
  const { value: batch, signature } = signed;
  const results: RelayEventResult[] = Array.from({ length: batch.events.length });
  const byCall = new Map<string, { index: number; event: RelayCallEvent }[]>();
  batch.events.forEach((raw, index) => {
    const parsed = RelayCallEvent.safeParse(raw);
    if (!parsed.success) results[index] = { status: 400, code: "invalid_event" };
    else if (parsed.data.relay_id !== relayId.data) results[index] = { status: 403, code: "wrong_relay" };
    else
      byCall.set(parsed.data.call_id, [
        ...(byCall.get(parsed.data.call_id) ?? []),
        { index, event: parsed.data },
      ]);
  });
  await Promise.all(
    [...byCall].map(async ([callId, items]) => {
      const session = callSession(env, callId);
      if (!session) {
        for (const { index } of items) results[index] = { status: 404, code: "call_not_found" };
        return;
      }
      try {
        const outcomes = await session.relayEvents(
          items.map((item) => item.event),
          signature,
        );
        items.forEach(({ index }, i) => {
          const outcome = outcomes[i]!;
          results[index] = outcome.ok
            ? { status: 204 }
            : { status: outcome.error.status, code: outcome.error.code };
        });
      } catch (error) {
        // The object could not be reached (reset, overloaded): all of this call's events are
        // tried again, in order, by the relay.
        log.warn("a call's relay events were not delivered", { call_id: callId, error: String(error) });
        for (const { index } of items) results[index] = { status: 503, code: "call_unavailable" };
      }
    }),
  );
  return Response.json({ results } satisfies RelayEventBatchResponse);
}

/**
 * GET /admin/relays (API key): the registry as the edge sees it, for operators: each relay, when
 * it was last heard from, and whether it takes calls now (and if not, why).
 */
export async function listRelays(request: IRequest, env: Env): Promise<Response> {
  await requireApiKey(edgeConfig(env), request);
  const { relays, at } = await registry(env).snapshot();
  return Response.json({
    object: "list",
    data: relays
      .sort((a, b) => a.relay_id.localeCompare(b.relay_id))
      .map((relay) => ({
        ...relay,
        last_seen_ago_ms: at - relay.last_seen_ms,
        usable: whyUnusable(relay, at) === undefined,
        unusable_reason: whyUnusable(relay, at) ?? null,
      })),
  });
}

/**
 * DELETE /admin/relays/{relay_id} (API key): forgets a relay and the origin its id is pinned to,
 * so the id can register again from a new origin (a relay that moved host). A relay still
 * running re-registers at its next heartbeat.
 */
export async function removeRelay(request: IRequest, env: Env): Promise<Response> {
  await requireApiKey(edgeConfig(env), request);
  const relayId = RelayId.safeParse(request.params.relay_id);
  if (!relayId.success || !(await registry(env).remove(relayId.data))) throw notFound("No such relay.");
  return new Response(null, { status: 204 });
}
