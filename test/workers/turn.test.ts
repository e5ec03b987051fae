// TURN credentials (TURN REST API scheme, coturn `use-auth-secret`): the HMAC, the config checks
// at their limits, and the `ice_servers` the edge hands out with a client secret and on
// GET /v1/realtime/ice_servers. test/deploy/turn.test.ts has a real coturn accept them.
import { describe, expect, it } from "vitest";
import { utf8 } from "../../protocol/encoding.ts";
import { mintClientSecret } from "../../workers/client-secret.ts";
import { ConfigError, resolveConfig } from "../../workers/config.ts";
import { iceServersFor, turnCredential, type IceServer } from "../../workers/turn.ts";
import { API_KEY, edge, edgeWith, errorOf, SIGNING_KEYS } from "./fixtures.ts";

const TURN_SECRET = "earshot-turn-test-secret";
const TURN_URLS = "turn:turn.example.com:3478?transport=udp, turns:turn.example.com:5349?transport=tcp";
const WITH_TURN = { EARSHOT_TURN_URLS: TURN_URLS, EARSHOT_TURN_SECRET: TURN_SECRET } as Partial<
  Record<keyof Env, string>
>;
const now = () => Math.floor(Date.now() / 1000);

const BASE_VARS = {
  EARSHOT_API_KEYS: "sk_test_primary",
  EARSHOT_SIGNING_KEYS: "k1:test-signing-secret-one",
  EARSHOT_RELAY_SECRET: "test-relay-secret-long",
};

function configError(vars: Record<string, string>): ConfigError {
  try {
    resolveConfig({ ...BASE_VARS, ...vars });
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("expected a ConfigError");
}

/** The one ICE server entry, checked against the scheme: expiry:id and the HMAC of exactly that. */
async function expectTurnCredential(server: IceServer | undefined, id: string, expiresAt: number) {
  expect(server).toBeDefined();
  expect(server!.urls).toEqual([
    "turn:turn.example.com:3478?transport=udp",
    "turns:turn.example.com:5349?transport=tcp",
  ]);
  expect(server!.username).toBe(`${expiresAt}:${id}`);
  expect(server!.credential).toBe(await turnCredential(TURN_SECRET, server!.username));
  expect(server!.credential).toMatch(/^[A-Za-z0-9+/]{27}=$/);
}

describe("TURN credential (HMAC-SHA1, base64)", () => {
  it("matches known HMAC-SHA1 vectors", async () => {
    // The classic HMAC-SHA1 example, and one computed with Python's hmac for a TURN username.
    expect(await turnCredential("key", "The quick brown fox jumps over the lazy dog")).toBe(
      "3nybhbi3iqa8ino29wqQcBydtNk=",
    );
    expect(await turnCredential(TURN_SECRET, "1700000000:cs_example")).toBe("bO4LROx6hN+Xupxrta37diJsfvA=");
  });

  it("usernames are expiry:id, capped by notAfter, and a colon in the id cannot split them", async () => {
    const turn = { urls: ["turn:127.0.0.1:3478"], secret: TURN_SECRET, ttlSeconds: 3600 };
    const plain = await iceServersFor(turn, { id: "cs_abc", nowSeconds: 1000 });
    expect(plain.expiresAt).toBe(4600);
    expect(plain.iceServers[0]!.username).toBe("4600:cs_abc");
    const capped = await iceServersFor(turn, { id: "cs_abc", nowSeconds: 1000, notAfter: 1600 });
    expect(capped.iceServers[0]!.username).toBe("1600:cs_abc");
    const odd = await iceServersFor(turn, { id: "a:b", nowSeconds: 1000 });
    expect(odd.iceServers[0]!.username).toBe("4600:a_b");
    expect(await iceServersFor(undefined, { id: "cs_abc" })).toEqual({ iceServers: [], expiresAt: null });
  });
});

describe("TURN configuration", () => {
  it("is off when neither variable is set, and reads URLs, secret and TTL when both are", () => {
    expect(resolveConfig(BASE_VARS).turn).toBeUndefined();
    expect(
      resolveConfig({ ...BASE_VARS, EARSHOT_TURN_URLS: "", EARSHOT_TURN_TTL_SECONDS: "3600" }).turn,
    ).toBe(undefined);
    expect(
      resolveConfig({ ...BASE_VARS, EARSHOT_TURN_URLS: TURN_URLS, EARSHOT_TURN_SECRET: TURN_SECRET }).turn,
    ).toEqual({
      urls: ["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349?transport=tcp"],
      secret: TURN_SECRET,
      ttlSeconds: 3600,
    });
  });

  it("refuses half a TURN setup, naming the missing variable", () => {
    expect(configError({ EARSHOT_TURN_URLS: "turn:127.0.0.1:3478" }).variable).toBe("EARSHOT_TURN_SECRET");
    expect(configError({ EARSHOT_TURN_SECRET: TURN_SECRET }).variable).toBe("EARSHOT_TURN_URLS");
  });

  it("refuses a secret under 16 characters and URLs that are not turn:/turns:", () => {
    const ok = resolveConfig({
      ...BASE_VARS,
      EARSHOT_TURN_URLS: "turn:h",
      EARSHOT_TURN_SECRET: "x".repeat(16),
    });
    expect(ok.turn?.secret).toBe("x".repeat(16));
    expect(configError({ EARSHOT_TURN_URLS: "turn:h", EARSHOT_TURN_SECRET: "x".repeat(15) }).message).toMatch(
      /EARSHOT_TURN_SECRET: must be at least 16/,
    );
    for (const bad of [
      "stun:h:3478",
      "http://h",
      "turn:",
      "turn:h:99999",
      "turn:h?transport=sctp",
      "turn:a b",
    ]) {
      const error = configError({ EARSHOT_TURN_URLS: bad, EARSHOT_TURN_SECRET: TURN_SECRET });
      expect(error.variable).toBe("EARSHOT_TURN_URLS");
      expect(error.message).toContain(bad.trim());
    }
    expect(configError({ EARSHOT_TURN_URLS: " , ", EARSHOT_TURN_SECRET: TURN_SECRET }).message).toMatch(
      /names no URL/,
    );
  });

  it("takes a TTL from 60 to 86400 seconds and nothing outside", () => {
    const withTtl = (ttl: string) => ({
      EARSHOT_TURN_URLS: "turn:h",
      EARSHOT_TURN_SECRET: TURN_SECRET,
      EARSHOT_TURN_TTL_SECONDS: ttl,
    });
    expect(resolveConfig({ ...BASE_VARS, ...withTtl("60") }).turn?.ttlSeconds).toBe(60);
    expect(resolveConfig({ ...BASE_VARS, ...withTtl("86400") }).turn?.ttlSeconds).toBe(86_400);
    expect(configError(withTtl("59")).variable).toBe("EARSHOT_TURN_TTL_SECONDS");
    expect(configError(withTtl("86401")).variable).toBe("EARSHOT_TURN_TTL_SECONDS");
  });
});

describe("ice_servers in POST /v1/realtime/client_secrets", () => {
  const mint = (overrides: Partial<Record<keyof Env, string>>, body: unknown = {}) =>
    edgeWith(overrides, "/v1/realtime/client_secrets", {
      method: "POST",
      apiKey: API_KEY,
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });

  it("is an empty list when TURN is not configured", async () => {
    const response = await edge("/v1/realtime/client_secrets", {
      method: "POST",
      apiKey: API_KEY,
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(response.status).toBe(200);
    expect(((await response.json()) as { ice_servers: unknown }).ice_servers).toEqual([]);
  });

  it("carries a credential that expires with the client secret when the secret is shorter", async () => {
    const response = await mint(WITH_TURN, { expires_after: { anchor: "created_at", seconds: 600 } });
    expect(response.status).toBe(200);
    const body = (await response.json()) as {
      expires_at: number;
      session: { id: string };
      ice_servers: IceServer[];
    };
    expect(body.ice_servers).toHaveLength(1);
    const secretId = `cs_${body.session.id.slice("sess_".length)}`;
    await expectTurnCredential(body.ice_servers[0], secretId, body.expires_at);
  });

  it("carries a credential capped at EARSHOT_TURN_TTL_SECONDS when the secret lives longer", async () => {
    const before = now();
    const response = await mint(
      { ...WITH_TURN, EARSHOT_TURN_TTL_SECONDS: "120" } as Partial<Record<keyof Env, string>>,
      { expires_after: { anchor: "created_at", seconds: 7200 } },
    );
    const body = (await response.json()) as { expires_at: number; ice_servers: IceServer[] };
    const expiry = Number(body.ice_servers[0]!.username.split(":")[0]);
    expect(expiry).toBeGreaterThanOrEqual(before + 120);
    expect(expiry).toBeLessThanOrEqual(now() + 120);
    expect(expiry).toBeLessThan(body.expires_at);
  });
});

describe("GET /v1/realtime/ice_servers", () => {
  const get = (init: { bearer?: string; origin?: string; overrides?: Partial<Record<keyof Env, string>> }) =>
    edgeWith(init.overrides ?? WITH_TURN, "/v1/realtime/ice_servers", {
      method: "GET",
      ...(init.bearer === undefined ? {} : { bearer: init.bearer }),
      headers: init.origin ? { origin: init.origin } : {},
    });

  const secret = (options: { nowSeconds?: number; ttlSeconds?: number } = {}) =>
    mintClientSecret([{ kid: "k2", secret: utf8(SIGNING_KEYS.k2) }], {
      sessionSha256: "0".repeat(64),
      ttlSeconds: options.ttlSeconds ?? 300,
      ...options,
    });

  it("gives a client secret's holder credentials that end when the secret does", async () => {
    const minted = await secret({ ttlSeconds: 300 });
    const response = await get({ bearer: minted.value });
    expect(response.status).toBe(200);
    expect(response.headers.get("cache-control")).toBe("no-store");
    const body = (await response.json()) as { object: string; ice_servers: IceServer[]; expires_at: number };
    expect(body.object).toBe("realtime.ice_servers");
    expect(body.expires_at).toBe(minted.claims.expiresAt);
    await expectTurnCredential(body.ice_servers[0], minted.claims.id, minted.claims.expiresAt);
  });

  it("gives a server with an API key credentials for the full TTL", async () => {
    const before = now();
    const response = await get({ bearer: API_KEY });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { ice_servers: IceServer[]; expires_at: number };
    expect(body.expires_at).toBeGreaterThanOrEqual(before + 3600);
    expect(body.expires_at).toBeLessThanOrEqual(now() + 3600);
    expect(body.ice_servers[0]!.username).toMatch(new RegExp(`^${body.expires_at}:key_[0-9a-f]{12}$`));
    expect(body.ice_servers[0]!.credential).toBe(
      await turnCredential(TURN_SECRET, body.ice_servers[0]!.username),
    );
  });

  it("answers an empty list without TURN", async () => {
    const response = await get({ bearer: API_KEY, overrides: {} });
    expect(await response.json()).toEqual({
      object: "realtime.ice_servers",
      ice_servers: [],
      expires_at: null,
    });
  });

  it("refuses no key, a forged key and an expired client secret with 401", async () => {
    const none = await get({});
    expect(none.status).toBe(401);
    expect((await errorOf(none)).code).toBe("missing_api_key");

    const forged = await get({ bearer: "sk_not_a_real_key_000" });
    expect(forged.status).toBe(401);
    expect((await errorOf(forged)).code).toBe("invalid_api_key");

    const expired = await secret({ nowSeconds: now() - 400, ttlSeconds: 60 });
    const late = await get({ bearer: expired.value });
    expect(late.status).toBe(401);
    expect((await errorOf(late)).code).toBe("client_secret_expired");

    const tampered = await secret();
    const bad = await get({ bearer: `${tampered.value.slice(0, -4)}AAAA` });
    expect(bad.status).toBe(401);
    expect((await errorOf(bad)).code).toBe("invalid_client_secret");
  });

  it("is readable from a browser on another origin (CORS), like the calls endpoints", async () => {
    const preflight = await edgeWith(WITH_TURN, "/v1/realtime/ice_servers", {
      method: "OPTIONS",
      headers: {
        origin: "https://app.example.com",
        "access-control-request-method": "GET",
        "access-control-request-headers": "authorization",
      },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-methods")).toContain("GET");
    const minted = await secret();
    const response = await get({ bearer: minted.value, origin: "https://app.example.com" });
    expect(response.status).toBe(200);
    expect(response.headers.get("access-control-allow-origin")).toBe("*");
  });
});
