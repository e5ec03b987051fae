// The ICE-TCP front's limits, each at the limit and just past it, on a real listener with real
// TCP connections on loopback: the first frame's size, the time it may take, and how many
// connections may wait for theirs; junk and forged ufrags are closed. A connection the front
// drops is closed with nothing written to it and nothing kept.
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TcpFront, type TcpFrontLimits } from "../../../relay/transport/tcp-front.ts";
import { UfragMint, ufragKey } from "../../../relay/transport/ufrag.ts";
import { waitFor } from "../../support/loopback.ts";
import { TEST_SECRET } from "../../support/relay-api.ts";
import { request } from "../../support/stun-forgery.ts";

// A deadline long enough that a loaded machine's event loop stalls do not decide the timing test.
const LIMITS: TcpFrontLimits = { maxPending: 4, firstFrameMs: 1000, maxFirstFrameBytes: 300 };
const mint = new UfragMint(ufragKey(TEST_SECRET), 3);

const framed = (packet: Buffer) =>
  Buffer.concat([Buffer.from([packet.length >> 8, packet.length & 255]), packet]);

/** A Binding request for a minted ufrag, padded with a SOFTWARE-like attribute to `size` bytes. */
function bindingOfSize(size: number, ufrag = mint.mint()): Buffer {
  const bare = request({ username: `${ufrag}:x` });
  const padding = size - bare.length - 4;
  if (padding < 0 || padding % 4 !== 0) throw new Error(`cannot pad ${bare.length} to ${size}`);
  // An unknown comprehension-optional attribute (0x8022 SOFTWARE) after the header: the walk skips it.
  const attribute = Buffer.alloc(4 + padding);
  attribute.writeUInt16BE(0x8022, 0);
  attribute.writeUInt16BE(padding, 2);
  const out = Buffer.concat([bare.subarray(0, 20), attribute, bare.subarray(20)]);
  out.writeUInt16BE(out.length - 20, 2);
  return out;
}

interface Routed {
  socket: net.Socket;
  received: Buffer;
  ufrag: string;
  owner: number;
}

describe("TcpFront", () => {
  let front: TcpFront;
  const routed: Routed[] = [];
  const clients: net.Socket[] = [];

  beforeAll(async () => {
    front = await TcpFront.listen("127.0.0.1", 0, {
      owner: (ufrag) => mint.owner(ufrag),
      route: (socket, received, ufrag, owner) => {
        routed.push({ socket, received, ufrag, owner });
        return true;
      },
      limits: LIMITS,
    });
  });
  afterAll(async () => {
    for (const c of clients) c.destroy();
    for (const r of routed) r.socket.destroy();
    await front.close();
  });

  async function connect(): Promise<{ socket: net.Socket; closed: Promise<void>; received: Buffer[] }> {
    const socket = net.connect(front.port, "127.0.0.1");
    clients.push(socket);
    socket.on("error", () => {});
    const received: Buffer[] = [];
    socket.on("data", (d) => received.push(d));
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    await new Promise<void>((resolve) => socket.once("connect", resolve));
    return { socket, closed, received };
  }

  it("routes a first frame of exactly the largest size, in pieces, with the bytes after it", async () => {
    const ufrag = mint.mint();
    const frame = framed(bindingOfSize(LIMITS.maxFirstFrameBytes, ufrag));
    const next = framed(Buffer.from([0x16, 0xfe, 0xfd, 1, 2, 3]));
    const before = routed.length;
    const { socket } = await connect();
    // The length field split across writes, then the rest with the start of the next frame.
    socket.write(frame.subarray(0, 1));
    await new Promise((r) => setTimeout(r, 20));
    socket.write(Buffer.concat([frame.subarray(1), next]));
    await waitFor(() => routed.length > before, 2000, "routed");
    const r = routed.at(-1)!;
    expect([r.ufrag, r.owner]).toEqual([ufrag, 3]);
    expect(r.received).toEqual(Buffer.concat([frame, next]));
    expect(front.stats.pending).toBe(0);
  });

  it("closes a connection whose first frame is one byte longer than the limit", async () => {
    const dropped = front.stats.dropped.oversized;
    const { socket, closed, received } = await connect();
    // The length field alone decides: the frame need not even arrive.
    socket.write(Buffer.from([(LIMITS.maxFirstFrameBytes + 1) >> 8, (LIMITS.maxFirstFrameBytes + 1) & 255]));
    await closed;
    expect(received).toEqual([]);
    expect(front.stats.dropped.oversized).toBe(dropped + 1);
  });

  it("routes a first frame that completes inside the deadline, and closes one that does not", async () => {
    const before = { routed: routed.length, timedOut: front.stats.dropped.timed_out };
    const frame = framed(bindingOfSize(100));
    const inTime = await connect();
    const late = await connect();
    inTime.socket.write(frame.subarray(0, 10));
    late.socket.write(frame.subarray(0, 10));
    await new Promise((r) => setTimeout(r, LIMITS.firstFrameMs * 0.3));
    inTime.socket.write(frame.subarray(10));
    await late.closed;
    expect(late.received).toEqual([]);
    expect(front.stats.dropped.timed_out).toBe(before.timedOut + 1);
    expect(routed.length).toBe(before.routed + 1);
  });

  it(`holds ${LIMITS.maxPending} connections waiting for a first frame, and closes the next`, async () => {
    const busy = front.stats.dropped.busy;
    const waiting = await Promise.all(Array.from({ length: LIMITS.maxPending }, connect));
    await waitFor(() => front.stats.pending === LIMITS.maxPending, 2000, "all pending");
    const past = await connect();
    await past.closed;
    expect(front.stats.dropped.busy).toBe(busy + 1);
    // The waiting ones are still open; once they go, the count is back to 0 (no leak).
    expect(waiting.every((w) => !w.socket.destroyed)).toBe(true);
    for (const w of waiting) w.socket.destroy();
    await Promise.all(waiting.map((w) => w.closed));
    await waitFor(() => front.stats.pending === 0, 2000, "pending drained");
  });

  it("closes junk and forged ufrags, writing nothing and routing nothing", async () => {
    const before = { ...front.stats.dropped };
    const routedBefore = routed.length;
    const live = mint.mint();
    const otherKey = new UfragMint(ufragKey("another deployment's secret"), 3).mint();
    // TLS and HTTP read as a first frame of 0x1603 and 0x4745 bytes: past the size limit.
    const cases: [string, Buffer, "not_stun" | "forged" | "oversized"][] = [
      ["TLS ClientHello", Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0]), "oversized"],
      ["an HTTP request", Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "oversized"],
      [
        "a DTLS record first",
        framed(Buffer.from([0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0])),
        "not_stun",
      ],
      ["a Binding request without USERNAME", framed(request({})), "not_stun"],
      [
        "a live ufrag with its tag changed",
        framed(request({ username: `${live.slice(0, -1)}${live.endsWith("A") ? "B" : "A"}:x` })),
        "forged",
      ],
      ["a ufrag tagged under another key", framed(request({ username: `${otherKey}:x` })), "forged"],
      ["a short ufrag", framed(request({ username: "abcd:x" })), "forged"],
    ];
    for (const [name, bytes] of cases) {
      const c = await connect();
      c.socket.write(bytes);
      await c.closed;
      expect(c.received, name).toEqual([]);
    }
    const after = front.stats.dropped;
    expect(after.not_stun - before.not_stun).toBe(cases.filter((c) => c[2] === "not_stun").length);
    expect(after.forged - before.forged).toBe(cases.filter((c) => c[2] === "forged").length);
    expect(after.oversized - before.oversized).toBe(cases.filter((c) => c[2] === "oversized").length);
    expect(routed.length).toBe(routedBefore);
    expect(front.stats.pending).toBe(0);
  });
});
