// The relay's HTTP API against clients that hold connections, abandon requests or send broken
// paths, through a real relay process: a connection cap that slow clients cannot use to lock the
// edge out, header timeouts that act within a second of their deadline, aborted bodies that are
// not errors, and a bad percent-escape that is the client's error.
import { connect, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HTTP_LIMITS } from "../../../relay/edge/http-limits.ts";
import { waitFor, withTimeout } from "../../support/loopback.ts";
import { startRelayProcess, type RelayProcess } from "../../support/relays.ts";

const MAX_CONNECTIONS = 20;

let relay: RelayProcess;
let port: number;

beforeAll(async () => {
  relay = await startRelayProcess({
    env: {
      RELAY_HTTP_MAX_CONNECTIONS: String(MAX_CONNECTIONS),
      RELAY_VAD: "off",
      LOG_LEVEL: "debug",
    },
  });
  port = Number(new URL(relay.url).port);
});
afterAll(async () => {
  await relay.stop("SIGKILL");
});

interface HeldConnection {
  socket: Socket;
  closed: boolean;
  closedAt: number | undefined;
  received: string;
}

/** A TCP connection that starts a request and sends `first`; resolves once it is connected. */
function hold(first: string): Promise<HeldConnection> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const held: HeldConnection = { socket, closed: false, closedAt: undefined, received: "" };
    socket.on("data", (chunk) => (held.received += String(chunk)));
    socket.on("error", () => {});
    socket.on("close", () => {
      held.closed = true;
      held.closedAt = performance.now();
    });
    socket.once("connect", () => {
      socket.write(first);
      resolve(held);
    });
    socket.once("error", reject);
  });
}

/** Lines the relay logged at pino level `level` (50 = error). */
function linesAt(level: number): string[] {
  return relay
    .output()
    .split("\n")
    .filter((line) => line.includes(`"level":${level},`));
}

describe("slow connections", () => {
  it(`past RELAY_HTTP_MAX_CONNECTIONS=${MAX_CONNECTIONS} are shed at once, and /healthz still answers`, async () => {
    const extra = 10;
    const held: HeldConnection[] = [];
    try {
      for (let i = 0; i < MAX_CONNECTIONS + extra; i++)
        held.push(await hold("GET /healthz HTTP/1.1\r\nHost: relay\r\n"));
      // The oldest slow ones make room well before any header timeout.
      await waitFor(
        () => held.filter((h) => h.closed).length >= extra,
        HTTP_LIMITS.headersTimeout / 2,
        `${extra} connections shed`,
      );
      const asked = performance.now();
      const health = await fetch(`${relay.url}/healthz`, { signal: AbortSignal.timeout(2000) });
      expect(health.status).toBe(200);
      expect(performance.now() - asked).toBeLessThan(1000);
      // Its connection took the place of one more slow one (whose close may arrive just after).
      await waitFor(
        () => held.filter((h) => !h.closed).length <= MAX_CONNECTIONS - 1,
        1000,
        "a slow connection to make room for /healthz",
      );
      // Shed connections got no answer: they never finished a request.
      expect(held.filter((h) => h.closed).every((h) => h.received === "")).toBe(true);
    } finally {
      for (const h of held) h.socket.destroy();
    }
  });

  it(`sending headers a line a second are closed ${HTTP_LIMITS.headersTimeout} ms after they connect, give or take a second`, async () => {
    const opened = performance.now();
    const slow = await hold("GET /healthz HTTP/1.1\r\nHost: relay\r\n");
    const drip = setInterval(
      () => slow.socket.write(`X-Drip-${Math.random().toString(36).slice(2)}: 1\r\n`),
      500,
    );
    try {
      await waitFor(() => slow.closed, HTTP_LIMITS.headersTimeout + 2500, "the slow connection closed");
    } finally {
      clearInterval(drip);
      slow.socket.destroy();
    }
    const heldMs = slow.closedAt! - opened;
    expect(heldMs).toBeGreaterThanOrEqual(HTTP_LIMITS.headersTimeout - 100);
    expect(heldMs).toBeLessThan(HTTP_LIMITS.headersTimeout + HTTP_LIMITS.connectionsCheckingInterval + 1000);
    expect(slow.received).toMatch(/^HTTP\/1\.1 408 /);
  });
});

describe("aborted request bodies", () => {
  it("50 POST /calls bodies cut off halfway log no ERROR line and no stack", async () => {
    const errorsBefore = linesAt(50).length;
    const abortsBefore = relay.output().split("request aborted by the client").length;
    const body = JSON.stringify({ call_id: "rtc_x", offer_sdp: "v=0\r\n".repeat(200), session: {} });
    // Ten at a time, well under the connection cap.
    for (let batch = 0; batch < 5; batch++) {
      await Promise.all(
        Array.from({ length: 10 }, async () => {
          const held = await hold(
            `POST /calls HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n` +
              `Content-Length: ${body.length}\r\n\r\n${body.slice(0, body.length / 2)}`,
          );
          // Let the relay start reading the body before the client goes away.
          await new Promise((resolve) => setTimeout(resolve, 50));
          held.socket.destroy();
          await waitFor(() => held.closed, 1000, "the aborted connection closed");
        }),
      );
    }
    // Each abort reaches the relay as one debug line (or, before the fix, one ERROR line).
    await withTimeout(
      (async () => {
        while (
          relay.output().split("request aborted by the client").length -
            abortsBefore +
            (linesAt(50).length - errorsBefore) <
          50
        )
          await new Promise((resolve) => setTimeout(resolve, 20));
      })(),
      10_000,
      "the relay to see 50 aborted bodies",
    );
    const errors = linesAt(50).slice(errorsBefore);
    expect(errors.length, errors[0]).toBe(0);
    expect(relay.output()).not.toMatch(/"stack":/);
    expect((await fetch(`${relay.url}/healthz`)).status).toBe(200);
  });
});

describe("a bad percent-escape in /calls/:id", () => {
  for (const method of ["PATCH", "DELETE"]) {
    it(`${method} /calls/%E0%A4%A is 400 invalid_call_id in the OpenAI error envelope`, async () => {
      const response = await fetch(`${relay.url}/calls/%E0%A4%A`, {
        method,
        headers: { "content-type": "application/trickle-ice-sdpfrag" },
        body: "a=ice-ufrag:x\r\n",
      });
      expect(response.status).toBe(400);
      expect(await response.json()).toEqual({
        error: {
          type: "invalid_request_error",
          code: "invalid_call_id",
          message: "The call id is malformed.",
          param: "call_id",
        },
      });
    });
  }
});
