// One sideband WebSocket on the relay (an app server attached to a call, through the edge). It
// never makes the call wait: sends are fire-and-forget, and a server that stops reading is closed
// once MAX_SIDEBAND_UNREAD_BYTES sit unread at the relay (then cut off if it does not read the
// close either). Binary frames are answered with an error; text goes to the call's bridge.
import type { WebSocket } from "ws";
import { errorEvent } from "../../protocol/realtime.ts";
import { MAX_SIDEBAND_UNREAD_BYTES, SIDEBAND_CLOSE } from "../../protocol/sideband.ts";
import type { SidebandHandle, SidebandPort } from "../bridge.ts";
import type { Logger } from "../log.ts";
import type { RelayMetrics } from "../metrics.ts";

/** How long a closed sideband may take to read its close frame before its socket is cut. */
const CLOSE_GRACE_MS = 10_000;

export class SidebandSocket implements SidebandPort {
  readonly keyId: string;
  readonly #ws: WebSocket;
  readonly #log: Logger;
  readonly #metrics: RelayMetrics;
  readonly #maxUnread: number;
  #handle: SidebandHandle | undefined;
  #closing = false;
  #finished = false;
  readonly #closeListeners = new Set<() => void>();

  constructor(
    ws: WebSocket,
    options: { keyId: string; log: Logger; metrics: RelayMetrics; maxUnreadBytes?: number },
  ) {
    this.#ws = ws;
    this.keyId = options.keyId;
    this.#log = options.log;
    this.#metrics = options.metrics;
    this.#maxUnread = options.maxUnreadBytes ?? MAX_SIDEBAND_UNREAD_BYTES;
    ws.on("message", (data, isBinary) => {
      if (this.#closing) return;
      if (isBinary) {
        this.#metrics.sidebandRejectedMessages.inc({ code: "binary_frame" });
        this.send(
          JSON.stringify(
            errorEvent({
              type: "invalid_request_error",
              code: "binary_frame",
              message: "The sideband takes Realtime events as text frames of JSON, not binary frames.",
              param: null,
            }),
          ),
        );
        return;
      }
      try {
        this.#handle?.onMessage(String(data));
      } catch (error) {
        // The bridge validates everything; a throw here is a bug, never the server's to see.
        this.#log.error({ err: error }, "sideband message handling failed");
      }
    });
    ws.on("error", (error) => {
      // ws reports protocol violations (a frame over maxPayload: 1009, bad UTF-8: 1007) here and
      // closes the socket itself.
      this.#log.warn({ err: error.message }, "sideband socket error");
    });
    ws.once("close", (code) => {
      this.#metrics.sidebandsClosed.inc({ code: String(code) });
      this.#finish();
    });
  }

  /** Connects it to its call's bridge. */
  attach(handle: SidebandHandle): void {
    this.#handle = handle;
  }

  /** Called once, when it closes or starts closing: it no longer counts against its call. */
  onClose(listener: () => void): void {
    this.#closeListeners.add(listener);
  }

  #finish(): void {
    this.#closing = true;
    if (this.#finished) return;
    this.#finished = true;
    this.#handle?.detached();
    for (const listener of this.#closeListeners) listener();
  }

  send(text: string): void {
    if (this.#closing || this.#ws.readyState !== this.#ws.OPEN) return;
    this.#ws.send(text);
    // bufferedAmount: what ws holds beyond what the kernel took. Checked after the send, so one
    // event larger than the cap still goes to a server that reads.
    if (this.#ws.bufferedAmount > this.#maxUnread) {
      this.#metrics.sidebandsTooSlow.inc();
      this.#log.warn(
        { unread_bytes: this.#ws.bufferedAmount, key_id: this.keyId },
        "sideband closed: its server is not reading its events",
      );
      this.close(
        SIDEBAND_CLOSE.tooSlow,
        `sideband_too_slow: more than ${this.#maxUnread} bytes of events unread`,
      );
    }
  }

  /** Closes with `code`; a socket that does not finish the close handshake is cut off. */
  close(code: number, reason: string): void {
    if (this.#closing) return;
    this.#finish();
    try {
      this.#ws.close(code, reason.slice(0, 120));
    } catch {
      this.#ws.terminate();
      return;
    }
    const cut = setTimeout(() => this.#ws.terminate(), CLOSE_GRACE_MS);
    cut.unref();
    this.#ws.once("close", () => clearTimeout(cut));
  }
}
