// Relay → edge: heartbeats and call events. Both are signed with EARSHOT_RELAY_SECRET over
// method, path and body (protocol/signed-request.ts) and validated with the shared schemas.
import type { IRequest } from "itty-router";
import type { z } from "zod";
import {
  CallId,
  Heartbeat,
  MAX_EVENT_BATCH_BYTES,
  RelayCallEvent,
  RelayEventBatch,
  RelayId,
  type RelayEventBatchResponse,
  type RelayEventResult,
} from "../../protocol/relay-api.ts";
import { SIGNATURE_HEADER, verifyRequest } from "../../protocol/signed-request.ts";
import { readJson } from "../body.ts";
import { edgeConfig } from "../config.ts";
import { requireApiKey } from "../auth.ts";
import { ApiError, badRequest, notFound, unauthorized } from "../errors.ts";
import { log } from "../log.ts";
import { callSession, registry } from "../object-ids.ts";
import { remember } from "../relay-cache.ts";
import { whyUnusable } from "../relay-choice.ts";

const MAX_BODY_BYTES = 16 * 1024;

/** The body, once its signature is verified (before it is parsed), as a value `schema` accepts. */
function signedJson<S extends z.ZodType>(
  request: Request,
  env: Env,
  schema: S,
  maxBytes = MAX_BODY_BYTES,
): Promise<z.output<S>> {
  return readJson(request, schema, maxBytes, {
    verify: async (text) => {
      const verified = await verifyRequest(
        edgeConfig(env).relaySecret,
        request.headers.get(SIGNATURE_HEADER),
        "POST",
        new URL(request.url).pathname,
        text,
      );
      if (!verified.ok) throw unauthorized("invalid_signature", verified.message);
    },
  });
}

export async function relayHeartbeat(request: IRequest, env: Env): Promise<Response> {
  const beat = await signedJson(request, env, Heartbeat);
  if (new URL(beat.public_url).protocol !== "https:" && !edgeConfig(env).dev) {
    throw badRequest(
      "insecure_relay_url",
      "A relay's public_url must be https (plain http only with EARSHOT_DEV=1).",
      "public_url",
    );
  }
  remember(await registry(env).heartbeat(beat));
  return new Response(null, { status: 204 });
}

export async function relayCallEvent(request: IRequest, env: Env): Promise<Response> {
  const id = CallId.safeParse(request.params.id);
  if (!id.success) throw notFound("No such call.");
  const event = await signedJson(request, env, RelayCallEvent);
  if (event.call_id !== id.data)
    throw badRequest("call_id_mismatch", "The event is for another call.", "call_id");
  const session = callSession(env, id.data);
  if (!session) throw notFound("No such call.");
  const outcome = await session.relayEvent(event);
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
  const batch = await signedJson(request, env, RelayEventBatch, MAX_EVENT_BATCH_BYTES);
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
        const outcomes = await session.relayEvents(items.map((item) => item.event));
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
