import { describe, expect, it } from "vitest";
import {
  SIDEBAND_TICKET_TTL_SECONDS,
  signSidebandTicket,
  signTicket,
  verifySidebandTicket,
  verifyTicket,
  type TicketSubject,
} from "../../protocol/ticket.ts";
import { signRequest, verifyRequest } from "../../protocol/signed-request.ts";
import { deriveRelayKey, RELAY_KEY_PATTERN } from "../../protocol/relay-key.ts";

const secret = "relay-secret";
const subject: TicketSubject = {
  callId: "rtc_abcdefgh1234",
  relayId: "relay-eu-1",
  bootId: "boot-0123456789",
  offerSdp: "v=0\r\n",
  session: { model: "gpt-realtime", instructions: "hi" },
};
const now = 1_800_000_000;

describe("tickets", () => {
  it("verifies a ticket for its own subject", async () => {
    const ticket = await signTicket(secret, subject, { nowSeconds: now });
    const result = await verifyTicket(secret, ticket, subject, now + 5);
    expect(result.ok).toBe(true);
  });

  it("hashes the session config independently of key order", async () => {
    const ticket = await signTicket(secret, subject, { nowSeconds: now });
    const reordered = { ...subject, session: { instructions: "hi", model: "gpt-realtime" } };
    expect((await verifyTicket(secret, ticket, reordered, now)).ok).toBe(true);
  });

  it.each([
    ["another call", { callId: "rtc_otherother1" }],
    ["another relay", { relayId: "relay-us-1" }],
    ["another offer", { offerSdp: "v=0\r\ns=-\r\n" }],
    ["another session", { session: { model: "other" } }],
  ])("refuses a ticket moved to %s", async (_name, change) => {
    const ticket = await signTicket(secret, subject, { nowSeconds: now });
    const result = await verifyTicket(secret, ticket, { ...subject, ...change }, now);
    expect(result).toMatchObject({ ok: false, code: "ticket_mismatch" });
  });

  it("refuses forged, tampered, expired, early, missing and oversized tickets", async () => {
    const ticket = await signTicket(secret, subject, { nowSeconds: now, ttlSeconds: 30 });
    const [v, claims, mac] = ticket.split(".");
    const tampered = `${v}.${claims!.slice(0, -2)}AA.${mac}`;
    expect(await verifyTicket("other-secret", ticket, subject, now)).toMatchObject({
      code: "ticket_bad_signature",
    });
    expect(await verifyTicket(secret, tampered, subject, now)).toMatchObject({ ok: false });
    // 30 s of tolerated skew past exp, then refused.
    expect((await verifyTicket(secret, ticket, subject, now + 60)).ok).toBe(true);
    expect(await verifyTicket(secret, ticket, subject, now + 61)).toMatchObject({ code: "ticket_expired" });
    expect((await verifyTicket(secret, ticket, subject, now - 30)).ok).toBe(true);
    expect(await verifyTicket(secret, ticket, subject, now - 31)).toMatchObject({
      code: "ticket_not_yet_valid",
    });
    expect(await verifyTicket(secret, undefined, subject, now)).toMatchObject({ code: "ticket_missing" });
    expect(await verifyTicket(secret, "v1." + "A".repeat(4096) + ".x", subject, now)).toMatchObject({
      code: "ticket_malformed",
    });
    expect(await verifyTicket(secret, "garbage", subject, now)).toMatchObject({ code: "ticket_malformed" });
  });
});

describe("signed requests", () => {
  it("verifies the same method, path and body, and nothing else", async () => {
    const header = await signRequest(secret, "POST", "/internal/relays/heartbeat", '{"a":1}', now);
    expect(
      (await verifyRequest(secret, header, "POST", "/internal/relays/heartbeat", '{"a":1}', now)).ok,
    ).toBe(true);
    expect(
      (await verifyRequest(secret, header, "POST", "/internal/relays/heartbeat", '{"a":2}', now)).ok,
    ).toBe(false);
    expect(
      (await verifyRequest(secret, header, "DELETE", "/internal/relays/heartbeat", '{"a":1}', now)).ok,
    ).toBe(false);
    expect(
      (await verifyRequest(secret, header, "POST", "/internal/relays/heartbeat", '{"a":1}', now + 31)).ok,
    ).toBe(false);
    expect((await verifyRequest("x", header, "POST", "/internal/relays/heartbeat", '{"a":1}', now)).ok).toBe(
      false,
    );
    expect((await verifyRequest(secret, null, "POST", "/", "", now)).ok).toBe(false);
  });

  it("accepts a signature up to 30 s old but at most 5 s in the future, and says until when", async () => {
    const header = await signRequest(secret, "POST", "/x", "", now);
    const at = (t: number) => verifyRequest(secret, header, "POST", "/x", "", t);
    expect(await at(now + 30)).toMatchObject({ ok: true, expires: now + 30 });
    expect((await at(now + 31)).ok).toBe(false);
    expect((await at(now - 5)).ok).toBe(true);
    expect((await at(now - 6)).ok).toBe(false);
  });
});

describe("relay keys", () => {
  it("differ per relay id and per secret, and a ticket for one relay fails with another's key", async () => {
    const a = await deriveRelayKey(secret, "relay-a");
    expect(a).toMatch(RELAY_KEY_PATTERN);
    expect(await deriveRelayKey(secret, "relay-a")).toBe(a);
    expect(await deriveRelayKey(secret, "relay-b")).not.toBe(a);
    expect(await deriveRelayKey("another-secret", "relay-a")).not.toBe(a);
    const ticket = await signTicket(await deriveRelayKey(secret, "relay-b"), subject, { nowSeconds: now });
    expect(await verifyTicket(a, ticket, subject, now)).toMatchObject({ code: "ticket_bad_signature" });
  });

  it("refuses a ticket for another boot of the relay", async () => {
    const ticket = await signTicket(secret, subject, { nowSeconds: now });
    expect(
      await verifyTicket(secret, ticket, { ...subject, bootId: "boot-after-restart" }, now),
    ).toMatchObject({
      ok: false,
      code: "ticket_stale_boot",
    });
  });
});

describe("sideband tickets", () => {
  const target = { callId: subject.callId, relayId: subject.relayId, bootId: subject.bootId };
  const sign = (options: { nowSeconds?: number } = {}) =>
    signSidebandTicket(secret, { ...target, keyId: "key_0123456789ab" }, { nowSeconds: now, ...options });

  it("verify for their call, relay and boot, naming the key that attached", async () => {
    const verdict = await verifySidebandTicket(secret, await sign(), target, now);
    expect(verdict).toMatchObject({ ok: true, claims: { purpose: "sideband", key_id: "key_0123456789ab" } });
  });

  it("live SIDEBAND_TICKET_TTL_SECONDS, with the usual clock skew", async () => {
    const ticket = await sign();
    const lastGood = now + SIDEBAND_TICKET_TTL_SECONDS + 30;
    expect((await verifySidebandTicket(secret, ticket, target, lastGood)).ok).toBe(true);
    expect(await verifySidebandTicket(secret, ticket, target, lastGood + 1)).toMatchObject({
      code: "ticket_expired",
    });
  });

  it.each([
    ["another call", { callId: "rtc_otherother1" }, "ticket_mismatch"],
    ["another relay", { relayId: "relay-us-1" }, "ticket_mismatch"],
    ["another boot", { bootId: "boot-after-restart" }, "ticket_stale_boot"],
  ])("refuse one moved to %s", async (_name, change, code) => {
    expect(await verifySidebandTicket(secret, await sign(), { ...target, ...change }, now)).toMatchObject({
      ok: false,
      code,
    });
  });

  it("and offer tickets do not pass for each other", async () => {
    const offerTicket = await signTicket(secret, subject, { nowSeconds: now });
    expect(await verifySidebandTicket(secret, offerTicket, target, now)).toMatchObject({
      code: "ticket_malformed",
    });
    expect(await verifyTicket(secret, await sign(), subject, now)).toMatchObject({
      code: "ticket_malformed",
    });
  });
});
