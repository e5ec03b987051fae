// The downlink's Opus encoder when the client reports loss. On a clean link the relay sends
// restricted-low-delay Opus (CELT only: a third of VOIP mode's CPU, 5 ms less look-ahead), which
// cannot carry in-band FEC. Once the client's RTCP receiver reports show loss, frames go through
// a VOIP-mode encoder with in-band FEC (SILK LBRR: each packet carries a coarse copy of the one
// before, RFC 6716 §2.1.7, which the client's decoder uses when that one is lost), told the loss
// to expect so it spends the right share of bits on it. After CLEAN_MS without reported loss
// the call goes back to CELT. A call starts with FEC on (a greeting on a lossy link is protected
// before anyone has measured the loss) until FIRST_CLEAN_REPORTS reports in a row show none:
// one report covers about 50 packets, and at 5 % loss one in 13 of those shows no loss at all. The receiver's Opus decoder follows the mode from
// each packet's TOC.
import { RTP_TIMESTAMP_STEP } from "./audio-format.ts";
import type { DownlinkEncoder } from "./codec.ts";
import { OPUS_SILENCE_FRAME, OpusEncoder } from "./opus-codec.ts";

/** Reported loss (fraction) from which the call switches to FEC: 1 %, above RTCP's 1/256 noise. */
const FEC_FROM_FRACTION = 0.01;
/** Loss-free reports in a row that end the FEC a call starts with (about 3 s). */
const FIRST_CLEAN_REPORTS = 3;
/** What FEC plans for before the first report. */
const INITIAL_EXPECTED_LOSS = 5;
/** Loss-free time before the call goes back to CELT only. */
const CLEAN_MS = 10_000;
/** libopus's expected loss is a percentage; past 25 % more FEC bits buy little. */
const MAX_EXPECTED_LOSS = 25;
const BITRATE = 32_000;

export interface DownlinkLossReport {
  /** RTCP RR fraction lost, 0..1, over the last report interval. */
  fractionLost: number;
  now: number;
}

export class LossAdaptiveOpusEncoder implements DownlinkEncoder {
  readonly timestampStep = RTP_TIMESTAMP_STEP;
  /** The idle keepalive (Downlink), in either mode: its TOC tells the decoder what it is. */
  readonly silenceFrame = OPUS_SILENCE_FRAME;
  #clean: OpusEncoder;
  #robust: OpusEncoder | undefined;
  #complexity: number;
  #useRobust = true;
  /** When a report last showed loss; -Infinity before any did. */
  #lastLossAt = -Infinity;
  #cleanReports = 0;
  /** Fast up, slow down: a burst of loss in one report should keep FEC strong for a while. */
  #expectedLoss = INITIAL_EXPECTED_LOSS;
  /** Frames encoded with in-band FEC, for the call's stats. */
  fecFrames = 0;

  constructor(complexity: number) {
    this.#complexity = complexity;
    this.#clean = new OpusEncoder({ application: "restrictedLowDelay", complexity, bitrate: BITRATE });
    this.#robust = this.#newRobust(INITIAL_EXPECTED_LOSS);
  }

  #newRobust(expectedLossPercent: number): OpusEncoder {
    return new OpusEncoder({
      application: "voip",
      complexity: this.#complexity,
      bitrate: BITRATE,
      inbandFec: true,
      expectedLossPercent,
    });
  }

  /** The loss the encoder plans for now, %; 0 while it sends CELT only. */
  get expectedLossPercent(): number {
    return this.#useRobust ? this.#expectedLoss : 0;
  }

  encode(pcm: Int16Array, out: Uint8Array): number {
    if (!this.#useRobust) return this.#clean.encode(pcm, out);
    this.fecFrames++;
    return this.#robust!.encode(pcm, out);
  }

  setComplexity(complexity: number): void {
    this.#complexity = complexity;
    this.#clean.setComplexity(complexity);
    this.#robust?.setComplexity(complexity);
  }

  /** One RTCP receiver report for the downlink stream. Not on the per-frame path. */
  onReceiverReport({ fractionLost, now }: DownlinkLossReport): void {
    const percent = Math.min(MAX_EXPECTED_LOSS, Math.ceil(fractionLost * 100));
    if (fractionLost >= FEC_FROM_FRACTION) {
      this.#lastLossAt = now;
      this.#cleanReports = 0;
      const expected = Math.max(percent, Math.floor(this.#expectedLoss * 0.8));
      if (!this.#useRobust) {
        // A fresh encoder: one that sat idle would start from stale state.
        this.#robust = this.#newRobust(expected);
        this.#useRobust = true;
      } else if (expected !== this.#expectedLoss) this.#robust!.setExpectedLoss(expected);
      this.#expectedLoss = expected;
      return;
    }
    if (!this.#useRobust) return;
    this.#cleanReports++;
    const neverLost = this.#lastLossAt === -Infinity;
    if (neverLost ? this.#cleanReports >= FIRST_CLEAN_REPORTS : now - this.#lastLossAt > CLEAN_MS) {
      this.#useRobust = false;
      this.#robust = undefined;
      this.#expectedLoss = 0;
      return;
    }
    const expected = Math.max(1, Math.floor(this.#expectedLoss * 0.8));
    if (expected !== this.#expectedLoss) this.#robust!.setExpectedLoss(expected);
    this.#expectedLoss = expected;
  }
}
