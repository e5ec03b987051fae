// A userland HTTP proxy between a relay and the edge that adds a round trip to every request
// (half on the way in, half on the way back: this kernel has no netem), can refuse connections
// for a while (an edge outage as the relay sees it), and records when the edge's final answer to
// each call event (accepted, or refused for good) got back to the relay. It reads both the per-call endpoint and the batch endpoint,
// so it measures any version of the relay's EdgeClient the same way.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export interface Delivery {
  call_id: string;
  type: string;
  /** When the relay made the event (its `at`, epoch ms). */
  at: number;
  /** When the edge's answer reached the relay again (epoch ms). */
  deliveredAt: number;
  /** The edge's answer for this event: 204, or a refusal (e.g. 409 for a call it already ended). */
  status: number;
}

export interface DelayProxy {
  url: string;
  port: number;
  /** Every event the edge answered for good (not 429 or 5xx), in the order the answers came back. */
  deliveries: Delivery[];
  /** Requests forwarded (heartbeats and events). */
  requests: number;
  /** Refuse connections (and drop open ones) until accept(). */
  refuse(): Promise<void>;
  accept(): Promise<void>;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const BATCH_PATH = /^\/internal\/relays\/[^/]+\/events$/;
const CALL_EVENT_PATH = /^\/internal\/calls\/[^/]+\/events$/;

type Event = { call_id: string; type: string; at: number };

const final = (status: number) => status < 500 && status !== 429;

function answered(
  path: string,
  requestBody: string,
  status: number,
  responseBody: string,
): [Event, number][] {
  try {
    if (CALL_EVENT_PATH.test(path)) return final(status) ? [[JSON.parse(requestBody) as Event, status]] : [];
    if (BATCH_PATH.test(path) && status === 200) {
      const { events } = JSON.parse(requestBody) as { events: Event[] };
      const { results } = JSON.parse(responseBody) as { results: { status: number }[] };
      return events.flatMap((e, i): [Event, number][] =>
        final(results[i]!.status) ? [[e, results[i]!.status]] : [],
      );
    }
  } catch {
    // not an event request we can read
  }
  return [];
}

export async function startDelayProxy(options: {
  target: string;
  /** Added to every request's round trip. */
  roundTripMs: number;
  port?: number;
}): Promise<DelayProxy> {
  const half = options.roundTripMs / 2;
  const sockets = new Set<Socket>();
  const deliveries: Delivery[] = [];
  let requests = 0;

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString();
    await sleep(half);
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      if (typeof value === "string" && !["host", "connection", "content-length"].includes(name))
        headers.set(name, value);
    }
    const upstream = await fetch(new URL(req.url!, options.target), {
      method: req.method!,
      headers,
      ...(req.method === "GET" || req.method === "HEAD" ? {} : { body }),
    });
    const answer = await upstream.text();
    requests++;
    await sleep(half);
    if (res.destroyed) return;
    const now = Date.now();
    for (const [e, status] of answered(
      new URL(req.url!, "http://x").pathname,
      body,
      upstream.status,
      answer,
    )) {
      deliveries.push({ call_id: e.call_id, type: e.type, at: e.at, deliveredAt: now, status });
    }
    res.writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "text/plain" });
    res.end(answer);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
  await listen(options.port ?? 0);
  const port = (server.address() as AddressInfo).port;
  const stop = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    deliveries,
    get requests() {
      return requests;
    },
    refuse: () => (server.listening ? stop() : Promise.resolve()),
    accept: () => (server.listening ? Promise.resolve() : listen(port)),
    close: () => (server.listening ? stop() : Promise.resolve()),
  };
}
