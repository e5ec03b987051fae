// GET /v1/realtime/ice_servers: fresh TURN credentials for a client that holds a client secret
// (e.g. for an ICE restart after the ones from client_secrets ran out), or for a server with an
// API key. A client secret's credentials expire with the secret.
import type { IRequest } from "itty-router";
import { requireCaller } from "../auth.ts";
import { edgeConfig } from "../config.ts";
import { limitApiKey } from "../rate-limiter.ts";
import { iceServersFor } from "../turn.ts";

export const ICE_SERVERS_PATH = "/v1/realtime/ice_servers";

export async function getIceServers(request: IRequest, env: Env): Promise<Response> {
  const config = edgeConfig(env);
  const caller = await requireCaller(config, request);
  if (caller.kind === "api_key") await limitApiKey(env, config, caller.keyId);
  const { iceServers, expiresAt } = await iceServersFor(
    config.turn,
    caller.kind === "client_secret"
      ? { id: caller.claims.id, notAfter: caller.claims.expiresAt }
      : { id: caller.keyId },
  );
  return Response.json(
    { object: "realtime.ice_servers", ice_servers: iceServers, expires_at: expiresAt },
    { headers: { "Cache-Control": "no-store" } },
  );
}
