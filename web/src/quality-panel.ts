// The demo page's call-quality panel: once a second, the browser's own WebRTC stats of the call
// (what the user hears: the agent's audio loss and jitter; the round trip of the media path),
// drawn as two sparklines over the last minute with the latest figures beside them.
import type { RealtimeCall } from "./earshot-client.ts";

const SAMPLES = 60;

export interface QualitySample {
  lossPercent: number;
  rttMs: number | undefined;
  jitterMs: number | undefined;
}

export class QualityPanel {
  readonly samples: QualitySample[] = [];
  #canvas: HTMLCanvasElement;
  #figures: HTMLElement;
  #timer = 0;
  #last: { received: number; lost: number } | undefined;

  constructor(canvas: HTMLCanvasElement, figures: HTMLElement) {
    this.#canvas = canvas;
    this.#figures = figures;
  }

  start(call: RealtimeCall): void {
    this.stop();
    this.samples.length = 0;
    this.#last = undefined;
    this.#timer = window.setInterval(() => void this.#sample(call), 1000);
  }

  stop(): void {
    window.clearInterval(this.#timer);
  }

  async #sample(call: RealtimeCall): Promise<void> {
    const stats = await call.stats().catch(() => undefined);
    if (!stats) return;
    const received = stats.packetsReceived ?? 0;
    const lost = Math.max(0, stats.packetsLost ?? 0);
    // Loss over the last second: packets lost out of those expected in it.
    const dReceived = received - (this.#last?.received ?? 0);
    const dLost = lost - (this.#last?.lost ?? 0);
    this.#last = { received, lost };
    const expected = dReceived + dLost;
    this.samples.push({
      lossPercent: expected > 0 ? (100 * dLost) / expected : 0,
      rttMs: stats.rttMs,
      jitterMs: stats.jitterMs,
    });
    if (this.samples.length > SAMPLES) this.samples.shift();
    this.#draw();
  }

  #draw(): void {
    const last = this.samples.at(-1)!;
    const rtt = last.rttMs === undefined ? "—" : last.rttMs.toFixed(0);
    const jitter = last.jitterMs === undefined ? "—" : last.jitterMs.toFixed(0);
    this.#figures.textContent = `loss ${last.lossPercent.toFixed(1)} % · RTT ${rtt} ms · jitter ${jitter} ms`;
    const ctx = this.#canvas.getContext("2d");
    if (!ctx) return;
    const { width, height } = this.#canvas;
    ctx.clearRect(0, 0, width, height);
    ctx.fillStyle = "#f4f4f6";
    ctx.fillRect(0, 0, width, height);
    const half = height / 2;
    // Loss on the top half (0–10 %, clipped), RTT on the bottom half (0–300 ms, clipped).
    this.#line(ctx, (s) => s.lossPercent / 10, 0, half, "#c0392b");
    this.#line(ctx, (s) => (s.rttMs ?? 0) / 300, half, half, "#2557d6");
    ctx.fillStyle = "#555";
    ctx.font = "10px sans-serif";
    ctx.fillText("loss", 4, 11);
    ctx.fillText("RTT", 4, half + 11);
  }

  #line(
    ctx: CanvasRenderingContext2D,
    value: (s: QualitySample) => number,
    top: number,
    height: number,
    colour: string,
  ): void {
    const step = this.#canvas.width / (SAMPLES - 1);
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    this.samples.forEach((s, i) => {
      const y = top + height - 2 - Math.min(1, Math.max(0, value(s))) * (height - 4);
      if (i === 0) ctx.moveTo(i * step, y);
      else ctx.lineTo(i * step, y);
    });
    ctx.stroke();
  }
}
