// GET /v1/realtime?call_id=rtc_… with `Upgrade: websocket`: an app server attaches a sideband to a
// live call, exactly as OpenAI's clients do (`OpenAIRealtimeWS({ callID })`: `Authorization:
// Bearer <API key>`; browsers put the key in the `openai-insecure-api-key.<key>` subprotocol). The
// edge checks the key and the call's project, asks the call's CallSession for a single-use ticket
// to its relay, and passes the upgrade on: the runtime then carries the socket between the app and
// the relay, with no JavaScript per message and no Durable Object in the path (so a Worker deploy
// drops no sideband). The relay terminates it in the call's bridge.
import type { IRequest } from "itty-router";
import { CallId, ErrorBody, TICKET_HEADER } from "../../protocol/relay-api.ts";
import { API_KEY_SUBPROTOCOL_PREFIX, REALTIME_SUBPROTOCOL, sidebandPath } from "../../protocol/sideband.ts";
import { bearerToken, requireApiKey } from "../auth.ts";
import type { Outcome, SidebandRoute } from "../call-session.ts";
import { edgeConfig } from "../config.ts";
import { ApiError, badRequest, notFound } from "../errors.ts";
import { log } from "../log.ts";
import { callSession } from "../object-ids.ts";
import { limitApiKey } from "../rate-limiter.ts";
import { relayUrl } from "../relay-client.ts";
import { unwrap } from "./calls.ts";

export const REALTIME_WS_PATH = "/v1/realtime";

export async function attachSideband(request: IRequest, env: Env): Promise<Response> {
  const config = edgeConfig(env);
  if ((request.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
    throw new ApiError(
      426,
      "websocket_required",
      "GET /v1/realtime is a WebSocket endpoint: connect with Upgrade: websocket and ?call_id=rtc_….",
      { headers: { Upgrade: "websocket" } },
    );
  }
  const protocols = (request.headers.get("sec-websocket-protocol") ?? "")
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
  const subprotocolKey = protocols
    .find((p) => p.startsWith(API_KEY_SUBPROTOCOL_PREFIX))
    ?.slice(API_KEY_SUBPROTOCOL_PREFIX.length);
  const caller = await requireApiKey(config, request, bearerToken(request) ?? subprotocolKey);
  await limitApiKey(env, config, caller.keyId);

  const callId = callIdParam(request);
  const stub = callSession(env, callId);
  if (!stub) throw notFound("No such call.");
  // RPC retypes the result; it is the same plain data.
  const route = unwrap(
    (await stub.sideband({ kind: "api_key", keyId: caller.keyId })) as Outcome<SidebandRoute>,
  );

  const headers = new Headers({ Upgrade: "websocket", [TICKET_HEADER]: route.ticket });
  // The key's subprotocol stays here: only "realtime" goes on, for the relay to select.
  if (protocols.includes(REALTIME_SUBPROTOCOL)) headers.set("Sec-WebSocket-Protocol", REALTIME_SUBPROTOCOL);
  let response: Response;
  try {
    response = await fetch(relayUrl(route.relay, sidebandPath(callId)), {
      headers,
      signal: AbortSignal.timeout(config.relayTimeoutMs),
    });
  } catch (error) {
    log.warn("sideband: relay unreachable", {
      call_id: callId,
      relay_id: route.relay.id,
      error: String(error),
    });
    throw new ApiError(502, "relay_error", "The call's media relay could not be reached; try again.");
  }
  if (response.status === 101 && response.webSocket) {
    // A fresh Response: the router's finally steps add headers, and a fetched one's are immutable.
    return new Response(null, { status: 101, webSocket: response.webSocket, headers: response.headers });
  }
  throw await relayRefusal(response, callId, route.relay.id);
}

function callIdParam(request: IRequest): string {
  const { call_id: callId, model, intent } = request.query;
  if (callId === undefined) {
    if (model !== undefined || intent !== undefined) {
      throw badRequest(
        "unsupported_session",
        "Earshot's Realtime WebSocket attaches to live calls only: pass call_id (model sessions start with POST /v1/realtime/calls).",
        "call_id",
      );
    }
    throw badRequest("missing_required_parameter", "Missing required parameter: 'call_id'.", "call_id");
  }
  if (typeof callId !== "string") throw badRequest("invalid_value", "Give call_id once.", "call_id");
  const parsed = CallId.safeParse(callId);
  if (!parsed.success) throw new ApiError(404, "call_not_found", "No such call.", { param: "call_id" });
  return parsed.data;
}

/** What the client hears when the relay would not take the sideband. */
async function relayRefusal(response: Response, callId: string, relayId: string): Promise<ApiError> {
  let code: string | null = null;
  let message = "";
  try {
    const body = ErrorBody.safeParse(await response.json());
    if (body.success) ({ code, message } = body.data.error);
  } catch {
    // not an envelope: the status says enough
  }
  if (response.status === 404) {
    return new ApiError(410, "call_ended", "The call is no longer live on its relay.", { param: "call_id" });
  }
  if (response.status === 409 && code === "too_many_sidebands") {
    return new ApiError(409, code, message.slice(0, 200), { param: "call_id" });
  }
  if (response.status === 503) {
    return new ApiError(503, "relay_busy", "The call's media relay is busy; try again.", {
      headers: { "Retry-After": "1" },
    });
  }
  // Ticket refusals and anything else are between the edge and its relay, not the client's doing.
  log.warn("sideband: relay refused the upgrade", {
    call_id: callId,
    relay_id: relayId,
    status: response.status,
    code,
  });
  return new ApiError(502, "relay_error", "The call's media relay refused the sideband; try again.");
}
