// A Realtime protocol client over a real WebSocket, for tests: records every server event and
// waits for events with a timeout (no sleeps).
import WebSocket from "ws";

export type ServerEventRecord = { type: string; [key: string]: unknown };

export class RealtimeTestClient {
  readonly events: ServerEventRecord[] = [];
  readonly #socket: WebSocket;
  #waiters = new Set<() => void>();

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.on("message", (data) => {
      this.events.push(JSON.parse(data.toString()) as ServerEventRecord);
      for (const wake of this.#waiters) wake();
    });
    socket.on("close", () => {
      for (const wake of this.#waiters) wake();
    });
  }

  static async connect(url: string): Promise<RealtimeTestClient> {
    const socket = new WebSocket(url);
    // Listen before `open`: the server's first event can arrive in the same read as the upgrade.
    const client = new RealtimeTestClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once("open", () => resolve());
      socket.once("error", reject);
    });
    return client;
  }

  get closed(): boolean {
    return this.#socket.readyState !== WebSocket.OPEN;
  }

  send(event: object | string): void {
    this.#socket.send(typeof event === "string" ? event : JSON.stringify(event));
  }

  appendAudio(pcm: Int16Array, chunkSamples = 960): void {
    for (let i = 0; i < pcm.length; i += chunkSamples) {
      const chunk = pcm.subarray(i, i + chunkSamples);
      this.send({
        type: "input_audio_buffer.append",
        audio: Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("base64"),
      });
    }
  }

  /** Waits for the `nth` (1-based, counted from `from`) event matching; rejects after `timeoutMs`. */
  waitFor(
    type: string,
    predicate: (e: ServerEventRecord) => boolean = () => true,
    { timeoutMs = 10_000, from = 0 }: { timeoutMs?: number; from?: number } = {},
  ): Promise<ServerEventRecord> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.events.slice(from).find((e) => e.type === type && predicate(e));
        if (found) {
          cleanup();
          resolve(found);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${type}; got ${this.events.map((e) => e.type).join(", ")}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }

  ofType(type: string): ServerEventRecord[] {
    return this.events.filter((e) => e.type === type);
  }

  /** PCM of every audio delta of a response, concatenated. */
  responseAudio(responseId: string): Int16Array {
    const parts = this.events
      .filter((e) => e.type === "response.output_audio.delta" && e.response_id === responseId)
      .map((e) => {
        const bytes = Buffer.from(e.delta as string, "base64");
        return new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
      });
    const out = new Int16Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  close(): Promise<void> {
    if (this.#socket.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      this.#socket.once("close", () => resolve());
      this.#socket.close();
    });
  }
}
