// The relay's HTTP API refuses what it must, allocates nothing for it, and leaves nothing behind.
import { describe, expect, it } from "vitest";
import { SIGNATURE_HEADER, signRequest } from "../../../protocol/signed-request.ts";
import { MAX_CREATE_BODY_BYTES } from "../../../relay/edge/http-api.ts";
import { RecordingBridge } from "../fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { TestPeer } from "../../support/peer.ts";
import {
  metricsAuth,
  newCallId,
  postCall,
  relayKeyOf,
  TEST_SECRET,
  ticketFor,
} from "../../support/relay-api.ts";
import { useRelay } from "../../support/relays.ts";

const relay = useRelay({ bridgeFactory: RecordingBridge.factory, env: { RELAY_CAPACITY: "2" } });
/** Tickets for the relay as it runs now. */
const boot = () => ({ bootId: relay.heartbeat().boot_id });

/** Sockets and timers of this process, by kind. */
function resources(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) counts[kind] = (counts[kind] ?? 0) + 1;
  return counts;
}

async function expectError(response: Response, status: number, code: string): Promise<void> {
  expect(response.status).toBe(status);
  const body = (await response.json()) as {
    error: { type: string; code: string; message: string; param: unknown };
  };
  expect(body.error.code).toBe(code);
  expect(typeof body.error.type).toBe("string");
  expect(body.error.message.length).toBeGreaterThan(0);
  expect(body.error).toHaveProperty("param");
  expect(JSON.stringify(body)).not.toMatch(/at .*\.ts:\d+/); // no stack trace
}

async function offer(): Promise<{ client: TestPeer; sdp: string }> {
  const client = new TestPeer();
  return { client, sdp: await client.offer() };
}

describe("tickets", () => {
  it("refuses a missing, forged, mismatched or expired ticket and allocates nothing", async () => {
    const { client, sdp } = await offer();
    const before = resources();
    const callId = newCallId();
    const refused = async (ticket: string | undefined, status: number, code: string) =>
      expectError(await postCall(relay.url, { call_id: callId, offer_sdp: sdp }, ticket), status, code);
    await refused(undefined, 401, "ticket_missing");
    await refused(
      await ticketFor(callId, sdp, {}, { ...boot(), secret: "not-the-relay-secret-at-all" }),
      403,
      "ticket_bad_signature",
    );
    await refused(await ticketFor(callId, `${sdp}a=x\r\n`, {}, boot()), 403, "ticket_mismatch");
    // A ticket for another relay is signed with that relay's key.
    await refused(
      await ticketFor(callId, sdp, {}, { ...boot(), relayId: "relay-elsewhere" }),
      403,
      "ticket_bad_signature",
    );
    const expired = await ticketFor(
      callId,
      sdp,
      {},
      { ...boot(), nowSeconds: Math.floor(Date.now() / 1000) - 120 },
    );
    await refused(expired, 403, "ticket_expired");
    expect(relay.calls.size).toBe(0);
    expect(resources().UDPWRAP ?? 0).toBe(before.UDPWRAP ?? 0);
    await client.close();
  });

  it("accepts a ticket once and refuses its replay", async () => {
    const { client, sdp } = await offer();
    const callId = newCallId();
    const ticket = await ticketFor(callId, sdp, {}, boot());
    const first = await postCall(relay.url, { call_id: callId, offer_sdp: sdp }, ticket);
    expect(first.status).toBe(201);
    const udp = resources().UDPWRAP ?? 0;
    await expectError(
      await postCall(relay.url, { call_id: callId, offer_sdp: sdp }, ticket),
      403,
      "ticket_replayed",
    );
    expect(relay.calls.size).toBe(1);
    expect(resources().UDPWRAP ?? 0).toBe(udp);
    await relay.calls.get(callId)!.end("hangup");
    await client.close();
  });
});

describe("bad requests", () => {
  it("answers JSON errors for bad JSON, bad fields, wrong type and unknown routes", async () => {
    const post = (body: string, type = "application/json") =>
      fetch(`${relay.url}/calls`, { method: "POST", headers: { "content-type": type }, body });
    await expectError(await post("{"), 400, "invalid_json");
    await expectError(
      await post(JSON.stringify({ call_id: "nope", offer_sdp: "v=0", session: {} })),
      400,
      "invalid_request",
    );
    await expectError(await post("{}", "text/plain"), 415, "unsupported_media_type");
    await expectError(await fetch(`${relay.url}/nowhere`), 404, "not_found");
    await expectError(await fetch(`${relay.url}/calls`), 405, "method_not_allowed");
  });

  it("takes a body at the size cap and refuses one byte more with 413", async () => {
    const body = (size: number) => {
      const base = JSON.stringify({ call_id: newCallId(), offer_sdp: "v=0", session: { instructions: "" } });
      return base.replace('"instructions":""', `"instructions":"${"x".repeat(size - base.length)}"`);
    };
    const post = (text: string) =>
      fetch(`${relay.url}/calls`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: text,
      });
    const atCap = body(MAX_CREATE_BODY_BYTES);
    expect(Buffer.byteLength(atCap)).toBe(MAX_CREATE_BODY_BYTES);
    // At the cap the body is read and judged on its content (instructions too long for the schema).
    await expectError(await post(atCap), 400, "invalid_request");
    await expectError(await post(body(MAX_CREATE_BODY_BYTES + 1)), 413, "body_too_large");
  });

  it("refuses DELETE and PATCH without a valid signature", async () => {
    const path = `/calls/${newCallId()}`;
    await expectError(await fetch(`${relay.url}${path}`, { method: "DELETE" }), 401, "bad_signature");
    const wrong = await signRequest("some-other-secret-entirely", "DELETE", path);
    await expectError(
      await fetch(`${relay.url}${path}`, { method: "DELETE", headers: { [SIGNATURE_HEADER]: wrong } }),
      401,
      "bad_signature",
    );
    // The shared secret is not this relay's key.
    const shared = await signRequest(TEST_SECRET, "DELETE", path);
    await expectError(
      await fetch(`${relay.url}${path}`, { method: "DELETE", headers: { [SIGNATURE_HEADER]: shared } }),
      401,
      "bad_signature",
    );
    const right = await signRequest(await relayKeyOf(), "DELETE", path);
    await expectError(
      await fetch(`${relay.url}${path}`, { method: "DELETE", headers: { [SIGNATURE_HEADER]: right } }),
      404,
      "call_not_found",
    );
    // The same signature again is a replay.
    await expectError(
      await fetch(`${relay.url}${path}`, { method: "DELETE", headers: { [SIGNATURE_HEADER]: right } }),
      401,
      "signature_replayed",
    );
  });
});

describe("capacity and clean-up", () => {
  it("takes calls up to RELAY_CAPACITY, refuses the next with 503, and a finished call leaves nothing behind", async () => {
    const before = resources();
    const clients = [new TestPeer(), new TestPeer()];
    for (const c of clients) expect((await c.call(relay.url)).status).toBe(201);
    await Promise.all(clients.map((c) => c.connected()));
    expect(relay.calls.size).toBe(2);
    expect(relay.pacer.running).toBe(true);

    const extra = new TestPeer();
    const refused = await extra.call(relay.url);
    await expectError(refused, 503, "relay_at_capacity");
    expect(refused.headers.get("retry-after")).toBe("1");

    // One ends by a signed DELETE from the edge, the other by the client hanging up.
    const path = `/calls/${clients[0]!.callId}`;
    const signature = await signRequest(await relayKeyOf(), "DELETE", path);
    const deleted = await fetch(`${relay.url}${path}`, {
      method: "DELETE",
      headers: { [SIGNATURE_HEADER]: signature },
    });
    expect(deleted.status).toBe(204);
    const second = relay.calls.get(clients[1]!.callId)!;
    await clients[1]!.close();
    await waitFor(() => relay.calls.size === 0, 10_000, "both calls ended");
    expect(second.endReason).toBe("client_hangup");
    await Promise.all(clients.map((c) => c.close()));
    await extra.close();
    await second.closed;

    const bridges = RecordingBridge.instances.filter((b) => clients.some((c) => c.callId === b.ctx.callId));
    expect(bridges.map((b) => b.closed)).toEqual([1, 1]);
    expect(relay.pacer.running).toBe(false);
    await waitFor(() => (resources().UDPWRAP ?? 0) <= (before.UDPWRAP ?? 0), 5000, "UDP sockets closed");
    await waitFor(() => (resources().Timeout ?? 0) <= (before.Timeout ?? 0), 5000, "timers cleared");
    const metrics = await (await fetch(`${relay.url}/metrics`, { headers: metricsAuth })).text();
    expect(metrics).toMatch(/earshot_relay_active_calls 0/);
    expect(Number(/earshot_relay_calls_ended_total\{reason="client_hangup"\} (\d+)/.exec(metrics)?.[1])).toBe(
      1,
    );
    expect(
      Number(/earshot_relay_calls_ended_total\{reason="hangup"\} (\d+)/.exec(metrics)?.[1]),
    ).toBeGreaterThanOrEqual(1);
    expect(metrics).toMatch(/earshot_relay_uplink_frame_work_seconds_bucket/);
  });
});
