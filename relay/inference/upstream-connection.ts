// The WebSocket to the inference backend (OpenAI Realtime or the built-in agent). Each attempt
// settles once (open, fail, or time out); a reconnect loop driven by an AbortSignal retries
// retryable failures with capped, jittered exponential backoff and gives up after a bounded
// number of attempts. Fatal failures (bad key, bad URL, policy close) are not retried.
// An open socket is pinged every `pingIntervalMs`; one that answers nothing (no pong, no event)
// for a whole interval has stalled (the peer hangs but keeps TCP open) and is dropped like a
// lost connection, so a stalled upstream is retried and then given up on, never waited on.
import { setTimeout as sleep } from "node:timers/promises";
import WebSocket from "ws";
import { MAX_UPSTREAM_EVENT_BYTES } from "../../protocol/realtime.ts";
import type { InferenceConfig } from "../config.ts";

export interface UpstreamFailure {
  retryable: boolean;
  /** Short, safe to show a client: no secrets, no stack. */
  message: string;
}

export interface UpstreamHandlers {
  /** The socket is open; `reconnected` after a drop (the model session is new). */
  onOpen(reconnected: boolean): void;
  onMessage(text: string): void;
  /** A binary frame: the Realtime protocol has none, so it is the upstream's error. */
  onBinaryMessage?(bytes: number): void;
  /** A live connection dropped; the loop will retry (or give up). */
  onDrop?(failure: UpstreamFailure): void;
  /** No more attempts: the call should end. Called at most once. */
  onGiveUp(failure: UpstreamFailure): void;
}

/** A connection that stayed up this long resets the retry budget. */
const STABLE_MS = 10_000;

class AttemptError extends Error {
  readonly failure: UpstreamFailure;
  constructor(failure: UpstreamFailure) {
    super(failure.message);
    this.failure = failure;
  }
}

function classifyStatus(status: number): UpstreamFailure {
  const retryable = status >= 500 || status === 429 || status === 408;
  return { retryable, message: `upstream refused the connection (HTTP ${status})` };
}

function classifyClose(code: number): UpstreamFailure {
  // 1008 policy, 1003/1007/1009 bad data, 4xxx application: the same request would fail again.
  // 1000/1001: the upstream ended the session (OpenAI's does at its 60-minute cap). A new one is
  // primed with the conversation (inference-bridge.ts), so the call goes on.
  if (code === 1000 || code === 1001)
    return { retryable: true, message: `upstream closed the session (${code})` };
  const fatal =
    code === 1008 || code === 1003 || code === 1007 || code === 1009 || (code >= 4000 && code < 5000);
  return { retryable: !fatal, message: `upstream connection closed (${code})` };
}

export class UpstreamConnection {
  readonly #config: InferenceConfig;
  readonly #handlers: UpstreamHandlers;
  readonly #abort = new AbortController();
  #socket: WebSocket | null = null;
  #gaveUp = false;
  #stopLiveness = () => {};
  /** Connection attempts made so far (tests and logs). */
  attempts = 0;

  constructor(config: InferenceConfig, handlers: UpstreamHandlers) {
    this.#config = config;
    this.#handlers = handlers;
    void this.#run(this.#abort.signal);
  }

  get open(): boolean {
    return this.#socket !== null && this.#socket.readyState === WebSocket.OPEN;
  }

  /** Sends a text event if open; returns false (the caller counts the drop) if not. */
  send(text: string): boolean {
    const socket = this.#socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(text);
    return true;
  }

  /** Safe to call twice. */
  close(): void {
    if (this.#abort.signal.aborted) return;
    this.#abort.abort();
    this.#stopLiveness();
    const socket = this.#socket;
    this.#socket = null;
    if (socket) {
      socket.removeAllListeners();
      socket.on("error", () => {});
      socket.close(1000);
      // A peer that never answers the close handshake must not keep the socket alive.
      setTimeout(() => socket.terminate(), 1000).unref();
    }
  }

  async #run(signal: AbortSignal): Promise<void> {
    let failures = 0;
    let connectedBefore = false;
    while (!signal.aborted) {
      let failure: UpstreamFailure;
      try {
        this.attempts++;
        let closed!: Promise<UpstreamFailure>;
        const reconnected = connectedBefore;
        // Wired synchronously on `open`: the upstream's first event (session.created) can arrive
        // in the same read as the upgrade, before any awaiting code would run.
        await this.#connectOnce(signal, (socket) => {
          this.#socket = socket;
          let stalled = false;
          closed = new Promise<UpstreamFailure>((resolve) => {
            socket.on("close", (code) =>
              resolve(
                stalled
                  ? {
                      retryable: true,
                      message: `upstream stalled (nothing for ${this.#config.pingIntervalMs} ms after a ping)`,
                    }
                  : classifyClose(code),
              ),
            );
            socket.on("error", () => {}); // `close` follows and carries the outcome
          });
          let alive = true;
          socket.on("pong", () => (alive = true));
          socket.on("message", (data, isBinary) => {
            alive = true;
            if (!isBinary) this.#handlers.onMessage(data.toString());
            else this.#handlers.onBinaryMessage?.(byteLength(data));
          });
          const liveness = setInterval(() => {
            if (socket.readyState !== WebSocket.OPEN) {
              clearInterval(liveness);
              return;
            }
            if (!alive) {
              stalled = true;
              clearInterval(liveness);
              socket.terminate();
              return;
            }
            alive = false;
            socket.ping();
          }, this.#config.pingIntervalMs);
          this.#stopLiveness = () => clearInterval(liveness);
          this.#handlers.onOpen(reconnected);
        });
        connectedBefore = true;
        const openedAt = performance.now();
        try {
          failure = await closed;
        } finally {
          this.#stopLiveness();
        }
        this.#socket = null;
        if (signal.aborted) return;
        if (performance.now() - openedAt > STABLE_MS) failures = 0;
        this.#handlers.onDrop?.(failure);
      } catch (error) {
        if (signal.aborted) return;
        failure =
          error instanceof AttemptError
            ? error.failure
            : { retryable: false, message: `cannot connect upstream: ${(error as Error).message}` };
      }
      if (!failure.retryable || failures >= this.#config.maxRetries) return this.#giveUp(failure);
      const backoff = Math.min(this.#config.retryMaxMs, this.#config.retryBaseMs * 2 ** failures);
      failures++;
      try {
        await sleep(backoff * (0.5 + Math.random() * 0.5), undefined, { signal });
      } catch {
        return; // aborted
      }
    }
  }

  #giveUp(failure: UpstreamFailure): void {
    if (this.#gaveUp) return;
    this.#gaveUp = true;
    this.#handlers.onGiveUp(failure);
  }

  /** One attempt: resolves with an open socket or rejects with an AttemptError, exactly once. */
  #connectOnce(signal: AbortSignal, onOpen: (socket: WebSocket) => void): Promise<WebSocket> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { ...this.#config.headers };
      if (this.#config.apiKey) headers.Authorization = `Bearer ${this.#config.apiKey}`;
      let socket: WebSocket;
      try {
        socket = new WebSocket(this.#config.url, {
          headers,
          maxPayload: MAX_UPSTREAM_EVENT_BYTES,
          // ws offers permessage-deflate by default, and an upstream that accepts it makes every
          // 40 ms append and every delta go through zlib: base64 PCM barely compresses, and an
          // append costs about four times the CPU with it (`npx node bench/ws-deflate.ts`:
          // 140-215 µs against 30-60, both ends), plus a zlib context each way held per call.
          perMessageDeflate: false,
        });
      } catch (error) {
        reject(
          new AttemptError({
            retryable: false,
            message: `invalid INFERENCE_URL: ${(error as Error).message}`,
          }),
        );
        return;
      }
      let settled = false;
      const settle = (error: UpstreamFailure | null) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        socket.removeAllListeners("open");
        socket.removeAllListeners("unexpected-response");
        if (error) {
          socket.removeAllListeners();
          socket.on("error", () => {});
          socket.terminate();
          reject(new AttemptError(error));
        } else {
          onOpen(socket);
          resolve(socket);
        }
      };
      const onAbort = () => settle({ retryable: false, message: "closed" });
      const timer = setTimeout(
        () =>
          settle({
            retryable: true,
            message: `upstream connect timed out after ${this.#config.connectTimeoutMs} ms`,
          }),
        this.#config.connectTimeoutMs,
      );
      signal.addEventListener("abort", onAbort, { once: true });
      socket.once("open", () => settle(null));
      socket.once("unexpected-response", (request, response) => {
        settle(classifyStatus(response.statusCode ?? 0));
        request.destroy();
      });
      socket.once("error", (error: NodeJS.ErrnoException) =>
        settle({ retryable: true, message: `upstream unreachable (${error.code ?? error.message})` }),
      );
    });
  }
}

function byteLength(data: WebSocket.RawData): number {
  return Array.isArray(data) ? data.reduce((sum, part) => sum + part.length, 0) : data.byteLength;
}
