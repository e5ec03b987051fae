// Call ids and client-secret ids carry the id of their Durable Object (`rtc_<64 hex>`,
// `cs_<64 hex>`, from `newUniqueId()`) instead of naming it through `idFromName()`. Every call
// and every secret is a new object on the setup path, and the first use of a *named* object
// waits for a check, possibly round the world, that no other Worker created it at the same
// moment ("up to a few hundred milliseconds"); a unique id skips that check:
// https://developers.cloudflare.com/durable-objects/api/namespace/#newuniqueid
// Ids made before this (a random name, never 64 hex digits) still find their object by name.
import type { CallIndex } from "./call-index.ts";
import type { CallSession } from "./call-session.ts";
import type { ClientSecretLedger } from "./client-secret-ledger.ts";
import { REGISTRY_NAME, type RelayRegistry } from "./relay-registry.ts";

const OBJECT_ID = /^[0-9a-f]{64}$/;

function newObject<T extends Rpc.DurableObjectBranded>(
  namespace: DurableObjectNamespace<T>,
  prefix: string,
): { id: string; stub: DurableObjectStub<T> } {
  const objectId = namespace.newUniqueId();
  return { id: `${prefix}${objectId.toString()}`, stub: namespace.get(objectId) };
}

/** The object `id` names; undefined for an id that is not one of ours (forged or mistyped). */
function objectFor<T extends Rpc.DurableObjectBranded>(
  namespace: DurableObjectNamespace<T>,
  prefix: string,
  id: string,
): DurableObjectStub<T> | undefined {
  const suffix = id.slice(prefix.length);
  if (!id.startsWith(prefix) || !OBJECT_ID.test(suffix)) return namespace.getByName(id);
  try {
    return namespace.get(namespace.idFromString(suffix));
  } catch {
    return undefined;
  }
}

export const newCallSession = (env: Env) => {
  const { id, stub } = newObject(env.CALL_SESSION, "rtc_");
  return { callId: id, stub };
};

export const callSession = (env: Env, callId: string): DurableObjectStub<CallSession> | undefined =>
  objectFor(env.CALL_SESSION, "rtc_", callId);

export const newSecretLedger = (env: Env) => {
  const { id, stub } = newObject(env.CLIENT_SECRET_LEDGER, "cs_");
  return { secretId: id, stub };
};

export const secretLedger = (env: Env, secretId: string): DurableObjectStub<ClientSecretLedger> | undefined =>
  objectFor(env.CLIENT_SECRET_LEDGER, "cs_", secretId);

/** The deployment's one relay registry, found by its name (REGISTRY_NAME) from every Worker. */
export const registry = (env: Env): DurableObjectStub<RelayRegistry> =>
  env.RELAY_REGISTRY.getByName(REGISTRY_NAME);

/** The index of one project's calls (GET /admin/calls); a project is the API key id that owns it. */
export const callIndex = (env: Env, project: string): DurableObjectStub<CallIndex> =>
  env.CALL_INDEX.getByName(`project:${project}`);
