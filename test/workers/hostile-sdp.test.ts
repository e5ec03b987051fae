// Property-based fuzzing (fast-check, inside workerd) of everything the edge parses in SDP:
// checkOffer, checkSdpFragment and the candidate filter. No input may throw anything but the
// 400 ApiError, and none may take longer than PARSE_BOUND_MS. A real offer parses in well under
// 0.1 ms here, so the bound is a factor of thousands over the common case, wide enough for a GC
// pause on a loaded machine (50 ms was not); it exists to catch super-linear (regex
// backtracking) behaviour, which at 32 KiB would take seconds.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MAX_OFFER_BYTES } from "../../protocol/relay-api.ts";
import { ApiError } from "../../workers/errors.ts";
import { checkOffer, checkSdpFragment, isForwardableCandidate, MAX_CANDIDATES } from "../../workers/sdp.ts";
import { offerSdp } from "./fixtures.ts";

const PARSE_BOUND_MS = 250;
const RUNS = 400;

/** Runs `parse`, and asserts it either returns or throws a 400 ApiError, within the bound. */
function bounded<T>(parse: () => T): { ok: true; value: T } | { ok: false; error: ApiError } {
  const started = performance.now();
  let outcome: { ok: true; value: T } | { ok: false; error: ApiError };
  try {
    outcome = { ok: true, value: parse() };
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    expect(error.status).toBe(400);
    expect(error.message.length).toBeGreaterThan(0);
    outcome = { ok: false, error };
  }
  expect(performance.now() - started).toBeLessThan(PARSE_BOUND_MS);
  return outcome;
}

const sdpChar = fc.constantFrom(
  ..."v=oamctsbkr0123456789 :/.-_+*;\r\n\t\x00\x7f\u00e9\u{1f600}abcdefghijklmnopqrstuvwxyzABCDEF".split(""),
);
const sdpLike = fc.array(sdpChar, { maxLength: 2000 }).map((cs) => cs.join(""));

const VALID = offerSdp();
const VALID_LINES = VALID.split("\r\n").slice(0, -1);

/** One of many ways to damage a line of a real offer. */
const lineMutation = fc.oneof(
  fc.constant((_: string) => ""),
  fc.constant((l: string) => l + l),
  fc.constant((l: string) => l.replace("=", "")),
  fc.constant((l: string) => l.toUpperCase()),
  fc.constant((l: string) => l + "\x00"),
  fc.constant((l: string) => l.repeat(200)),
  fc.constant((l: string) => l.slice(0, Math.floor(l.length / 2))),
  fc.constant((l: string) => l.replace(/ /g, "  ")),
  fc.constant((l: string) => l.replace(/\d+/g, "99999999999999999999")),
  fc.constant((l: string) => l.replace(/\d+/g, "-1")),
  fc.string({ maxLength: 200 }).map((s) => (l: string) => `${l.slice(0, 2)}${s}`),
  fc.string({ maxLength: 200 }).map((s) => (l: string) => `${l}${s}`),
  fc
    .constantFrom(
      "m=video 9 UDP/TLS/RTP/SAVPF 96",
      "m=audio 9 UDP/TLS/RTP/SAVPF 111",
      "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
      "a=fingerprint:sha-256 ZZ",
      "a=fingerprint:" + "A".repeat(5000),
      "a=candidate:1 1 udp 1 evil.local 1 typ host",
      "a=candidate:1 1 udp 1 10.0.0.1 1 typ host",
      "a=candidate:1 1 udp 1 ::1 1 typ host",
      "a=candidate:1 1 udp 1 999.999.999.999 1 typ host",
      "a=candidate:" + " ".repeat(4000),
      "a=ice-ufrag:",
      "a=ice-pwd:",
      "x=unknown",
      "v=0",
    )
    .map((replacement) => () => replacement),
);

const mutatedOffer = fc
  .array(fc.tuple(fc.nat(VALID_LINES.length - 1), lineMutation), { minLength: 1, maxLength: 8 })
  .chain((mutations) =>
    fc.constantFrom("\r\n", "\n", "\r").map((eol) => {
      const lines = [...VALID_LINES];
      for (const [index, mutate] of mutations) lines[index] = mutate(lines[index]!);
      return lines.join(eol) + eol;
    }),
  );

describe("checkOffer under fuzzing", () => {
  it("random SDP-alphabet text: never crashes, bounded, and what passes has the required parts", () => {
    fc.assert(
      fc.property(sdpLike, (text) => {
        const outcome = bounded(() => checkOffer(text));
        if (outcome.ok) {
          expect(outcome.value.sdp.startsWith("v=0\r\n")).toBe(true);
          expect(outcome.value.sdp).toMatch(/^m=audio /m);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("arbitrary unicode strings: never crashes, bounded", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 4000 }), (text) => {
        bounded(() => checkOffer(text));
        bounded(() => checkOffer(`v=0\r\n${text}`));
      }),
      { numRuns: RUNS },
    );
  });

  it("a real offer with mutated lines: refused cleanly, or accepted with its guarantees intact", () => {
    let accepted = 0;
    let refused = 0;
    fc.assert(
      fc.property(mutatedOffer, (text) => {
        const outcome = bounded(() => checkOffer(text));
        if (!outcome.ok) {
          refused++;
          return;
        }
        accepted++;
        const out = outcome.value.sdp;
        // What is forwarded is clean: CRLF only, no control characters, one audio m-line,
        // credentials and a fingerprint, and no candidate the relay must not try.
        expect(out.endsWith("\r\n")).toBe(true);
        const lines = out.split("\r\n").slice(0, -1);
        for (const line of lines) {
          expect(line).toMatch(/^[a-z]=/);
          // eslint-disable-next-line no-control-regex
          expect(line).not.toMatch(/[\x00-\x08\x0a-\x1f\x7f]/);
          if (line.startsWith("a=candidate:")) expect(isForwardableCandidate(line)).toBe(true);
        }
        expect(lines.filter((l) => l.startsWith("m=audio")).length).toBe(1);
        expect(lines.some((l) => l.startsWith("a=fingerprint:"))).toBe(true);
        expect(outcome.value.candidates).toBeLessThanOrEqual(MAX_CANDIDATES);
      }),
      { numRuns: RUNS },
    );
    // The mutations reach both sides of the checker, or the property says little.
    expect(accepted).toBeGreaterThan(RUNS / 20);
    expect(refused).toBeGreaterThan(RUNS / 4);
  });

  it("worst cases at the size cap stay within the bound", () => {
    const filler = (line: string) => {
      const lines: string[] = [];
      let size = VALID.length;
      while (size + line.length + 2 <= MAX_OFFER_BYTES) {
        lines.push(line);
        size += line.length + 2;
      }
      return VALID.replace("s=-\r\n", `s=-\r\n${lines.map((l) => `${l}\r\n`).join("")}`);
    };
    const worst = [
      filler("a=x"),
      filler("a=" + "a".repeat(4000)),
      filler("a=fingerprint:sha-256 " + "AA:".repeat(1300) + "A"),
      filler("a=candidate:1 1 udp 1 203.0.113.1 1 typ host"),
      filler("a=candidate:" + "1 ".repeat(2000)),
      "v=0\r\n" + "a=".repeat(MAX_OFFER_BYTES / 2),
      "v=0\r\n" + "\r\n".repeat(MAX_OFFER_BYTES / 2),
      "v=0\n" + "m=audio\n".repeat(MAX_OFFER_BYTES / 8),
    ];
    for (const text of worst) bounded(() => checkOffer(text));
  });
});

describe("checkSdpFragment and the candidate filter under fuzzing", () => {
  it("random fragments: never crash, bounded; accepted ones keep only a= and m= lines", () => {
    fc.assert(
      fc.property(sdpLike, (text) => {
        const outcome = bounded(() => checkSdpFragment(text));
        if (outcome.ok) {
          for (const line of outcome.value.split("\r\n").slice(0, -1)) expect(line).toMatch(/^[am]=/);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("candidate lines with arbitrary addresses: only public IPs pass", () => {
    const address = fc.oneof(
      fc.ipV4(),
      fc.ipV6(),
      fc.domain(),
      fc.string({ maxLength: 60 }),
      fc.constantFrom("a.local", "A.LOCAL", "::ffff:10.0.0.1", "[::1]", "fe80::1", "0.0.0.0", "256.1.1.1"),
    );
    fc.assert(
      fc.property(address, fc.nat(65535), fc.string({ maxLength: 40 }), (addr, port, tail) => {
        const line = `a=candidate:1 1 udp 2122260223 ${addr} ${port} typ host ${tail}`;
        const started = performance.now();
        const forwardable = isForwardableCandidate(line);
        expect(performance.now() - started).toBeLessThan(PARSE_BOUND_MS);
        if (forwardable) {
          expect(addr.toLowerCase().endsWith(".local")).toBe(false);
          // Names are never forwarded: only literal addresses.
          expect(/^[\d.]+$/.test(addr) || addr.includes(":")).toBe(true);
          expect(addr).not.toMatch(/^(10\.|127\.|192\.168\.|0\.)/);
        }
      }),
      { numRuns: RUNS * 2 },
    );
  });
});
