// Property-based fuzzing of what the relay parses: its own SDP helpers, offers and sdpfrags
// through the real HTTP API, and STUN (werift's parser, and raw datagrams at a live call's
// port). No input may throw out of a parser, crash the relay, get a 5xx, or take more than a
// bounded time.
import { createSocket } from "node:dgram";
import { performance } from "node:perf_hooks";
import fc from "fast-check";
import { parseMessage } from "werift";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SIGNATURE_HEADER, signRequest } from "../../../protocol/signed-request.ts";
import { answerDirection, answerSetup, rewriteCandidateAddress } from "../../../relay/call/sdp.ts";
import { RecordingBridge } from "../fixtures.ts";
import { waitFor } from "../../support/loopback.ts";
import { TestPeer } from "../../support/peer.ts";
import { bootIdOf, newCallId, postCall, relayKeyOf, ticketFor } from "../../support/relay-api.ts";
import { useRelay } from "../../support/relays.ts";

/** Per-input bound for a parser; generous (a parse takes microseconds) but catches ReDoS. */
const PARSE_BOUND_MS = 50;
/** Per-request bound through HTTP, werift's SDP parser and an ICE restart included. */
const REQUEST_BOUND_MS = 1000;

const relay = useRelay({ bridgeFactory: RecordingBridge.factory });
let client: TestPeer;
let offer = "";

beforeAll(async () => {
  client = new TestPeer();
  expect((await client.call(relay.url)).status).toBe(201);
  await client.connected();
  offer = client.pc.localDescription!.sdp;
});
afterAll(() => client.close());

const sdpLine = fc.oneof(
  fc.constantFrom(
    "v=0",
    "o=- 1 1 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8",
    "m=audio 0 UDP/TLS/RTP/SAVPF 111",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "c=IN IP4 0.0.0.0",
    "a=rtpmap:111 opus/48000/2",
    "a=rtpmap:0 PCMU/8000",
    "a=setup:actpass",
    "a=setup:passive",
    "a=sendrecv",
    "a=inactive",
    "a=mid:0",
    "a=rtcp-mux",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:0123456789abcdefghijkl",
    "a=fingerprint:sha-256 00:11",
    "a=candidate:1 1 udp 1 127.0.0.1 9 typ host",
    "a=candidate:1 1 udp 1 x.local 9 typ host",
    "a=sctp-port:5000",
    "a=max-message-size:0",
  ),
  fc.string({ maxLength: 80 }).map((s) => `a=${s}`),
  fc.string({ maxLength: 120 }),
  fc.stringMatching(/^a=candidate:[ -~]{0,100}$/),
);
const sdpText = fc
  .array(sdpLine, { maxLength: 60 })
  .chain((lines) => fc.constantFrom("\r\n", "\n", "\r").map((eol) => lines.join(eol)));
const anyText = fc.oneof(
  sdpText,
  fc.string({ maxLength: 2000 }),
  fc.string({ unit: "binary", maxLength: 500 }),
);

function timed<T>(fn: () => T): [T, number] {
  const start = performance.now();
  const out = fn();
  return [out, performance.now() - start];
}

describe("relay/sdp.ts", () => {
  it("never throws and stays within the bound on any text", () => {
    let cases = 0;
    let worst = 0;
    fc.assert(
      fc.property(anyText, (text) => {
        cases++;
        const [, ms] = timed(() => {
          answerSetup(text);
          answerDirection(text);
          rewriteCandidateAddress(text, "127.0.0.1", "203.0.113.7");
        });
        worst = Math.max(worst, ms);
        expect(ms).toBeLessThan(PARSE_BOUND_MS);
      }),
      { numRuns: 3000 },
    );
    // Pathological shapes for the regexes: long runs with no match.
    for (const text of [
      "m=audio".repeat(20_000),
      "a=candidate:1 1 ".repeat(20_000),
      `m=audio${" ".repeat(100_000)}`,
    ]) {
      const [, ms] = timed(() => {
        answerDirection(text);
        rewriteCandidateAddress(text, "127.0.0.1", "203.0.113.7");
      });
      worst = Math.max(worst, ms);
      expect(ms).toBeLessThan(PARSE_BOUND_MS * 4);
    }
    console.info(`[figures] sdp.ts fuzz: ${cases + 3} inputs, 0 throws, worst ${worst.toFixed(2)} ms`);
  });
});

describe("STUN parsing (werift parseMessage, patched)", () => {
  const stunShaped = fc
    .record({
      type: fc.oneof(fc.constantFrom(0x0001, 0x0101, 0x0111, 0x0003), fc.integer({ min: 0, max: 0x3fff })),
      attrs: fc.array(
        fc.record({
          type: fc.oneof(
            fc.constantFrom(0x0006, 0x0008, 0x8028, 0x0024, 0x0020, 0x8029, 0x802a, 0x0025),
            fc.integer({ min: 0, max: 0xffff }),
          ),
          value: fc.uint8Array({ maxLength: 64 }),
          lie: fc.integer({ min: -8, max: 8 }),
        }),
        { maxLength: 12 },
      ),
    })
    .map(({ type, attrs }) => {
      const body = Buffer.concat(
        attrs.map((a) => {
          const head = Buffer.alloc(4);
          head.writeUInt16BE(a.type, 0);
          head.writeUInt16BE(Math.max(0, Math.min(0xffff, a.value.length + a.lie)), 2);
          const pad = (4 - (a.value.length % 4)) % 4;
          return Buffer.concat([head, Buffer.from(a.value), Buffer.alloc(pad)]);
        }),
      );
      const header = Buffer.alloc(20);
      header.writeUInt16BE(type, 0);
      header.writeUInt16BE(body.length, 2);
      header.writeUInt32BE(0x2112a442, 4);
      header.fill(7, 8, 20);
      return Buffer.concat([header, body]);
    });
  const datagram = fc.oneof(
    stunShaped,
    fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b)),
  );

  it("never throws and stays within the bound, with and without an integrity key", () => {
    let cases = 0;
    let parsed = 0;
    fc.assert(
      fc.property(datagram, (bytes) => {
        cases++;
        const [message, ms] = timed(() => {
          const m = parseMessage(bytes);
          parseMessage(bytes, Buffer.from("0123456789abcdefghijkl"));
          return m;
        });
        if (message) parsed++;
        expect(ms).toBeLessThan(PARSE_BOUND_MS);
      }),
      { numRuns: 5000 },
    );
    console.info(`[figures] STUN parser fuzz: ${cases} inputs, ${parsed} parsed, 0 throws`);
  });

  it("sent raw at a live call's port, get no answer and leave the call connected", async () => {
    const port = Number(/ 127\.0\.0\.1 (\d+) typ host/.exec(client.answerSdp)![1]);
    const socket = createSocket("udp4");
    const answers: Buffer[] = [];
    socket.on("message", (m) => answers.push(m));
    await new Promise<void>((r) => socket.bind(0, "127.0.0.1", r));
    const samples = fc.sample(datagram, 1000);
    try {
      for (const bytes of samples) {
        await new Promise<void>((resolve) => socket.send(bytes, port, "127.0.0.1", () => resolve()));
      }
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      socket.close();
    }
    expect(answers).toEqual([]);
    const call = relay.calls.get(client.callId)!;
    expect(call.state).toBe("connected");
    client.channel.send('{"type":"after.fuzz"}');
    const bridge = RecordingBridge.instances.find((b) => b.ctx.callId === client.callId)!;
    await waitFor(() => bridge.messages.includes('{"type":"after.fuzz"}'), 5000, "message after the fuzz");
    console.info(`[figures] raw STUN/garbage datagrams at a live call: ${samples.length} sent, 0 answered`);
  });
});

describe("offers and sdpfrags through the HTTP API", () => {
  /** A valid offer with lines dropped, duplicated, replaced or garbled. */
  const mutatedOffer = fc
    .array(fc.tuple(fc.nat(), fc.constantFrom("drop", "dup", "replace", "garble"), sdpLine), { maxLength: 6 })
    .map((edits) => {
      const lines = offer.split("\r\n");
      for (const [at, op, line] of edits) {
        const i = at % lines.length;
        if (op === "drop") lines.splice(i, 1);
        else if (op === "dup") lines.splice(i, 0, lines[i]!);
        else if (op === "replace") lines[i] = line;
        else lines[i] = lines[i]!.slice(0, lines[i]!.length >> 1) + line;
      }
      return lines.join("\r\n");
    });

  it("POST /calls answers 201 or a 4xx error envelope, never 5xx, within the bound", async () => {
    const statuses = new Map<number, number>();
    let worst = 0;
    await fc.assert(
      fc.asyncProperty(fc.oneof(mutatedOffer, sdpText), async (sdp) => {
        const callId = newCallId();
        const start = performance.now();
        const response = await postCall(
          relay.url,
          { call_id: callId, offer_sdp: sdp },
          await ticketFor(callId, sdp, {}, { bootId: await bootIdOf(relay.url) }),
        );
        const ms = performance.now() - start;
        worst = Math.max(worst, ms);
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        const body = (await response.json()) as { error?: { type: string; code: string; message: string } };
        if (response.status === 201) {
          await relay.calls.get(callId)?.end("hangup");
        } else {
          expect(response.status).toBeGreaterThanOrEqual(400);
          expect(response.status).toBeLessThan(500);
          expect(body.error?.message).toBeTruthy();
          expect(body.error?.message).not.toMatch(/\n\s+at /); // no stack trace
        }
        expect(ms).toBeLessThan(REQUEST_BOUND_MS);
      }),
      { numRuns: 150 },
    );
    console.info(
      `[figures] POST /calls fuzz: 150 offers, statuses ${JSON.stringify(Object.fromEntries(statuses))}, worst ${Math.round(worst)} ms`,
    );
  });

  it("PATCH sdpfrag answers 200 or a 4xx error envelope, never 5xx, and the relay lives on", async () => {
    const target = new TestPeer();
    expect((await target.call(relay.url)).status).toBe(201);
    await target.connected();
    const path = `/calls/${target.callId}`;
    const statuses = new Map<number, number>();
    const frag = fc.oneof(
      sdpText,
      fc
        .tuple(
          fc.stringMatching(/^[!-~]{0,40}$/),
          fc.stringMatching(/^[!-~]{0,40}$/),
          fc.array(sdpLine, { maxLength: 10 }),
        )
        .map(([u, p, rest]) => [`a=ice-ufrag:${u}`, `a=ice-pwd:${p}`, ...rest, ""].join("\r\n")),
    );
    try {
      await fc.assert(
        fc.asyncProperty(frag, async (body) => {
          const start = performance.now();
          const response = await fetch(`${relay.url}${path}`, {
            method: "PATCH",
            headers: {
              "content-type": "application/trickle-ice-sdpfrag",
              [SIGNATURE_HEADER]: await signRequest(await relayKeyOf(), "PATCH", path, body),
            },
            body,
          });
          const text = await response.text();
          statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
          expect(response.status === 200 || (response.status >= 400 && response.status < 500)).toBe(true);
          if (response.status !== 200) expect(JSON.parse(text).error.message).toBeTruthy();
          expect(performance.now() - start).toBeLessThan(REQUEST_BOUND_MS);
        }),
        { numRuns: 150 },
      );
    } finally {
      await target.close();
    }
    const health = await fetch(`${relay.url}/health`);
    expect(health.status).toBeLessThan(500);
    console.info(
      `[figures] PATCH sdpfrag fuzz: 150 fragments, statuses ${JSON.stringify(Object.fromEntries(statuses))}`,
    );
  });
});
