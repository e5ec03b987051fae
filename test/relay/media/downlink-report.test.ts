// The downlink's report of each frame it sends: the one source of "what went out" for the echo
// reference and the ledger (no RTP timestamp decoded back into time).
import { describe, expect, it } from "vitest";
import { Downlink, type SentFrame } from "../../../relay/media/downlink.ts";

function recordingDownlink() {
  const reports: SentFrame[] = [];
  const ledgerAtReport: number[] = [];
  const downlink: Downlink = new Downlink({
    encoder: { timestampStep: 960, encode: () => 1 },
    send: () => {},
    observer: {
      onPlayoutStarted() {},
      onPlayoutStopped() {},
      onFrameSent: (frame) => {
        reports.push({ ...frame });
        ledgerAtReport.push(downlink.ledger.sentMs(frame.itemId));
      },
    },
  });
  return { downlink, reports, ledgerAtReport };
}

describe("Downlink frame reports", () => {
  it("reports each frame's item, content part, samples and media time; silent ticks keep the clock running", () => {
    const { downlink, reports } = recordingDownlink();
    downlink.push("a", 0, new Int16Array(960)); // two frames
    for (let i = 10; i < 13; i++) downlink.tick(i); // the third tick has nothing to send
    downlink.push("b", 1, new Int16Array(600)); // one frame and a 120-sample tail
    downlink.push("c", 0, new Int16Array(480)); // ends b, so its tail is padded at once
    for (let i = 13; i < 16; i++) downlink.tick(i);
    expect(reports).toEqual([
      { itemId: "a", contentIndex: 0, samples: 480, mediaTimeMs: 0 },
      { itemId: "a", contentIndex: 0, samples: 480, mediaTimeMs: 20 },
      { itemId: "b", contentIndex: 1, samples: 480, mediaTimeMs: 60 },
      { itemId: "b", contentIndex: 1, samples: 120, mediaTimeMs: 80 },
      { itemId: "c", contentIndex: 0, samples: 480, mediaTimeMs: 100 },
    ]);
  });

  it("reports a frame before the ledger counts it, and the ledger then counts exactly the report", () => {
    const { downlink, reports, ledgerAtReport } = recordingDownlink();
    downlink.push("a", 0, new Int16Array(1440));
    for (let i = 0; i < 3; i++) downlink.tick(i);
    expect(ledgerAtReport).toEqual([0, 20, 40]);
    expect(downlink.ledger.sentMs("a")).toBe(reports.reduce((ms, r) => ms + (r.samples / 480) * 20, 0));
  });

  it("reports nothing for a flushed queue", () => {
    const { downlink, reports } = recordingDownlink();
    downlink.push("a", 0, new Int16Array(4800));
    downlink.tick(0);
    downlink.flush();
    for (let i = 1; i < 5; i++) downlink.tick(i);
    expect(reports).toHaveLength(1);
  });
});
