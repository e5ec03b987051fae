// The relay's reports to the edge: a heartbeat the edge refuses for good is not retried, but it
// is counted and logged with the edge's reason, since it means no calls will come.
import { createServer, type Server } from "node:http";
import { Writable } from "node:stream";
import pino from "pino";
import { afterEach, expect, it } from "vitest";
import { EdgeClient } from "../../../relay/edge/edge-client.ts";
import { testHeartbeat } from "../../support/relay-api.ts";

let server: Server | undefined;
afterEach(() => server?.close());

async function edgeAnswering(status: number, body: string): Promise<string> {
  server = createServer((req, res) => {
    req.resume();
    req.on("end", () => res.writeHead(status, { "content-type": "application/json" }).end(body));
  });
  await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

function client(edgeUrl: string, lines: string[]) {
  const log = pino(
    { level: "info" },
    new Writable({ write: (c, _e, done) => (lines.push(String(c)), done()) }),
  );
  return new EdgeClient({
    edgeUrl,
    relayId: "relay-a",
    key: "test-relay-key",
    log,
    heartbeatSeconds: 60,
    heartbeat: () => testHeartbeat("relay-a"),
  });
}

it("counts and logs a heartbeat the edge refuses, with the edge's reason", async () => {
  const lines: string[] = [];
  const reason =
    '{"error":{"type":"invalid_request_error","code":"insecure_relay_url","message":"A relay\'s public_url must be https"}}';
  const edge = client(await edgeAnswering(400, reason), lines);
  expect(await edge.sendHeartbeat()).toBe(true); // not retried: retrying cannot help
  expect(edge.stats.rejected).toBe(1);
  const warning = lines.map((l) => JSON.parse(l)).find((l) => l.msg === "the edge refused a relay request");
  expect(warning).toMatchObject({ status: 400, path: "/internal/relays/heartbeat" });
  expect(warning.detail).toContain("insecure_relay_url");
  await edge.close();
});

it("does not count a busy edge (429, 5xx) as a refusal", async () => {
  const lines: string[] = [];
  const edge = client(await edgeAnswering(503, "{}"), lines);
  expect(await edge.sendHeartbeat()).toBe(false);
  expect(edge.stats.rejected).toBe(0);
  expect(edge.stats.heartbeatsFailed).toBe(1);
  await edge.close();
});
