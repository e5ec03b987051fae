// Hostile HTTP at the edge (issues 7 and 13): bodies at and past every cap, JSON nested past the
// depth cap, bodies that trickle or stall, wrong methods and content types, CORS preflights from
// origins outside the allowlist, and DNS rebinding against a dev edge. Everything goes through the Worker's front door in workerd,
// as a client's request would.
import { describe, expect, it, vi } from "vitest";
import { MAX_OFFER_BYTES } from "../../protocol/relay-api.ts";
import { BODY_DEADLINE_MS, MAX_JSON_DEPTH, readCapped } from "../../workers/body.ts";
import { resolveConfig } from "../../workers/config.ts";
import { MAX_SESSION_BYTES } from "../../workers/session-config.ts";
import {
  API_KEY,
  edge,
  edgeWith,
  errorOf,
  heartbeatOf,
  offerSdp,
  placeCall,
  postOffer,
  signedPost,
  soloRelay,
  stubRecords,
  unique,
} from "./fixtures.ts";
import { exports } from "cloudflare:workers";

/** Pads an offer with a=x-pad lines (each under the 4 KiB line cap) to exactly `bytes`. */
function offerOfSize(bytes: number): string {
  const base = offerSdp();
  let missing = bytes - base.length;
  const lines: string[] = [];
  while (missing > 0) {
    // "a=x-pad:" + body + "\r\n"; a line needs at least 11 bytes.
    const take = Math.min(4000, missing);
    const body = take >= 11 ? take - 10 : 1;
    lines.push(`a=x-pad:${"p".repeat(body)}`);
    missing -= body + 10;
  }
  const padded = base.replace("s=-\r\n", `s=-\r\n${lines.map((l) => `${l}\r\n`).join("")}`);
  expect(padded.length).toBe(bytes);
  return padded;
}

/** A body stream that sends `chunks` pieces `gapMs` apart, then ends (or never ends if `stall`). */
function trickle(text: string, chunks: number, gapMs: number, stall = false): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  const size = Math.ceil(bytes.length / chunks);
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent >= bytes.length) {
        if (stall) return new Promise(() => {}); // open, silent, forever
        controller.close();
        return;
      }
      if (sent > 0) await new Promise((resolve) => setTimeout(resolve, gapMs));
      controller.enqueue(bytes.slice(sent, sent + size));
      sent += size;
    },
  });
}

/** POSTs an offer whose body is a stream (no Content-Length), as a chunked upload arrives. */
function postStream(query: string, body: ReadableStream<Uint8Array>): Promise<Response> {
  return edge(`/v1/realtime/calls${query}`, {
    method: "POST",
    apiKey: API_KEY,
    headers: { "content-type": "application/sdp" },
    body,
  });
}

describe("body size caps: accepted at the limit, 413 one byte past it", () => {
  it(`SDP offers: ${MAX_OFFER_BYTES} bytes are placed, ${MAX_OFFER_BYTES + 1} refused before the relay hears of it`, async () => {
    const { relayId, query } = await soloRelay();
    const atLimit = await postOffer(offerOfSize(MAX_OFFER_BYTES), { apiKey: API_KEY, query });
    expect(atLimit.status).toBe(201);
    const before = (await stubRecords(relayId)).length;
    const over = await postOffer(offerOfSize(MAX_OFFER_BYTES + 1), { apiKey: API_KEY, query });
    expect(over.status).toBe(413);
    expect(await errorOf(over)).toMatchObject({ code: "payload_too_large", type: "invalid_request_error" });
    expect((await stubRecords(relayId)).length).toBe(before);
  });

  it("the cap holds without Content-Length (a streamed body is counted as it arrives)", async () => {
    const { query } = await soloRelay();
    for (const [size, status] of [
      [MAX_OFFER_BYTES, 201],
      [MAX_OFFER_BYTES + 1, 413],
    ] as const) {
      const response = await postStream(query, trickle(offerOfSize(size), 4, 1));
      expect(response.status).toBe(status);
    }
    // A body far past the cap that claims to be small is cut off at the cap, not buffered.
    const huge = await postStream(query, trickle("v=0\r\n" + "a".repeat(8 << 20), 64, 0));
    expect(huge.status).toBe(413);
  });

  it("client_secrets: a body of exactly the cap is read; one byte more is 413", async () => {
    const limit = MAX_SESSION_BYTES + 4096;
    const mint = (body: string) =>
      edge("/v1/realtime/client_secrets", {
        method: "POST",
        apiKey: API_KEY,
        headers: { "content-type": "application/json" },
        body,
      });
    // JSON allows trailing whitespace, so the body is the empty request padded to size.
    expect((await mint("{}" + " ".repeat(limit - 2))).status).toBe(200);
    const over = await mint("{}" + " ".repeat(limit - 1));
    expect(over.status).toBe(413);
    expect((await errorOf(over)).code).toBe("payload_too_large");
  });

  it("relay heartbeats: 96 KiB (room for 1000 call ids) is read and verified; one byte more is 413 before the signature is checked", async () => {
    const limit = 96 * 1024;
    const beat = JSON.stringify(heartbeatOf({ relay_id: unique("relay") }));
    const atLimit = beat + " ".repeat(limit - beat.length);
    expect(
      (await exports.default.fetch(await signedPost("/internal/relays/heartbeat", atLimit))).status,
    ).toBe(204);
    const over = await exports.default.fetch(await signedPost("/internal/relays/heartbeat", atLimit + " "));
    expect(over.status).toBe(413);
  });

  it(`PATCH sdpfrag: ${MAX_OFFER_BYTES} bytes reach the relay, one more is 413`, async () => {
    const { query } = await soloRelay();
    const callId = await placeCall(query);
    const head = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n";
    const pad = (size: number) => {
      let out = head;
      while (out.length < size) {
        const room = size - out.length;
        const body = Math.min(4000, room - 10);
        out += `a=x-pad:${"p".repeat(Math.max(1, body))}\r\n`;
      }
      return out;
    };
    const patch = (body: string) =>
      edge(`/v1/realtime/calls/${callId}`, {
        method: "PATCH",
        apiKey: API_KEY,
        headers: { "content-type": "application/trickle-ice-sdpfrag" },
        body,
      });
    const atLimit = pad(MAX_OFFER_BYTES);
    expect(atLimit.length).toBe(MAX_OFFER_BYTES);
    expect((await patch(atLimit)).status).toBe(200);
    const over = await patch(pad(MAX_OFFER_BYTES + 1));
    expect(over.status).toBe(413);
  });
});

describe(`JSON nesting: ${MAX_JSON_DEPTH} levels deep are read, one more is 400 before parsing`, () => {
  /** JSON whose arrays (or objects) are open `depth` deep at the deepest point. */
  const nested = (depth: number, shape: "arrays" | "objects") =>
    shape === "arrays"
      ? "[".repeat(depth) + "]".repeat(depth)
      : '{"a":'.repeat(depth - 1) + "{}" + "}".repeat(depth - 1);
  /**
   * A client_secrets body `depth` deep: the body, its session and session.tracing are three of
   * the levels (tracing.metadata is free-form JSON, so the session is valid at any depth).
   */
  const mintBody = (depth: number, shape: "arrays" | "objects") =>
    `{"session":{"tracing":{"metadata":${nested(depth - 3, shape)}}}}`;
  const post = (path: string, body: string) =>
    edge(path, {
      method: "POST",
      ...(path.startsWith("/v1/") ? { apiKey: API_KEY } : {}),
      headers: { "content-type": "application/json" },
      body,
    });
  const paths = ["/v1/realtime/client_secrets", "/dev/client_secret"];

  it.each(paths)(
    "%s: a session at the cap is minted, one level past it is 400 json_too_deep",
    async (path) => {
      for (const shape of ["arrays", "objects"] as const) {
        const atLimit = await post(path, mintBody(MAX_JSON_DEPTH, shape));
        expect(atLimit.status, shape).toBe(200);
        const over = await post(path, mintBody(MAX_JSON_DEPTH + 1, shape));
        expect(over.status, shape).toBe(400);
        expect(await errorOf(over)).toEqual({
          type: "invalid_request_error",
          code: "json_too_deep",
          message: `The body nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep.`,
          param: null,
        });
      }
    },
  );

  it.each(paths)(
    "%s: 10 KB of brackets, once a 500 with a stack trace logged, is a 400 and logs nothing",
    async (path) => {
      const logged = vi.spyOn(console, "error");
      try {
        for (const body of [mintBody(5000, "arrays"), mintBody(1700, "objects")]) {
          expect(body.length).toBeGreaterThan(10_000);
          const response = await post(path, body);
          expect(response.status).toBe(400);
          expect((await errorOf(response)).code).toBe("json_too_deep");
        }
        expect(logged).not.toHaveBeenCalled();
      } finally {
        logged.mockRestore();
      }
    },
  );

  it("brackets inside strings, escaped quotes included, are not nesting", async () => {
    const instructions = `\\"${"[{".repeat(2000)}\\" \\\\`;
    const response = await post("/v1/realtime/client_secrets", JSON.stringify({ session: { instructions } }));
    expect(response.status).toBe(200);
    expect(((await response.json()) as { session: { instructions: string } }).session.instructions).toBe(
      instructions,
    );
  });

  it("a call's multipart session field: at the cap the call is placed, one past it is 400 naming the field", async () => {
    const { query } = await soloRelay();
    const place = (depth: number) => {
      const form = new FormData();
      form.set("sdp", offerSdp());
      // The session object and its tracing are two of the levels.
      form.set("session", `{"tracing":{"metadata":${nested(depth - 2, "arrays")}}}`);
      return edge(`/v1/realtime/calls${query}`, { method: "POST", apiKey: API_KEY, body: form });
    };
    expect((await place(MAX_JSON_DEPTH)).status).toBe(201);
    const over = await place(MAX_JSON_DEPTH + 1);
    expect(over.status).toBe(400);
    expect(await errorOf(over)).toMatchObject({ code: "json_too_deep", param: "session" });
  });
});

describe("DNS rebinding: a dev edge (EARSHOT_DEV=1) answers only its own host names", () => {
  const JSON_BODY = { headers: { "content-type": "application/json" }, body: "{}" };
  const mintDev = (host: string, overrides: Partial<Record<keyof Env, string>> = {}) =>
    edgeWith(overrides, "/dev/client_secret", { method: "POST", host, ...JSON_BODY });
  const LOOPBACK = [
    "localhost",
    "localhost:8787",
    "127.0.0.1",
    "127.0.0.1:8787",
    "[::1]",
    "[::1]:8787",
    "edge.localhost",
    "a.b.localhost:9000",
  ];
  // A rebinding page's own name, and names that only look like loopback ones.
  const STRANGERS = [
    "evil.example",
    "evil.example:8787",
    "localhost.evil.example",
    "evillocalhost",
    "localhost.localhost.evil.example:8787",
    "127.0.0.1.nip.io",
    "192.168.1.20",
  ];

  it("mints for loopback names, with any port", async () => {
    for (const host of LOOPBACK) expect((await mintDev(host)).status, host).toBe(200);
  });

  it("refuses any other name with 403 host_not_allowed, on every API path, before anything else", async () => {
    for (const host of STRANGERS) {
      const response = await mintDev(host);
      expect(response.status, host).toBe(403);
      const error = await errorOf(response);
      expect(error).toMatchObject({ type: "permission_error", code: "host_not_allowed", param: null });
      expect(error.message).toContain(`not "${host.replace(/:\d+$/, "")}"`);
      expect(error.message).toContain("EARSHOT_ALLOWED_HOSTS");
    }
    const host = "evil.example:8787";
    const refused = [
      await edge("/v1/realtime/client_secrets", { method: "POST", apiKey: API_KEY, host, ...JSON_BODY }),
      await edge("/v1/realtime/calls", {
        method: "OPTIONS",
        host,
        headers: { origin: `http://${host}`, "access-control-request-method": "POST" },
      }),
      await edge("/admin/relays", { apiKey: API_KEY, host }),
      await exports.default.fetch(
        new Request(
          `http://${host}/internal/relays/heartbeat`,
          await signedPost(
            "/internal/relays/heartbeat",
            JSON.stringify(heartbeatOf({ relay_id: unique("relay") })),
          ),
        ),
      ),
    ];
    expect(refused.map((r) => r.status)).toEqual([403, 403, 403, 403]);
    // What is not the API stays as it was.
    expect((await edge("/healthz", { host })).status).toBe(200);
  });

  it("EARSHOT_ALLOWED_HOSTS adds exactly the names it lists", async () => {
    const allowed = { EARSHOT_ALLOWED_HOSTS: "devbox.lan, 192.168.1.20" };
    for (const host of ["devbox.lan", "devbox.lan:8787", "192.168.1.20:8787", "localhost"]) {
      expect((await mintDev(host, allowed)).status, host).toBe(200);
    }
    for (const host of ["devbox.lan.evil.example", "other.lan", "192.168.1.21"]) {
      expect((await mintDev(host, allowed)).status, host).toBe(403);
    }
  });

  it("a list entry that is not a bare host name stops the edge, naming the variable", () => {
    const vars = {
      EARSHOT_API_KEYS: API_KEY,
      EARSHOT_SIGNING_KEYS: "k1:0123456789abcdef",
      EARSHOT_RELAY_SECRET: "0123456789abcdef",
    };
    expect([
      ...resolveConfig({ ...vars, EARSHOT_ALLOWED_HOSTS: " devbox.lan,[fd00::1] " }).allowedHosts,
    ]).toEqual(["devbox.lan", "[fd00::1]"]);
    for (const entry of ["http://devbox.lan", "devbox.lan:8787", "DevBox.lan", "devbox.lan/x", "fd00::1"]) {
      expect(() => resolveConfig({ ...vars, EARSHOT_ALLOWED_HOSTS: entry }), entry).toThrow(
        /^EARSHOT_ALLOWED_HOSTS: /,
      );
    }
  });

  it("deployed (EARSHOT_DEV=0) the Worker does not check: Cloudflare routes by hostname", async () => {
    const response = await edgeWith({ EARSHOT_DEV: "0" }, "/v1/realtime/client_secrets", {
      method: "POST",
      apiKey: API_KEY,
      host: "earshot.example.com",
      ...JSON_BODY,
    });
    expect(response.status).toBe(200);
  });
});

describe("slow bodies: bounded, never held open for ever", () => {
  const text = "v=0\r\n";

  it("readCapped takes a body that trickles in before the deadline and refuses one that stalls, at the deadline", async () => {
    const request = (body: ReadableStream<Uint8Array>) =>
      new Request("https://edge.localhost/", { method: "POST", body });
    const arrived = await readCapped(request(trickle(offerSdp(), 5, 40)), MAX_OFFER_BYTES, "SDP offer", 400);
    expect(new TextDecoder().decode(arrived)).toBe(offerSdp());

    const started = Date.now();
    await expect(
      readCapped(request(trickle(text, 1, 0, true)), MAX_OFFER_BYTES, "SDP offer", 400),
    ).rejects.toMatchObject({ status: 408, code: "request_timeout" });
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(390);
    expect(took).toBeLessThan(2000);

    // Still arriving, byte by byte, when the deadline passes: refused too (a trickle is not a pass).
    await expect(
      readCapped(request(trickle(offerSdp(), 400, 5)), MAX_OFFER_BYTES, "SDP offer", 400),
    ).rejects.toMatchObject({ status: 408 });
  });

  it(
    `through the front door: a stalled offer is answered 408 after ${BODY_DEADLINE_MS} ms, a slow one is placed`,
    async () => {
      const { relayId, query } = await soloRelay();
      const slow = await postStream(query, trickle(offerSdp(), 10, 100));
      expect(slow.status).toBe(201);

      const started = Date.now();
      const stalled = await postStream(query, trickle(text, 1, 0, true));
      const took = Date.now() - started;
      expect(stalled.status).toBe(408);
      expect(await errorOf(stalled)).toMatchObject({
        code: "request_timeout",
        type: "invalid_request_error",
      });
      expect(took).toBeGreaterThanOrEqual(BODY_DEADLINE_MS - 50);
      expect(took).toBeLessThan(BODY_DEADLINE_MS + 3000);
      expect((await stubRecords(relayId)).filter((r) => r.method === "POST").length).toBe(1);
    },
    BODY_DEADLINE_MS + 10_000,
  );
});

describe("wrong methods: 405 with Allow on known paths, 404 elsewhere", () => {
  const cases: [method: string, path: string, allow: string[]][] = [
    ["GET", "/v1/realtime/calls", ["POST", "OPTIONS"]],
    ["PUT", "/v1/realtime/calls", ["POST", "OPTIONS"]],
    ["DELETE", "/v1/realtime/calls", ["POST", "OPTIONS"]],
    ["GET", "/v1/realtime/client_secrets", ["POST"]],
    ["PUT", "/v1/realtime/calls/rtc_abcdefghijklmnop", ["GET", "PATCH", "DELETE", "OPTIONS"]],
    ["POST", "/v1/realtime/calls/rtc_abcdefghijklmnop", ["GET", "PATCH", "DELETE", "OPTIONS"]],
    ["GET", "/v1/realtime/calls/rtc_abcdefghijklmnop/hangup", ["POST", "OPTIONS"]],
    ["GET", "/internal/relays/heartbeat", ["POST"]],
    ["PUT", "/internal/calls/rtc_abcdefghijklmnop/events", ["POST"]],
    ["POST", "/healthz", ["GET"]],
  ];

  it.each(cases)("%s %s → 405, Allow lists what is routed", async (method, path, allow) => {
    const response = await edge(path, { method, apiKey: API_KEY });
    expect(response.status).toBe(405);
    const header = (response.headers.get("allow") ?? "").split(",").map((m) => m.trim());
    expect(new Set(header)).toEqual(new Set(allow));
    const error = await errorOf(response);
    expect(error).toMatchObject({ code: "method_not_allowed", type: "invalid_request_error" });
    expect(error.message).toContain(method);
  });

  it("a page on another origin can read a 405 (CORS headers and Server-Timing, as on every answer)", async () => {
    const headers = { origin: "https://app.example" };
    for (const [method, path] of [
      ["PUT", "/v1/realtime/calls"],
      ["GET", "/v1/realtime/calls/rtc_abcdefghijklmnop/hangup"],
    ] as const) {
      const response = await edge(path, { method, headers });
      expect(response.status).toBe(405);
      expect(response.headers.get("access-control-allow-origin")).toBe("*");
      expect(response.headers.get("access-control-expose-headers")).toContain("Content-Type");
      expect(response.headers.get("server-timing")).not.toBeNull();
      expect((await errorOf(response)).code).toBe("method_not_allowed");
    }
  });

  it("a path nobody routes is still 404, whatever the method", async () => {
    for (const method of ["GET", "POST", "PUT", "DELETE", "PATCH"]) {
      const response = await edge("/v1/realtime/nothing-here", { method, apiKey: API_KEY });
      expect(response.status).toBe(404);
      expect(response.headers.get("allow")).toBeNull();
    }
  });
});

describe("wrong content types: 415 before anything is parsed", () => {
  it("offers, sdpfrags, client_secrets and relay reports each demand their own type", async () => {
    const { query } = await soloRelay();
    for (const type of [
      "text/plain",
      "application/json",
      "application/sdpx",
      "",
      "application/octet-stream",
    ]) {
      const response = await edge(`/v1/realtime/calls${query}`, {
        method: "POST",
        apiKey: API_KEY,
        headers: type ? { "content-type": type } : {},
        body: offerSdp(),
      });
      expect(response.status, type).toBe(415);
      expect((await errorOf(response)).code).toBe("unsupported_media_type");
    }
    // Parameters and case do not matter; the media type does.
    const withParams = await postOffer(offerSdp(), {
      apiKey: API_KEY,
      query,
      headers: { "content-type": "Application/SDP; charset=utf-8" },
    });
    expect(withParams.status).toBe(201);

    const callId = await placeCall(query);
    const patch = await edge(`/v1/realtime/calls/${callId}`, {
      method: "PATCH",
      apiKey: API_KEY,
      headers: { "content-type": "application/sdp" },
      body: "a=ice-ufrag:x\r\na=ice-pwd:y\r\n",
    });
    expect(patch.status).toBe(415);

    const mint = await edge("/v1/realtime/client_secrets", {
      method: "POST",
      apiKey: API_KEY,
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "session=x",
    });
    expect(mint.status).toBe(415);

    const beat = JSON.stringify(heartbeatOf({ relay_id: unique("relay") }));
    const signed = await signedPost("/internal/relays/heartbeat", beat);
    const plain = new Request(signed, { headers: new Headers(signed.headers) });
    plain.headers.set("content-type", "text/plain");
    expect((await exports.default.fetch(plain)).status).toBe(415);
  });
});

describe("CORS with an allowlist (EARSHOT_CORS_ORIGINS)", () => {
  const ORIGINS = { EARSHOT_CORS_ORIGINS: "https://app.example" };
  const preflight = (origin: string, path = "/v1/realtime/calls") =>
    edgeWith(ORIGINS, path, {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
      },
    });

  it("refuses preflights from every origin that is not exactly a listed one, and grants none of them headers", async () => {
    const strangers = [
      "https://evil.example",
      "null",
      "http://app.example",
      "https://app.example.evil.example",
      "https://evil.example/https://app.example",
      "https://app.example:8443",
      "https://sub.app.example",
      "https://app.exampl",
      "*",
    ];
    for (const origin of strangers) {
      for (const path of ["/v1/realtime/calls", "/v1/realtime/calls/rtc_abcdefghijklmnop"]) {
        const response = await preflight(origin, path);
        expect(response.status, `${origin} ${path}`).toBe(403);
        expect(response.headers.get("access-control-allow-origin")).toBeNull();
        expect(response.headers.get("access-control-allow-methods")).toBeNull();
        expect((await errorOf(response)).code).toBe("origin_not_allowed");
      }
    }
    const listed = await preflight("https://app.example");
    expect(listed.status).toBe(204);
    expect(listed.headers.get("access-control-allow-origin")).toBe("https://app.example");
  });

  it("a real request from an unknown origin is refused even with a valid API key, and reaches no relay", async () => {
    const { relayId, query } = await soloRelay();
    const response = await edgeWith(ORIGINS, `/v1/realtime/calls${query}`, {
      method: "POST",
      apiKey: API_KEY,
      headers: { origin: "https://evil.example", "content-type": "application/sdp" },
      body: offerSdp(),
    });
    expect(response.status).toBe(403);
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
    expect(await stubRecords(relayId)).toEqual([]);
  });
});
