// The jitter buffer on its own: reordering across the 16-bit wrap, loss after `depth` packets.
import { describe, expect, it } from "vitest";
import { JitterBuffer } from "../../../relay/media/jitter-buffer.ts";

function collect(depth: number) {
  const out: (number | null)[] = [];
  const jb = new JitterBuffer(depth, (payload, next) =>
    out.push(payload ? payload[0]! : next ? -next[0]! : null),
  );
  return { jb, out, push: (seq: number) => jb.push(seq & 0xffff, Uint8Array.of(seq & 0xff)) };
}

describe("JitterBuffer", () => {
  it("restores order across the 16-bit wrap and declares a gap lost after `depth` later packets", () => {
    const { jb, out, push } = collect(3);
    for (const seq of [65533, 65535, 65534, 0, 2, 3, 4, 5]) push(seq);
    // 65534 came late but within depth; 1 never came: declared lost when 4 arrived, with 2 as FEC source.
    expect(out).toEqual([65533 & 0xff, 65534 & 0xff, 65535 & 0xff, 0, -2, 2, 3, 4, 5]);
    expect(jb.stats).toMatchObject({ lost: 1, reordered: 1, late: 0 });
    push(1); // too late now
    push(5); // already played: late as well
    expect(jb.stats).toMatchObject({ late: 2, duplicate: 0 });
    push(7); // held behind the gap at 6
    push(7);
    expect(jb.stats).toMatchObject({ duplicate: 1 });
    expect(jb.held).toBe(2);
  });

  it("spans at most RING packets: a gap of RING-1 is concealed, a gap of RING restarts", () => {
    const a = collect(3);
    a.push(100);
    a.push(100 + JitterBuffer.RING); // 63 missing in between
    // All but the last `depth - 1` are declared at once; those wait for later packets.
    expect(a.jb.stats).toMatchObject({ lost: JitterBuffer.RING - 1 - 2, resets: 0 });
    const b = collect(3);
    b.push(100);
    b.push(100 + JitterBuffer.RING + 1); // 64 missing
    expect(b.jb.stats).toMatchObject({ lost: 0, resets: 1 });
    expect(b.out).toEqual([100, (100 + JitterBuffer.RING + 1) & 0xff]);
  });
});
