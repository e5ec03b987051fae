// Server events larger than the client's data channel accepts (issue 13, item 1). werift throws
// from send() past the peer's a=max-message-size; unguarded, that throw escaped the upstream's
// message handler and one event ended every call on the relay. A real relay process bridges
// werift clients to the built-in agent through a proxy that can also inject events of its own;
// a second call on the same relay must keep its audio through all of it.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { AgentServer } from "../../../agent/agent-server.ts";
import {
  EventClient,
  callRelay,
  expectEchoOf,
  startRelayProc,
  type RelayProcess,
} from "../../faults/fixtures.ts";
import { TEST_SECRET } from "../../support/relay-api.ts";
import { closeAfterEach } from "../../support/relays.ts";

/** A pass-through WebSocket proxy to the agent that can also send events of its own to the relay. */
class InjectingUpstream {
  readonly #http: Server = createServer();
  readonly #wss = new WebSocketServer({ noServer: true });
  readonly #relaySide = new Set<WebSocket>();
  url = "";

  constructor(target: string) {
    this.#http.on("upgrade", (req, socket, head) => {
      this.#wss.handleUpgrade(req, socket, head, (relaySide) => {
        this.#relaySide.add(relaySide);
        const agent = new WebSocket(target + (req.url ?? ""));
        const pending: string[] = [];
        agent.on("open", () => pending.splice(0).forEach((m) => agent.send(m)));
        agent.on(
          "message",
          (data) => relaySide.readyState === WebSocket.OPEN && relaySide.send(String(data)),
        );
        agent.on("close", () => relaySide.terminate());
        agent.on("error", () => {});
        relaySide.on("message", (data) =>
          agent.readyState === WebSocket.OPEN ? agent.send(String(data)) : pending.push(String(data)),
        );
        relaySide.on("close", () => {
          this.#relaySide.delete(relaySide);
          agent.terminate();
        });
        relaySide.on("error", () => {});
      });
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.#http.listen(0, "127.0.0.1", resolve));
    this.url = `ws://127.0.0.1:${(this.#http.address() as AddressInfo).port}/v1/realtime?reply=echo`;
  }

  /** Sends `text` to every relay-side connection, as the model would. Returns how many. */
  inject(text: string): number {
    for (const socket of this.#relaySide) socket.send(text);
    return this.#relaySide.size;
  }

  async close(): Promise<void> {
    for (const socket of this.#relaySide) socket.terminate();
    this.#wss.close();
    this.#http.closeAllConnections();
    await new Promise<void>((resolve) => this.#http.close(() => resolve()));
  }
}

/** A werift client that tells the relay it accepts data channel messages of at most `limit` bytes. */
class LimitedClient extends EventClient {
  readonly limit: number;
  constructor(limit: number) {
    super();
    this.limit = limit;
  }
  override async offer(): Promise<string> {
    const sdp = await super.offer();
    expect(sdp).toMatch(/^a=max-message-size:\d+\r?$/m);
    return sdp.replace(/^a=max-message-size:\d+/m, `a=max-message-size:${this.limit}`);
  }
}

/** A pass-through server event of `bytes` bytes (an unknown type the relay forwards as is). */
function paddedEvent(type: string, bytes: number): string {
  const head = `{"type":"${type}","event_id":"event_pad","pad":"`;
  return head + "x".repeat(bytes - head.length - 2) + '"}';
}

let agent: AgentServer;
let upstream: InjectingUpstream;
let relay: RelayProcess;
let bystander: EventClient;
const track = closeAfterEach();

beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, reply: "echo" });
  upstream = new InjectingUpstream(agent.url.replace(/\/v1\/realtime.*$/, ""));
  await upstream.listen();
  relay = await startRelayProc({ id: "relay-test", secret: TEST_SECRET, inferenceUrl: upstream.url });
  // A call with the default limit that must keep its audio while the others misbehave.
  bystander = await callRelay(relay.url, new EventClient());
  await expectEchoOf(bystander, 440);
}, 60_000);
afterAll(async () => {
  await bystander?.close();
  await relay?.stop("SIGKILL");
  await upstream?.close();
  await agent?.close();
});

async function expectRelayAlive(): Promise<void> {
  expect((await relay.health()).status).toBe("ok");
  expect(relay.output()).not.toMatch(/uncaught|unhandled|max-message-size exceeded/i);
}

describe("server events larger than the client's max-message-size", () => {
  it("a 300 KB pass-through event from the model: not sent, the client told which and why, the relay and its other call live on", async () => {
    const client = await callRelay(relay.url, track(new EventClient()));
    const before = await relay.metric("earshot_relay_datachannel_unsent_events_total", {
      reason: "too_large",
    });
    const bytes = 300_000;
    // Both calls get it; werift's default limit (64 KiB) and Chrome's (256 KiB) are both below.
    expect(upstream.inject(paddedEvent("vendor.big_event", bytes))).toBe(2);
    const error = await client.waitEvent(
      "error",
      (e) => (e.error as { code: string }).code === "event_too_large",
    );
    expect(error.error).toMatchObject({
      type: "invalid_request_error",
      code: "event_too_large",
      param: null,
    });
    const message = (error.error as { message: string }).message;
    expect(message).toContain("vendor.big_event");
    expect(message).toContain(String(bytes));
    expect(message).toMatch(/max-message-size:65536/);
    expect(client.events.some((e) => e.type === "vendor.big_event")).toBe(false);
    await expectRelayAlive();
    expect(await relay.metric("earshot_relay_datachannel_unsent_events_total", { reason: "too_large" })).toBe(
      before + 2,
    );
    // Both calls still carry audio both ways.
    await expectEchoOf(client, 520);
    await expectEchoOf(bystander, 600);
  }, 60_000);

  it("at the limit the event is sent; one byte past it is refused", async () => {
    const client = await callRelay(relay.url, track(new LimitedClient(4096)));
    upstream.inject(paddedEvent("vendor.at_limit", 4096));
    await client.waitEvent("vendor.at_limit");
    upstream.inject(paddedEvent("vendor.past_limit", 4097));
    const error = await client.waitEvent("error");
    expect((error.error as { message: string }).message).toMatch(/vendor\.past_limit \(4097 bytes\)/);
    expect(client.events.some((e) => e.type === "vendor.past_limit")).toBe(false);
    await expectRelayAlive();
  }, 30_000);

  it("a client advertising a=max-message-size:16: response.create gets nothing down the channel, and nothing breaks", async () => {
    const client = track(new LimitedClient(16));
    expect((await client.call(relay.url)).status).toBe(201);
    await client.connected();
    await client.channelOpen();
    const before = await relay.metric("earshot_relay_datachannel_unsent_events_total", {
      reason: "too_large",
    });
    client.channel.send(JSON.stringify({ type: "response.create" }));
    // The agent answers with response.created, output items, done…: every one is over 16 bytes.
    await expect
      .poll(() => relay.metric("earshot_relay_datachannel_unsent_events_total", { reason: "too_large" }), {
        timeout: 10_000,
      })
      .toBeGreaterThan(before + 2);
    // Not even the error fits in 16 bytes, so the client hears nothing on the channel…
    expect(client.events).toEqual([]);
    await expectRelayAlive();
    // …but its audio still flows, and so does the other call's.
    await expectEchoOf(client, 480);
    await expectEchoOf(bystander, 660);
  }, 60_000);

  it("a client's 262,063-byte conversation.item.create comes back larger than 256 KiB: refused with an error, the call goes on", async () => {
    // Chrome's limit, as the browser test sees it for real (test/web/browser.test.ts).
    const client = await callRelay(relay.url, track(new LimitedClient(262_144)));
    const create = (text: string) =>
      JSON.stringify({
        type: "conversation.item.create",
        item: { type: "message", role: "user", content: [{ type: "input_text", text }] },
      });
    const padded = create("y".repeat(262_063 - create("").length));
    expect(Buffer.byteLength(padded)).toBe(262_063);
    client.channel.send(padded);
    const error = await client.waitEvent("error", () => true, 15_000);
    expect((error.error as { message: string }).message).toMatch(
      /conversation\.item\.(added|created|done) \(\d+ bytes\)/,
    );
    await expectRelayAlive();
    await expectEchoOf(client, 560);
  }, 60_000);
});
