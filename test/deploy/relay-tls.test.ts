// The relay's own TLS (RELAY_TLS_CERT / RELAY_TLS_KEY): with both set its HTTP API is HTTPS only.
// A self-signed certificate for 127.0.0.1 is made here with openssl; the client trusts exactly it.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TICKET_HEADER } from "../../protocol/relay-api.ts";
import { ConfigError } from "../../relay/config.ts";
import { TestPeer } from "../support/peer.ts";
import { newCallId, ticketFor } from "../support/relay-api.ts";
import { type InProcessRelay, startRelay, testConfig } from "../support/relays.ts";
import { selfSignedFor127 } from "../support/self-signed.ts";

const hasOpenssl = (() => {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

function httpsRequest(
  url: string,
  ca: string,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: init.method ?? "GET", headers: init.headers, ca }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end(init.body);
  });
}

describe.skipIf(!hasOpenssl)("relay HTTPS", () => {
  let dir: string;
  let cert: string;
  let certPath: string;
  let keyPath: string;
  let relay: InProcessRelay;
  const clients: TestPeer[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "earshot-tls-"));
    ({ cert, certPath, keyPath } = selfSignedFor127(dir));
    relay = await startRelay({ env: { RELAY_TLS_CERT: certPath, RELAY_TLS_KEY: keyPath } });
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await relay?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("answers /healthz over HTTPS with its certificate, and its default public URL is https", async () => {
    const url = relay.url.replace("http:", "https:");
    const health = await httpsRequest(`${url}/healthz`, cert);
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({ status: "ok", relay_id: "relay-test" });
    expect(relay.heartbeat().public_url).toMatch(/^https:\/\/127\.0\.0\.1:/);
  });

  it("takes a call (offer + ticket) over HTTPS", async () => {
    const client = new TestPeer();
    clients.push(client);
    const offer = await client.offer();
    const callId = newCallId();
    const body = JSON.stringify({ call_id: callId, offer_sdp: offer, session: {} });
    const response = await httpsRequest(`${relay.url.replace("http:", "https:")}/calls`, cert, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        [TICKET_HEADER]: await ticketFor(callId, offer, {}, { bootId: relay.heartbeat().boot_id }),
      },
      body,
    });
    expect(response.status, response.body).toBe(201);
    expect((JSON.parse(response.body) as { answer_sdp: string }).answer_sdp).toMatch(/^v=0/);
  });

  it("does not speak plain HTTP on the TLS port", async () => {
    await expect(fetch(`${relay.url}/healthz`, { signal: AbortSignal.timeout(3000) })).rejects.toThrow();
  });

  it("refuses half a TLS setup, an unreadable file and a file that is not PEM, naming the variable", () => {
    const problem = (env: Record<string, string>) => {
      try {
        testConfig(env);
      } catch (error) {
        if (error instanceof ConfigError) return error.message;
        throw error;
      }
      return "no error";
    };
    expect(problem({ RELAY_TLS_CERT: certPath })).toMatch(/RELAY_TLS_KEY: required with RELAY_TLS_CERT/);
    expect(problem({ RELAY_TLS_KEY: keyPath })).toMatch(/RELAY_TLS_CERT: required with RELAY_TLS_KEY/);
    expect(problem({ RELAY_TLS_CERT: join(dir, "missing.pem"), RELAY_TLS_KEY: keyPath })).toMatch(
      /RELAY_TLS_CERT: cannot read .*missing\.pem \(ENOENT\)/,
    );
    const notPem = join(dir, "not.pem");
    writeFileSync(notPem, "hello");
    expect(problem({ RELAY_TLS_CERT: certPath, RELAY_TLS_KEY: notPem })).toMatch(
      /RELAY_TLS_KEY: .* not a PEM/,
    );
    // The key where the certificate belongs is caught too.
    expect(problem({ RELAY_TLS_CERT: keyPath, RELAY_TLS_KEY: keyPath })).toMatch(
      /RELAY_TLS_CERT: .* not a PEM/,
    );
  });
});
