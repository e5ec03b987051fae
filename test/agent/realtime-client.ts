// A Realtime protocol client over a real WebSocket, for tests: records every server event and
// waits for events with a timeout (no sleeps).
import WebSocket from "ws";
import { concat } from "../support/audio.ts";
import { EventLog } from "../support/loopback.ts";

export type ServerEventRecord = { type: string; [key: string]: unknown };

export class RealtimeTestClient {
  readonly #log = new EventLog<ServerEventRecord>();
  readonly events: ServerEventRecord[] = this.#log.events;
  readonly #socket: WebSocket;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.on("message", (data) => this.#log.push(JSON.parse(data.toString()) as ServerEventRecord));
    socket.on("close", () => this.#log.wake());
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

  /** Waits for the first event matching, counted from index `from`; rejects after `timeoutMs`. */
  waitFor(
    type: string,
    predicate: (e: ServerEventRecord) => boolean = () => true,
    options: { timeoutMs?: number; from?: number } = {},
  ): Promise<ServerEventRecord> {
    return this.#log.waitFor(type, predicate, options);
  }

  ofType(type: string): ServerEventRecord[] {
    return this.#log.ofType(type);
  }

  /** PCM of every audio delta of a response, concatenated. */
  responseAudio(responseId: string): Int16Array {
    const parts = this.events
      .filter((e) => e.type === "response.output_audio.delta" && e.response_id === responseId)
      .map((e) => {
        const bytes = Buffer.from(e.delta as string, "base64");
        return new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
      });
    return concat(parts);
  }

  close(): Promise<void> {
    if (this.#socket.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      this.#socket.once("close", () => resolve());
      this.#socket.close();
    });
  }
}
