// The calls endpoints' preflight, as OpenAI's browser clients meet it: the headers they add must
// be allowed, by name or by OpenAI's prefixes, and nothing else a page asks for.
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { MAX_HEADER_NAME_LENGTH, MAX_REQUESTED_HEADERS } from "../../workers/cors.ts";
import { edge, edgeWith } from "./fixtures.ts";

const ORIGIN = "https://app.example";

function preflight(requestedHeaders: string, path = "/v1/realtime/calls", method = "POST") {
  return edge(path, {
    method: "OPTIONS",
    headers: {
      origin: ORIGIN,
      "access-control-request-method": method,
      "access-control-request-headers": requestedHeaders,
    },
  });
}

/** What a browser checks: every requested header (case-insensitively) is in the answer. */
function allowedNames(response: Response): Set<string> {
  const list = response.headers.get("access-control-allow-headers") ?? "";
  return new Set(list.split(",").map((name) => name.trim().toLowerCase()));
}

/** The headers the `openai` package really sends with `realtime.calls.create`, from its own code. */
async function openaiPackageHeaders(): Promise<string[]> {
  let sent: Headers | undefined;
  const client = new OpenAI({
    apiKey: "ek_example",
    baseURL: "https://edge.example/v1",
    organization: "org_example",
    project: "proj_example",
    maxRetries: 0,
    fetch: async (_url: string | URL | Request, init?: RequestInit) => {
      sent = new Headers(init?.headers);
      return new Response("v=0\r\n", { status: 201, headers: { "content-type": "application/sdp" } });
    },
  });
  await client.realtime.calls.create({ sdp: "v=0\r\n" });
  return [...sent!.keys()];
}

describe("the calls preflight and OpenAI's clients", () => {
  it("allows every header the openai package sends, so its browser build can place a call", async () => {
    const names = await openaiPackageHeaders();
    // The ones a browser preflights: not the CORS-safelisted Accept, nor User-Agent, which the
    // package sends only outside a browser (workerd, here) and a browser never lets a page set.
    const preflighted = names.filter((name) => name !== "accept" && name !== "user-agent");
    expect(preflighted).toEqual(
      expect.arrayContaining([
        "authorization",
        "content-type",
        "x-stainless-lang",
        "x-stainless-package-version",
        "x-stainless-retry-count",
        "openai-organization",
        "openai-project",
      ]),
    );
    const response = await preflight(preflighted.join(","));
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe("*");
    const allowed = allowedNames(response);
    for (const name of preflighted) expect(allowed, name).toContain(name);
  });

  it("allows the Agents SDK's X-OpenAI-Agents-SDK on the SDP POST, and the openai package's hangup", async () => {
    // What Chromium sent for @openai/agents-realtime's OpenAIRealtimeWebRTC (sorted, lower case).
    const agents = await preflight("authorization,content-type,x-openai-agents-sdk");
    expect(agents.status).toBe(204);
    expect(allowedNames(agents)).toEqual(
      new Set(["authorization", "content-type", "if-match", "idempotency-key", "x-openai-agents-sdk"]),
    );
    const hangup = await preflight(
      "authorization,x-stainless-arch,x-stainless-lang,x-stainless-os",
      "/v1/realtime/calls/rtc_abcdefghijklmnop/hangup",
    );
    expect(hangup.status).toBe(204);
    expect(allowedNames(hangup)).toContain("x-stainless-os");
  });

  it("leaves out a header outside the allowed names and prefixes, so the browser refuses the request", async () => {
    const response = await preflight("authorization, x-stainless-lang, earshot-geo, x-custom-thing, cookie2");
    expect(response.status).toBe(204);
    const allowed = allowedNames(response);
    expect(allowed).toContain("x-stainless-lang");
    for (const name of ["earshot-geo", "x-custom-thing", "cookie2"]) expect(allowed).not.toContain(name);
    // The answer depends on what was asked.
    expect(response.headers.get("vary")).toContain("Access-Control-Request-Headers");
  });

  it("never echoes a requested name that is not an HTTP token", async () => {
    const response = await preflight("x-stainless-ok, x-stainless-bad name, openai-<script>");
    expect(response.status).toBe(204);
    const allowed = allowedNames(response);
    expect(allowed).toContain("x-stainless-ok");
    expect(response.headers.get("access-control-allow-headers")).not.toMatch(/bad name|<script>/);
  });

  it(`echoes a header name of up to ${MAX_HEADER_NAME_LENGTH} characters, not one longer`, async () => {
    const named = (length: number) => "x-stainless-".padEnd(length, "a");
    const response = await preflight(`${named(MAX_HEADER_NAME_LENGTH)},${named(MAX_HEADER_NAME_LENGTH + 1)}`);
    const allowed = allowedNames(response);
    expect(allowed).toContain(named(MAX_HEADER_NAME_LENGTH));
    expect(allowed).not.toContain(named(MAX_HEADER_NAME_LENGTH + 1));
  });

  it(`answers up to ${MAX_REQUESTED_HEADERS} requested headers, and only the fixed names past that`, async () => {
    const names = (n: number) => Array.from({ length: n }, (_, i) => `x-stainless-h${i}`);
    const atLimit = await preflight(names(MAX_REQUESTED_HEADERS).join(","));
    expect(atLimit.status).toBe(204);
    expect(allowedNames(atLimit).size).toBe(4 + MAX_REQUESTED_HEADERS);
    const pastLimit = await preflight(names(MAX_REQUESTED_HEADERS + 1).join(","));
    expect(pastLimit.status).toBe(204);
    expect(allowedNames(pastLimit)).toEqual(
      new Set(["authorization", "content-type", "if-match", "idempotency-key"]),
    );
  });

  it("keeps an origin outside EARSHOT_CORS_ORIGINS out whatever headers it asks for, and names a listed one once in Vary", async () => {
    const origins = { EARSHOT_CORS_ORIGINS: ORIGIN };
    const init = (origin: string) => ({
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,x-openai-agents-sdk",
      },
    });
    const refused = await edgeWith(origins, "/v1/realtime/calls", init("https://evil.example"));
    expect(refused.status).toBe(403);
    expect(refused.headers.get("access-control-allow-origin")).toBeNull();
    const allowed = await edgeWith(origins, "/v1/realtime/calls", init(ORIGIN));
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(allowedNames(allowed)).toContain("x-openai-agents-sdk");
    const vary = (allowed.headers.get("vary") ?? "").split(",").map((v) => v.trim());
    expect(vary.filter((v) => v === "Origin")).toHaveLength(1);
  });

  it("still gives client_secrets no CORS at all: minting stays on the app's server", async () => {
    const response = await preflight(
      "authorization,content-type,x-stainless-lang",
      "/v1/realtime/client_secrets",
    );
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
    expect(response.headers.get("access-control-allow-headers")).toBeNull();
  });
});
