// POST /v1/realtime/client_secrets (server side, API key) and, under EARSHOT_DEV only,
// POST /dev/client_secret for the local demo page.
import type { IRequest } from "itty-router";
import { z } from "zod";
import { apiKeyId, requireApiKey } from "../auth.ts";
import { readJson } from "../body.ts";
import { DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS, MIN_TTL_SECONDS, mintClientSecret } from "../client-secret.ts";
import { edgeConfig, type EdgeConfig } from "../config.ts";
import { notFound } from "../errors.ts";
import { newSecretLedger } from "../object-ids.ts";
import { limitApiKey } from "../rate-limiter.ts";
import { bindSession, MAX_SESSION_BYTES, sessionObjectName } from "../session-config.ts";
import { timingOf, type ServerTiming } from "../server-timing.ts";
import { iceServersFor } from "../turn.ts";

const MAX_BODY_BYTES = MAX_SESSION_BYTES + 4096;

export const ClientSecretRequest = z.strictObject({
  // Checked in full by bindSession, against the shared SessionConfig schema.
  session: z.unknown().optional(),
  expires_after: z
    .strictObject({
      anchor: z.literal("created_at").default("created_at"),
      seconds: z.number().int().min(MIN_TTL_SECONDS).max(MAX_TTL_SECONDS).default(DEFAULT_TTL_SECONDS),
    })
    .optional(),
});

export async function createClientSecret(request: IRequest, env: Env): Promise<Response> {
  const config = edgeConfig(env);
  const timing = timingOf(request);
  const caller = await timing.time("auth", () => requireApiKey(config, request));
  const admitted = timing.time("limit", () => limitApiKey(env, config, caller.keyId));
  return mint(request, env, config, admitted, caller.keyId);
}

export async function createDevClientSecret(request: IRequest, env: Env): Promise<Response> {
  const config = edgeConfig(env);
  if (!config.dev) throw notFound();
  // The demo page's secrets belong to the first API key, the one `npm start` prints, so a
  // server holding it can attach to the demo's calls.
  const project = await apiKeyId(config.apiKeys[0] ?? "");
  return mint(request, env, config, Promise.resolve(), project);
}

/**
 * `admitted` is the key's rate-limit check, still under way: the body is read and checked
 * meanwhile, and a refusal (429) still comes before any complaint about the body, as if the
 * steps ran in order. Nothing is recorded before it passes.
 */
async function mint(
  request: Request,
  env: Env,
  config: EdgeConfig,
  admitted: Promise<void>,
  project: string,
): Promise<Response> {
  const timing = timingOf(request);
  const input = readRequest(request, timing);
  input.catch(() => {}); // awaited below, unless the limit refuses first
  await admitted;
  const { bound, ttlSeconds } = await input;
  const ledger = newSecretLedger(env);
  const minted = await timing.time("sign", () =>
    mintClientSecret(config.signingKeys, {
      sessionSha256: bound.sha256,
      ttlSeconds,
      id: ledger.secretId,
      project,
    }),
  );
  await timing.time("ledger", () =>
    ledger.stub.issue(bound.session, bound.sha256, minted.claims.expiresAt * 1000),
  );
  // TURN credentials for the client's RTCPeerConnection, never outliving the secret itself.
  const { iceServers } = await timing.time("turn", () =>
    iceServersFor(config.turn, {
      id: minted.claims.id,
      nowSeconds: minted.claims.issuedAt,
      notAfter: minted.claims.expiresAt,
    }),
  );
  return Response.json(
    {
      value: minted.value,
      expires_at: minted.claims.expiresAt,
      session: {
        ...bound.session,
        object: sessionObjectName(bound.session),
        id: `sess_${minted.claims.id.slice(3)}`,
      },
      ice_servers: iceServers,
    },
    { headers: { "Cache-Control": "no-store" } },
  );
}

/** The body, checked, and its session config bound. */
async function readRequest(request: Request, timing: ServerTiming) {
  // An empty body asks for the defaults.
  const body = await timing.time("body", () =>
    readJson(request, ClientSecretRequest, MAX_BODY_BYTES, { ifEmpty: {} }),
  );
  const bound = await timing.time("session", () => bindSession(body.session));
  return { bound, ttlSeconds: body.expires_after?.seconds ?? DEFAULT_TTL_SECONDS };
}
