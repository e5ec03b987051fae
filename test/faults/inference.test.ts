// The inference WebSocket fails mid-call (issue 7): it drops, or it stalls (the upstream keeps
// the socket open and answers nothing). A real relay process bridges a werift client's call
// to the built-in agent through a proxy the test can cut or freeze. The relay must retry a
// bounded number of times, then send an `error` event on oai-events and end the call, leaving
// no PeerConnection, no UDP socket and no call behind.
import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { AgentServer } from "../../agent/agent-server.ts";
import { EventClient, callRelay, expectEchoOf, startRelayProc, type RelayProcess } from "./fixtures.ts";
import { waitFor } from "../support/loopback.ts";
import { TEST_SECRET } from "../support/relay-api.ts";

type Mode = "pass" | "refuse" | "stall";

/** A WebSocket proxy in front of the agent that can drop, refuse or freeze its connections. */
class UpstreamProxy {
  mode: Mode = "pass";
  /** Upgrade requests seen, by the mode they met. */
  readonly attempts: Mode[] = [];
  readonly #http: Server;
  readonly #wss = new WebSocketServer({ noServer: true });
  readonly #links = new Set<{ client: WebSocket; socket: Socket; upstream: WebSocket | undefined }>();
  url = "";

  constructor(target: string) {
    this.#http = createServer();
    this.#http.on("upgrade", (req, socket: Socket, head) => {
      this.attempts.push(this.mode);
      if (this.mode === "refuse") {
        socket.end("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        return;
      }
      this.#wss.handleUpgrade(req, socket, head, (client) => {
        const link = { client, socket, upstream: undefined as WebSocket | undefined };
        this.#links.add(link);
        client.on("close", () => {
          this.#links.delete(link);
          link.upstream?.terminate();
        });
        if (this.mode === "stall") {
          socket.pause(); // the upgrade succeeded; from now on nothing is read or answered
          return;
        }
        const upstream = new WebSocket(target + (req.url ?? ""));
        link.upstream = upstream;
        const pending: string[] = [];
        upstream.on("open", () => pending.splice(0).forEach((m) => upstream.send(m)));
        upstream.on("message", (data) => client.readyState === WebSocket.OPEN && client.send(String(data)));
        upstream.on("close", () => client.terminate());
        upstream.on("error", () => {});
        client.on("message", (data) =>
          upstream.readyState === WebSocket.OPEN ? upstream.send(String(data)) : pending.push(String(data)),
        );
        client.on("error", () => {});
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.#http.listen(0, "127.0.0.1", resolve));
    this.url = `ws://127.0.0.1:${(this.#http.address() as AddressInfo).port}/v1/realtime?reply=echo`;
    return this.url;
  }

  /** Cuts every live connection (TCP reset). */
  dropAll(): void {
    for (const link of this.#links) link.client.terminate();
  }

  /** Freezes every live connection: open sockets that never answer again, not even pings. */
  stallAll(): void {
    for (const link of this.#links) {
      link.socket.pause();
      link.upstream?.terminate();
    }
  }

  async close(): Promise<void> {
    for (const link of this.#links) link.socket.destroy();
    this.#wss.close();
    this.#http.closeAllConnections();
    await new Promise<void>((resolve) => this.#http.close(() => resolve()));
  }
}

const MAX_RETRIES = 2;
const PING_MS = 500;

let agent: AgentServer;
let proxy: UpstreamProxy;
let relay: RelayProcess;
const clients: EventClient[] = [];

beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, reply: "echo" });
  proxy = new UpstreamProxy(agent.url.replace(/\/v1\/realtime.*$/, ""));
  await proxy.listen();
  relay = await startRelayProc({
    id: "relay-test",
    secret: TEST_SECRET,
    inferenceUrl: proxy.url,
    env: {
      INFERENCE_MAX_RETRIES: String(MAX_RETRIES),
      INFERENCE_RETRY_BASE_MS: "100",
      INFERENCE_CONNECT_TIMEOUT_MS: "1000",
      INFERENCE_PING_INTERVAL_MS: String(PING_MS),
    },
  });
}, 60_000);
afterAll(async () => {
  await relay?.stop("SIGKILL");
  await proxy?.close();
  await agent?.close();
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  proxy.mode = "pass";
});

async function liveCall(): Promise<EventClient> {
  const client = new EventClient();
  clients.push(client);
  return callRelay(relay.url, client);
}

/** Waits for the relay to hold no call and no more UDP sockets than before the call. */
async function expectNothingLeft(udpBefore: number): Promise<void> {
  await waitFor(() => relay.udpSockets() <= udpBefore, 5000, "the call's UDP sockets closed");
  expect((await relay.health()).active_calls).toBe(0);
  expect(await relay.metric("earshot_relay_active_calls")).toBe(0);
}

describe("the inference WebSocket fails mid-call", () => {
  it("drops and cannot come back: bounded retries, an error event, a clean end, nothing left", async () => {
    const udpBefore = relay.udpSockets();
    const client = await liveCall();
    await expectEchoOf(client, 440);
    expect(relay.udpSockets()).toBeGreaterThan(udpBefore);
    const endedBefore = await relay.metric("earshot_relay_calls_ended_total", { reason: "inference_lost" });
    const attemptsBefore = proxy.attempts.length;

    proxy.mode = "refuse";
    const droppedAt = performance.now();
    proxy.dropAll();
    const error = await client.waitEvent("error", () => true, 15_000);
    const tookMs = performance.now() - droppedAt;
    expect(error.error).toMatchObject({ type: "server_error", code: "inference_lost" });
    expect(String((error.error as { message: string }).message)).toMatch(/503/);
    // Exactly the configured number of retries, each refused.
    expect(proxy.attempts.slice(attemptsBefore)).toEqual(Array(MAX_RETRIES).fill("refuse"));
    await expectNothingLeft(udpBefore);
    expect(await relay.metric("earshot_relay_calls_ended_total", { reason: "inference_lost" })).toBe(
      endedBefore + 1,
    );
    // Backoff of 100 ms doubling, jittered: well under a few seconds in all.
    expect(tookMs).toBeLessThan(5000);
    console.log(`inference drop → error event and call ended: ${Math.round(tookMs)} ms`);
  }, 60_000);

  it("drops once and comes back: the call reconnects to a new session and audio flows again", async () => {
    const client = await liveCall();
    const attemptsBefore = proxy.attempts.length;
    proxy.dropAll();
    await waitFor(() => proxy.attempts.length > attemptsBefore, 5000, "a reconnect");
    // The relay re-sends the session, so the new upstream session is configured before audio;
    // the client is told once, by the relay's own event (no second session.created).
    await client.waitEvent("earshot.inference.reconnected", () => true, 5000);
    expect(client.events.filter((e) => e.type === "session.created")).toHaveLength(1);
    expect(client.events.filter((e) => e.type === "session.updated")).toEqual([]);
    await expectEchoOf(client, 620);
    expect((await relay.health()).active_calls).toBe(1);
    expect(client.errors()).toEqual([]);
  }, 60_000);

  it("stalls (open socket, no answers, no pongs): noticed by the ping, retried, then an error event and a clean end", async () => {
    const udpBefore = relay.udpSockets();
    const client = await liveCall();
    await expectEchoOf(client, 500);
    const attemptsBefore = proxy.attempts.length;

    proxy.mode = "stall";
    const stalledAt = performance.now();
    proxy.stallAll();
    const error = await client.waitEvent("error", () => true, 20_000);
    const tookMs = performance.now() - stalledAt;
    expect(error.error).toMatchObject({ type: "server_error", code: "inference_lost" });
    expect(String((error.error as { message: string }).message)).toMatch(/stalled/);
    expect(proxy.attempts.slice(attemptsBefore)).toEqual(Array(MAX_RETRIES).fill("stall"));
    await expectNothingLeft(udpBefore);
    // Each stall is noticed within two ping intervals; three of them plus backoff.
    expect(tookMs).toBeLessThan((MAX_RETRIES + 1) * 2 * PING_MS + 3000);
    console.log(`inference stall → error event and call ended: ${Math.round(tookMs)} ms`);
  }, 60_000);

  it("printed nothing about unhandled rejections or uncaught exceptions", () => {
    expect(relay.output()).not.toMatch(/unhandled rejection|uncaughtException|UnhandledPromiseRejection/i);
  });
});
