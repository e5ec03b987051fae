// A network impairment model and a UDP proxy that applies it, both directions: this kernel has no
// netem, so tests and bench/network.ts put this between a werift client and the relay. The model
// is pure and seeded (a run repeats exactly for the same seed and packet times); the proxy only
// schedules the datagrams it decides on.
//   loss          independent random loss, 0..1
//   burst         Gilbert–Elliott two-state loss: good → bad with pGoodToBad per packet, bad →
//                 good with pBadToGood; a packet is lost with lossInBad (default 1) in the bad
//                 state and lossInGood (default 0) in the good one. Mean burst 1/pBadToGood packets.
//   delayMs       fixed one-way delay
//   jitterMs      each packet's delay varies uniformly by ±jitterMs around max(delayMs, jitterMs)
//                 (netem's `delay D J`), which reorders packets closer together than the spread
//   reorder       share of packets held back a further reorderMs (default 40), reordered explicitly
//   duplicate     share of packets sent twice
//   bandwidthKbps a bottleneck link: packets serialise at this rate behind a queue of at most
//                 queueMs (default 200) of data; beyond it they are tail-dropped
//   blackout(ms)  every datagram either way is dropped for the next `ms`
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { performance } from "node:perf_hooks";

export interface GilbertElliott {
  pGoodToBad: number;
  pBadToGood: number;
  lossInBad?: number;
  lossInGood?: number;
}

export interface ImpairmentProfile {
  loss?: number;
  burst?: GilbertElliott;
  delayMs?: number;
  jitterMs?: number;
  reorder?: number;
  reorderMs?: number;
  duplicate?: number;
  bandwidthKbps?: number;
  queueMs?: number;
}

/** Gilbert–Elliott parameters for a mean loss `rate` in bursts of `meanBurst` packets. */
export function burstyLoss(rate: number, meanBurst: number): GilbertElliott {
  const pBadToGood = 1 / meanBurst;
  // Stationary share of the bad state: p / (p + r) = rate → p = rate · r / (1 − rate).
  return { pGoodToBad: (rate * pBadToGood) / (1 - rate), pBadToGood };
}

/** mulberry32: a small, fast, seeded PRNG with a good spread for this use; [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface ImpairmentCounters {
  packets: number;
  dropped: number;
  blackedOut: number;
  queueDropped: number;
  duplicated: number;
  reordered: number;
}

/** One direction's impairment: for each datagram, when (ms from now) to deliver each copy. */
export class Impairment {
  readonly counters: ImpairmentCounters = {
    packets: 0,
    dropped: 0,
    blackedOut: 0,
    queueDropped: 0,
    duplicated: 0,
    reordered: 0,
  };
  /**
   * RTP datagrams offered to this direction, by payload type: SRTP leaves the header in clear
   * (RFC 3711), so a test can see what codec is on the wire (e.g. audio/red). RTCP not counted.
   */
  readonly rtpPayloadTypes = new Map<number, number>();
  profile: ImpairmentProfile;
  #random: () => number;
  #bad = false;
  #blackoutFrom = Infinity;
  #blackoutUntil = -Infinity;
  #linkFreeAt = -Infinity;

  constructor(profile: ImpairmentProfile, seed: number) {
    this.profile = profile;
    this.#random = seededRandom(seed);
  }

  blackout(now: number, ms: number): void {
    this.#blackoutFrom = now;
    this.#blackoutUntil = now + ms;
  }

  /** Counts `datagram` in rtpPayloadTypes if it is RTP (RFC 7983: first byte 128–191; RTCP PTs 192–223). */
  countRtp(datagram: Uint8Array): void {
    const first = datagram[0]!;
    const second = datagram[1]!;
    if (datagram.length < 12 || first < 128 || first > 191 || (second >= 192 && second <= 223)) return;
    const payloadType = second & 0x7f;
    this.rtpPayloadTypes.set(payloadType, (this.rtpPayloadTypes.get(payloadType) ?? 0) + 1);
  }

  /** Delivery delays in ms for a datagram of `bytes` handed over at `now` (ms); [] = dropped. */
  decide(now: number, bytes: number): number[] {
    const p = this.profile;
    this.counters.packets++;
    // Draw every random number for every packet, so a change of one setting leaves the others'
    // decisions where they were for the same seed.
    const uLoss = this.#random();
    const uState = this.#random();
    const uBurst = this.#random();
    const uJitter = this.#random();
    const uReorder = this.#random();
    const uDuplicate = this.#random();
    const uJitter2 = this.#random();
    if (now >= this.#blackoutFrom && now < this.#blackoutUntil) {
      this.counters.blackedOut++;
      return [];
    }
    let lost = uLoss < (p.loss ?? 0);
    if (p.burst) {
      const b = p.burst;
      this.#bad = this.#bad ? uState >= b.pBadToGood : uState < b.pGoodToBad;
      if (uBurst < (this.#bad ? (b.lossInBad ?? 1) : (b.lossInGood ?? 0))) lost = true;
    }
    if (lost) {
      this.counters.dropped++;
      return [];
    }
    let queued = 0;
    if (p.bandwidthKbps) {
      const start = Math.max(now, this.#linkFreeAt);
      if (start - now > (p.queueMs ?? 200)) {
        this.counters.queueDropped++;
        return [];
      }
      this.#linkFreeAt = start + (bytes * 8) / p.bandwidthKbps;
      queued = this.#linkFreeAt - now;
    }
    const base = Math.max(p.delayMs ?? 0, p.jitterMs ?? 0);
    const spread = p.jitterMs ?? 0;
    let delay = queued + base + (uJitter * 2 - 1) * spread;
    if (uReorder < (p.reorder ?? 0)) {
      delay += p.reorderMs ?? 40;
      this.counters.reordered++;
    }
    if (uDuplicate < (p.duplicate ?? 0)) {
      this.counters.duplicated++;
      return [delay, queued + base + (uJitter2 * 2 - 1) * spread];
    }
    return [delay];
  }
}

export interface ImpairmentProxy {
  /** Where the client should send: the proxy's port on 127.0.0.1. */
  port: number;
  /** Client → relay. */
  up: Impairment;
  /** Relay → client. */
  down: Impairment;
  /** Both directions drop everything for `ms` from now. */
  blackout(ms: number): void;
  close(): Promise<void>;
}

/**
 * A UDP proxy on 127.0.0.1 for one flow: datagrams from the client (whoever sends to `port`)
 * go to `target` from a second socket, whose replies go back to the client. ICE sees the
 * proxy's relay-side socket as a peer-reflexive candidate, as a NAT would be.
 */
export async function startImpairmentProxy(options: {
  targetPort: number;
  targetHost?: string;
  up?: ImpairmentProfile;
  down?: ImpairmentProfile;
  seed?: number;
}): Promise<ImpairmentProxy> {
  const seed = options.seed ?? 1;
  const up = new Impairment(options.up ?? {}, seed);
  const down = new Impairment(options.down ?? {}, seed ^ 0x5bd1e995);
  const host = options.targetHost ?? "127.0.0.1";
  const bind = async (socket: Socket) =>
    new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", () => resolve()));
  const clientSide = createSocket("udp4");
  const relaySide = createSocket("udp4");
  await Promise.all([bind(clientSide), bind(relaySide)]);
  const timers = new Set<NodeJS.Timeout>();
  let client: RemoteInfo | undefined;
  let closed = false;

  const forward = (impairment: Impairment, send: () => void, bytes: number) => {
    for (const delay of impairment.decide(performance.now(), bytes)) {
      if (delay < 1) {
        send();
        continue;
      }
      const timer = setTimeout(() => {
        timers.delete(timer);
        if (!closed) send();
      }, delay);
      timers.add(timer);
    }
  };
  clientSide.on("message", (msg, from) => {
    client = from;
    up.countRtp(msg);
    forward(up, () => relaySide.send(msg, options.targetPort, host), msg.length);
  });
  relaySide.on("message", (msg) => {
    const to = client;
    down.countRtp(msg);
    if (to) forward(down, () => clientSide.send(msg, to.port, to.address), msg.length);
  });
  // A send to a closed port (the relay gone) must not crash the test process.
  clientSide.on("error", () => {});
  relaySide.on("error", () => {});

  return {
    port: clientSide.address().port,
    up,
    down,
    blackout(ms) {
      const now = performance.now();
      up.blackout(now, ms);
      down.blackout(now, ms);
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      await Promise.all([
        new Promise<void>((resolve) => clientSide.close(() => resolve())),
        new Promise<void>((resolve) => relaySide.close(() => resolve())),
      ]);
    },
  };
}

/**
 * Points an SDP answer's media at the proxy: the relay's 127.0.0.1 host candidate on
 * `relayPort` becomes the proxy's port and every other candidate goes, so nothing bypasses it.
 */
export function routeAnswerThroughProxy(sdp: string, proxyPort: number, relayPort: number): string {
  const relayCandidate = new RegExp(
    `^(a=candidate:\\S+ \\d+ udp \\d+ 127\\.0\\.0\\.1 )${relayPort}( typ host.*)$`,
    "i",
  );
  return sdp
    .split("\r\n")
    .flatMap((line) => {
      if (!line.startsWith("a=candidate:")) return [line];
      return relayCandidate.test(line) ? [line.replace(relayCandidate, `$1${proxyPort}$2`)] : [];
    })
    .join("\r\n");
}

/** The UDP port of the first 127.0.0.1 host candidate in an SDP. */
export function hostCandidatePort(sdp: string): number {
  const match = /^a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 (\d+) typ host/im.exec(sdp);
  if (!match) throw new Error("no 127.0.0.1 UDP host candidate in the SDP");
  return Number(match[1]);
}
