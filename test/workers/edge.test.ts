import { describe, expect, it } from "vitest";
import { edge, edgeWith, errorOf, mintSecret, offerSdp, postOffer, soloRelay } from "./fixtures.ts";

describe("dev-only routes", () => {
  it("POST /dev/client_secret mints without an API key under EARSHOT_DEV=1", async () => {
    const response = await edgeWith({ EARSHOT_DEV: "1" }, "/dev/client_secret", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ session: { instructions: "Demo." } }),
    });
    expect(response.status).toBe(200);
    const secret = (await response.json()) as { value: string; session: { instructions: string } };
    expect(secret.value).toMatch(/^ek_/);
    expect(secret.session.instructions).toBe("Demo.");
    const { query } = await soloRelay();
    expect((await postOffer(offerSdp(), { bearer: secret.value, query })).status).toBe(201);
  });

  it("POST /dev/client_secret does not exist in production (EARSHOT_DEV=0)", async () => {
    const response = await edgeWith({ EARSHOT_DEV: "0" }, "/dev/client_secret", {
      method: "POST",
      body: "{}",
    });
    expect(response.status).toBe(404);
    expect((await errorOf(response)).code).toBe("not_found");
  });
});

describe("errors", () => {
  it("unknown routes get the JSON envelope with 404", async () => {
    const response = await edge("/v1/realtime/nothing-here");
    expect(response.status).toBe(404);
    expect(response.headers.get("content-type")).toContain("application/json");
    expect(await errorOf(response)).toEqual({
      type: "invalid_request_error",
      code: "not_found",
      message: "Not found.",
      param: null,
    });
  });

  it("the beta session endpoints are not served: 404 with the envelope (mint with client_secrets)", async () => {
    for (const path of ["/v1/realtime/sessions", "/v1/realtime/transcription_sessions"]) {
      const response = await edge(path, {
        method: "POST",
        apiKey: "sk_test_primary",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "gpt-realtime" }),
      });
      expect(response.status, path).toBe(404);
      expect((await errorOf(response)).code, path).toBe("not_found");
    }
  });

  it("a misconfigured edge answers 500 with a generic message and no detail", async () => {
    const response = await edgeWith({ EARSHOT_SIGNING_KEYS: "short:key" }, "/v1/realtime/client_secrets", {
      method: "POST",
      apiKey: "sk_test_primary",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(response.status).toBe(500);
    const error = await errorOf(response);
    expect(error).toMatchObject({ type: "server_error", code: "misconfigured" });
    expect(error.message).not.toContain("EARSHOT_SIGNING_KEYS");
  });

  it("secrets minted by one deployment are not accepted by another with different keys", async () => {
    const { value } = await mintSecret();
    const { query } = await soloRelay();
    const response = await edgeWith(
      { EARSHOT_SIGNING_KEYS: "k2:a-completely-different-secret" },
      `/v1/realtime/calls${query}`,
      {
        method: "POST",
        bearer: value,
        headers: { "content-type": "application/sdp" },
        body: offerSdp(),
      },
    );
    expect(response.status).toBe(401);
  });
});

describe("health", () => {
  it("GET /healthz answers ok for process supervisors", async () => {
    const response = await edge("/healthz");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: "ok" });
  });
});
