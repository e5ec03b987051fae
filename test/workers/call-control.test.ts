// The call resource's server-side control through the edge, in workerd: accept/reject/refer answer
// as OpenAI does for a WebRTC call (checked as OpenAI checks them, then refused by name), and the
// sideband's refusals at the edge (GET /v1/realtime?call_id=…) before any relay is asked. The
// sideband itself, through a real edge and relay, is test/e2e/sideband.test.ts.
import { describe, expect, it } from "vitest";
import {
  API_KEY,
  callIdOf,
  edge,
  errorOf,
  mintSecret,
  offerSdp,
  OTHER_API_KEY,
  placeCall,
  postOffer,
  soloRelay,
  stubRecords,
} from "./fixtures.ts";

const json = (body: unknown) => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body),
});

describe("accept, reject and refer on a WebRTC call", () => {
  it("check the request as OpenAI does, then refuse it: the call is not a SIP call", async () => {
    const { query } = await soloRelay();
    const callId = await placeCall(query);
    const cases: [string, unknown, number, string, string | null][] = [
      ["accept", {}, 400, "missing_required_parameter", "type"],
      ["accept", { type: "transcription" }, 400, "invalid_value", "type"],
      ["accept", { type: "realtime", instructions: 7 }, 400, "invalid_type", "instructions"],
      ["accept", { type: "realtime", instructions: "Be brief." }, 400, "call_not_sip", "call_id"],
      ["reject", { status_code: 299 }, 400, "invalid_value", "status_code"],
      ["reject", { status_code: 700 }, 400, "invalid_value", "status_code"],
      ["reject", { status_code: 486 }, 400, "call_not_sip", "call_id"],
      ["reject", { status_code: 300 }, 400, "call_not_sip", "call_id"],
      ["reject", { status_code: 699 }, 400, "call_not_sip", "call_id"],
      ["refer", {}, 400, "missing_required_parameter", "target_uri"],
      ["refer", { target_uri: "https://example.com" }, 400, "invalid_value", "target_uri"],
      ["refer", { target_uri: "tel:+14155550123" }, 400, "call_not_sip", "call_id"],
      ["refer", { target_uri: "sip:agent@example.com" }, 400, "call_not_sip", "call_id"],
    ];
    for (const [verb, body, status, code, param] of cases) {
      const response = await edge(`/v1/realtime/calls/${callId}/${verb}`, { ...json(body), apiKey: API_KEY });
      expect(response.status, `${verb} ${JSON.stringify(body)}`).toBe(status);
      const error = await errorOf(response);
      expect(error, `${verb} ${JSON.stringify(body)}`).toMatchObject({
        type: "invalid_request_error",
        code,
        param,
      });
      if (code === "call_not_sip") expect(error.message).toContain(callId);
    }
    // reject's body is optional, as OpenAI's is.
    const bare = await edge(`/v1/realtime/calls/${callId}/reject`, { method: "POST", apiKey: API_KEY });
    expect((await errorOf(bare)).code).toBe("call_not_sip");
  });

  it("need an API key of the call's project: 401 without one, 404 for another project's or no call", async () => {
    const { query } = await soloRelay();
    const callId = await placeCall(query);
    const secret = await mintSecret();
    const accept = (init: Parameters<typeof edge>[1]) =>
      edge(`/v1/realtime/calls/${callId}/accept`, { ...json({ type: "realtime" }), ...init });
    expect((await errorOf(await accept({}))).code).toBe("missing_api_key");
    const withSecret = await accept({ bearer: secret.value });
    expect(withSecret.status).toBe(401);
    expect((await errorOf(withSecret)).code).toBe("invalid_api_key");
    const stranger = await accept({ apiKey: OTHER_API_KEY });
    expect(stranger.status).toBe(404);
    expect((await errorOf(stranger)).code).toBe("call_not_found");
    const none = await edge(`/v1/realtime/calls/rtc_nosuchcall12345/refer`, {
      ...json({ target_uri: "tel:+14155550123" }),
      apiKey: API_KEY,
    });
    expect(none.status).toBe(404);
  });

  it("left the call as it was", async () => {
    const { relayId, query } = await soloRelay();
    const callId = await placeCall(query);
    await edge(`/v1/realtime/calls/${callId}/reject`, { method: "POST", apiKey: API_KEY });
    const view = (await (await edge(`/v1/realtime/calls/${callId}`, { apiKey: API_KEY })).json()) as {
      state: string;
    };
    expect(view.state).toBe("answered");
    expect((await stubRecords(relayId)).filter((r) => r.method === "DELETE")).toEqual([]);
  });
});

describe("a call's project", () => {
  it("is the API key that placed it, or that minted the secret that did: other keys see no such call", async () => {
    const { query } = await soloRelay();
    const byKey = await placeCall(query);
    const secret = await mintSecret({}, OTHER_API_KEY);
    const response = await postOffer(offerSdp(), { bearer: secret.value, query });
    expect(response.status).toBe(201);
    const bySecret = callIdOf(response);
    const read = (callId: string, apiKey: string) => edge(`/v1/realtime/calls/${callId}`, { apiKey });
    expect((await read(byKey, API_KEY)).status).toBe(200);
    expect((await read(byKey, OTHER_API_KEY)).status).toBe(404);
    expect((await read(bySecret, OTHER_API_KEY)).status).toBe(200);
    expect((await read(bySecret, API_KEY)).status).toBe(404);
    const hangup = await edge(`/v1/realtime/calls/${bySecret}/hangup`, { method: "POST", apiKey: API_KEY });
    expect(hangup.status).toBe(404);
  });
});

describe("the sideband's refusals at the edge", () => {
  const attach = (query: string, init: Parameters<typeof edge>[1] = {}) =>
    edge(`/v1/realtime${query}`, {
      ...init,
      headers: { upgrade: "websocket", connection: "Upgrade", ...(init.headers as Record<string, string>) },
    });

  it("wants a WebSocket, a server API key and a call id", async () => {
    const plain = await edge("/v1/realtime?call_id=rtc_nosuchcall12345", { apiKey: API_KEY });
    expect(plain.status).toBe(426);
    expect(plain.headers.get("upgrade")).toBe("websocket");
    expect((await errorOf(plain)).code).toBe("websocket_required");
    expect((await errorOf(await attach("?call_id=rtc_nosuchcall12345"))).code).toBe("missing_api_key");
    const wrong = await attach("?call_id=rtc_nosuchcall12345", { apiKey: "sk_not_a_key" });
    expect(wrong.status).toBe(401);
    expect(await errorOf(wrong)).toMatchObject({ type: "authentication_error", code: "invalid_api_key" });
    const secret = await mintSecret();
    const ephemeral = await attach("?call_id=rtc_nosuchcall12345", { bearer: secret.value });
    expect(ephemeral.status).toBe(401);
    expect((await errorOf(ephemeral)).code).toBe("invalid_api_key");
    const noId = await attach("", { apiKey: API_KEY });
    expect(await errorOf(noId)).toMatchObject({ code: "missing_required_parameter", param: "call_id" });
    const model = await attach("?model=gpt-realtime", { apiKey: API_KEY });
    expect(await errorOf(model)).toMatchObject({ code: "unsupported_session", param: "call_id" });
  });

  it("takes the key from the browsers' subprotocol too", async () => {
    const viaProtocol = await attach("?call_id=rtc_nosuchcall12345", {
      headers: { "sec-websocket-protocol": `realtime, openai-insecure-api-key.${API_KEY}` },
    });
    expect(viaProtocol.status).toBe(404);
    const wrong = await attach("?call_id=rtc_nosuchcall12345", {
      headers: { "sec-websocket-protocol": "realtime, openai-insecure-api-key.sk_wrong" },
    });
    expect(wrong.status).toBe(401);
  });

  it("finds no call that does not exist or is another project's; an ended call is gone (410)", async () => {
    const { query } = await soloRelay();
    const callId = await placeCall(query);
    for (const id of ["rtc_nosuchcall12345", "not-a-call"]) {
      const response = await attach(`?call_id=${id}`, { apiKey: API_KEY });
      expect(response.status).toBe(404);
      expect((await errorOf(response)).code).toBe("call_not_found");
    }
    const stranger = await attach(`?call_id=${callId}`, { apiKey: OTHER_API_KEY });
    expect(stranger.status).toBe(404);
    expect((await errorOf(stranger)).code).toBe("call_not_found");
    await edge(`/v1/realtime/calls/${callId}/hangup`, { method: "POST", apiKey: API_KEY });
    const ended = await attach(`?call_id=${callId}`, { apiKey: API_KEY });
    expect(ended.status).toBe(410);
    expect(await errorOf(ended)).toMatchObject({ code: "call_ended", param: "call_id" });
  });
});
