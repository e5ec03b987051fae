// Shared arrange helpers for relay tests: a relay in-process or as a child process, a werift
// client that offers and POSTs with a valid ticket, test bridges, and audio analysis.
import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { Writable } from "node:stream";
import { RTCPeerConnection, RtpHeader, RtpPacket, type RTCDataChannel, type RTCRtpTransceiver } from "werift";
import { TICKET_HEADER, type CreateCallResponse } from "../../protocol/relay-api.ts";
import { signTicket } from "../../protocol/ticket.ts";
import type { CallBridge, CallBridgeFactory, CallContext } from "../../relay/bridge.ts";
import type { Call } from "../../relay/call/call.ts";
import { loadConfig, type RelayConfig } from "../../relay/config.ts";
import { createLogger } from "../../relay/log.ts";
import type { Relay } from "../../relay/relay.ts";
import { serveRelay } from "../../relay/serve.ts";
import { AgentServer } from "../../agent/agent-server.ts";

export const TEST_SECRET = "test-relay-secret-0123456789";
/** The test relays' RELAY_METRICS_TOKEN; `metricsAuth` is the header that carries it. */
export const TEST_METRICS_TOKEN = "test-metrics-token-0123456789";
export const metricsAuth = { authorization: `Bearer ${TEST_METRICS_TOKEN}` };
export const RATE = 24_000;

const opus = createRequire(import.meta.url)("@discordjs/opus") as typeof import("@discordjs/opus");

let nextPortBlock = 0;
/** A UDP port range per relay so parallel relays in one run don't collide. */
function udpPorts(): string {
  const base = 42000 + ((process.pid * 37 + nextPortBlock++ * 200) % 20000);
  return `${base}-${base + 199}`;
}

export function testEnv(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    RELAY_ID: "relay-test",
    RELAY_HTTP_PORT: "0",
    RELAY_MEDIA_IP: "127.0.0.1",
    RELAY_UDP_PORTS: udpPorts(),
    EARSHOT_RELAY_SECRET: TEST_SECRET,
    RELAY_METRICS_TOKEN: TEST_METRICS_TOKEN,
    // Tests read a counter right after what moves it: every scrape is rendered afresh.
    RELAY_METRICS_MAX_AGE_SECONDS: "0",
    LOG_LEVEL: "silent",
    ...overrides,
  };
}

export function testConfig(overrides: Record<string, string> = {}): RelayConfig {
  return loadConfig(testEnv(overrides));
}

export interface InProcessRelay {
  server: Relay;
  url: string;
  config: RelayConfig;
  close(): Promise<void>;
}

export async function startRelay(
  options: { bridgeFactory?: CallBridgeFactory; env?: Record<string, string>; logs?: string[] } = {},
): Promise<InProcessRelay> {
  const config = testConfig(options.env);
  const logs = options.logs;
  const log = logs
    ? createLogger(
        "debug",
        new Writable({
          write(chunk, _enc, done) {
            logs.push(String(chunk));
            done();
          },
        }),
      )
    : createLogger("silent");
  const served = await serveRelay({ config, log, bridgeFactory: options.bridgeFactory });
  return {
    server: served.relay,
    config,
    url: `http://127.0.0.1:${served.port}`,
    close: () => served.close(),
  };
}

export interface ChildRelay {
  child: ChildProcess;
  url: string;
  output: string[];
  exited: Promise<number | null>;
  kill(): void;
}

/** Starts `node relay/main.ts` as a real process; resolves once it listens. */
export async function startRelayProcess(env: Record<string, string> = {}): Promise<ChildRelay> {
  // The relay bridges every call to an upstream; give it the built-in agent unless told otherwise.
  const agent = env.INFERENCE_URL ? undefined : await AgentServer.start({ port: 0, reply: "echo" });
  if (agent) env = { INFERENCE_URL: agent.url, ...env };
  const child = spawn(process.execPath, ["relay/main.ts"], {
    cwd: new URL("../..", import.meta.url).pathname,
    // worker-configuration.d.ts widens NodeJS.ProcessEnv with the Worker's required bindings.
    env: {
      PATH: process.env.PATH,
      ...testEnv({ LOG_LEVEL: "info", ...env }),
    } as unknown as NodeJS.ProcessEnv,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  void exited.then(() => agent?.close());
  const url = await new Promise<string>((resolve, reject) => {
    const timeout = setTimeout(() => reject(new Error(`relay did not start:\n${output.join("")}`)), 15_000);
    const onData = (chunk: Buffer) => {
      const text = String(chunk);
      output.push(text);
      const match = /"url":"(https?:\/\/[^"]+)".*relay listening/.exec(text);
      if (match) {
        clearTimeout(timeout);
        resolve(match[1]!);
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", (chunk: Buffer) => output.push(String(chunk)));
    void exited.then((code) => {
      clearTimeout(timeout);
      reject(new Error(`relay exited with ${code}:\n${output.join("")}`));
    });
  });
  return {
    child,
    url,
    output,
    exited,
    kill: () => {
      if (child.exitCode === null) child.kill("SIGKILL");
    },
  };
}

export function newCallId(): string {
  return `rtc_${randomBytes(12).toString("base64url")}`;
}

export async function ticketFor(
  callId: string,
  offerSdp: string,
  session: unknown = {},
  options: {
    secret?: string;
    relayId?: string;
    nonce?: string;
    nowSeconds?: number;
    ttlSeconds?: number;
  } = {},
): Promise<string> {
  return signTicket(
    options.secret ?? TEST_SECRET,
    { callId, relayId: options.relayId ?? "relay-test", offerSdp, session },
    options,
  );
}

export async function postCall(
  url: string,
  body: { call_id: string; offer_sdp: string; session?: unknown },
  ticket: string | undefined,
): Promise<Response> {
  return fetch(`${url}/calls`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(ticket ? { [TICKET_HEADER]: ticket } : {}) },
    body: JSON.stringify({ session: {}, ...body }),
  });
}

export interface ReceivedPacket {
  sequenceNumber: number;
  timestamp: number;
  marker: boolean;
  payloadType: number;
  payload: Buffer;
  at: number;
}

/** A werift peer on loopback playing the browser's part. */
export class TestClient {
  readonly pc = new RTCPeerConnection({
    iceServers: [],
    iceUseIpv6: false,
    iceInterfaceAddresses: { udp4: "127.0.0.1" },
    iceAdditionalHostAddresses: ["127.0.0.1"],
  });
  readonly transceiver: RTCRtpTransceiver;
  readonly channel: RTCDataChannel;
  readonly received: ReceivedPacket[] = [];
  readonly messages: string[] = [];
  readonly callId = newCallId();
  answerSdp = "";
  #sequence = Math.floor(Math.random() * 0xffff);
  #timestamp = Math.floor(Math.random() * 0xffffffff);
  /** When the last packet went, and how far pauses have moved the RTP clock since. */
  #lastSentAt: number | undefined;
  #pauseShift = 0;
  #encoder: InstanceType<typeof opus.OpusEncoder> | undefined;

  constructor() {
    this.transceiver = this.pc.addTransceiver("audio", { direction: "sendrecv" });
    this.channel = this.pc.createDataChannel("oai-events");
    this.channel.onMessage.subscribe((m) => this.messages.push(String(m)));
    this.transceiver.onTrack.subscribe((track) => {
      track.onReceiveRtp.subscribe((rtp) => {
        this.received.push({
          sequenceNumber: rtp.header.sequenceNumber,
          timestamp: rtp.header.timestamp,
          marker: rtp.header.marker,
          payloadType: rtp.header.payloadType,
          payload: rtp.payload,
          at: performance.now(),
        });
      });
    });
  }

  async offer(): Promise<string> {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    return this.pc.localDescription!.sdp;
  }

  /** Offers, POSTs with a valid ticket, applies the answer. Returns the HTTP response. */
  async call(url: string, session: unknown = {}): Promise<Response> {
    const offerSdp = await this.offer();
    const response = await postCall(
      url,
      { call_id: this.callId, offer_sdp: offerSdp, session },
      await ticketFor(this.callId, offerSdp, session),
    );
    if (response.status === 201) {
      const body = (await response.clone().json()) as CreateCallResponse;
      this.answerSdp = body.answer_sdp;
      await this.pc.setRemoteDescription({ type: "answer", sdp: body.answer_sdp });
    }
    return response;
  }

  connected(timeoutMs = 10_000): Promise<void> {
    if (this.pc.connectionState === "connected") return Promise.resolve();
    return withTimeout(
      new Promise<void>((resolve) => {
        this.pc.connectionStateChange.subscribe((s) => s === "connected" && resolve());
      }),
      timeoutMs,
      "client connected",
    );
  }

  channelOpen(timeoutMs = 10_000): Promise<void> {
    if (this.channel.readyState === "open") return Promise.resolve();
    return withTimeout(
      new Promise<void>((resolve) => this.channel.stateChanged.subscribe((s) => s === "open" && resolve())),
      timeoutMs,
      "channel open",
    );
  }

  /** Encodes 20 ms frames of 24 kHz PCM as Opus (VOIP, in-band FEC on) into RTP packets. */
  encodeFrames(pcm: Int16Array): RtpPacket[] {
    this.#encoder ??= createOpusEncoder();
    const packets: RtpPacket[] = [];
    for (let offset = 0; offset + 480 <= pcm.length; offset += 480) {
      const payload = this.#encoder.encode(Buffer.from(pcm.buffer, pcm.byteOffset + offset * 2, 960));
      this.#sequence = (this.#sequence + 1) & 0xffff;
      this.#timestamp = (this.#timestamp + 960) >>> 0;
      packets.push(
        new RtpPacket(
          new RtpHeader({ sequenceNumber: this.#sequence, timestamp: this.#timestamp, payloadType: 111 }),
          payload,
        ),
      );
    }
    return packets;
  }

  /**
   * Sends packets `intervalMs` apart. A batch sent after a pause is moved later in RTP time
   * by the pause, as a real sender's clock runs on through silence (RFC 3550 §5.1): a tone sent
   * a second after the last one is a second later in media time, which is what the relay's
   * echo guard lines the uplink up by. Within a batch the timestamps are as encoded (tests
   * reorder packets).
   */
  async sendPackets(packets: RtpPacket[], intervalMs = 20): Promise<void> {
    const start = performance.now();
    if (this.#lastSentAt !== undefined)
      this.#pauseShift += Math.max(0, Math.round((start - this.#lastSentAt) / 20) - 1) * 960;
    for (let i = 0; i < packets.length; i++) {
      const due = start + i * intervalMs;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const header = packets[i]!.header;
      header.timestamp = (header.timestamp + this.#pauseShift) >>> 0;
      await this.transceiver.sender.sendRtp(packets[i]!);
      this.#lastSentAt = performance.now();
    }
  }

  /** Decodes everything received so far, in sequence order, to 24 kHz PCM. */
  decodeReceived(): Int16Array {
    const decoder = new opus.OpusEncoder(RATE, 1);
    const sorted = [...this.received].sort((a, b) => a.at - b.at);
    const parts = sorted.map((p) => {
      const pcm = decoder.decode(p.payload);
      return new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2);
    });
    return concat(parts);
  }

  async close(): Promise<void> {
    await this.pc.close();
  }
}

export function createOpusEncoder() {
  const encoder = new opus.OpusEncoder(RATE, 1, 2048);
  encoder.applyEncoderCTL(4012, 1); // in-band FEC
  encoder.applyEncoderCTL(4014, 10); // expect 10 % loss, so FEC is worth its bits
  encoder.setBitrate(32_000);
  return encoder;
}

/** Records uplink frames (copied) and exposes the call context. */
/**
 * Places a TestClient's call on an in-process relay started with RecordingBridge.factory and
 * waits until both ends are connected. `clients` collects the client for the caller's clean-up.
 */
export async function connectRecorded(
  relay: InProcessRelay,
  clients?: TestClient[],
): Promise<{ client: TestClient; call: Call; bridge: RecordingBridge }> {
  const client = new TestClient();
  clients?.push(client);
  const response = await client.call(relay.url);
  if (response.status !== 201) throw new Error(`call refused: ${response.status} ${await response.text()}`);
  await client.connected();
  const call = relay.server.calls.get(client.callId)!;
  await waitFor(() => call.state === "connected", 5000, "relay connected");
  const bridge = RecordingBridge.instances.find((b) => b.ctx.callId === client.callId)!;
  return { client, call, bridge };
}

export class RecordingBridge implements CallBridge {
  static instances: RecordingBridge[] = [];
  readonly frames: Int16Array[] = [];
  readonly messages: string[] = [];
  readonly playout: string[] = [];
  channelOpened = false;
  closed = 0;
  readonly ctx: CallContext;

  constructor(ctx: CallContext) {
    this.ctx = ctx;
    RecordingBridge.instances.push(this);
  }

  static factory: CallBridgeFactory = (ctx) => new RecordingBridge(ctx);

  onUplinkFrame(pcm: Int16Array): void {
    if (pcm.length !== 480) throw new Error(`frame of ${pcm.length} samples`);
    this.frames.push(pcm.slice());
  }
  onClientMessage(text: string): void {
    this.messages.push(text);
  }
  onChannelOpen(): void {
    this.channelOpened = true;
  }
  onPlayoutStarted(itemId: string): void {
    this.playout.push(`started:${itemId}`);
  }
  onPlayoutStopped(itemId: string): void {
    this.playout.push(`stopped:${itemId}`);
  }
  close(): void {
    this.closed++;
  }
  pcm(): Int16Array {
    return concat(this.frames);
  }
}

// ---- audio ----

export function sine(frequency: number, ms: number, amplitude = 10_000, rate = RATE): Int16Array {
  const n = Math.round((rate * ms) / 1000);
  const out = new Int16Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.round(amplitude * Math.sin((2 * Math.PI * frequency * i) / rate));
  return out;
}

export function concat(parts: Int16Array[]): Int16Array {
  const out = new Int16Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

export function rms(samples: Int16Array): number {
  if (samples.length === 0) return 0;
  let sum = 0;
  for (const s of samples) sum += s * s;
  return Math.sqrt(sum / samples.length);
}

/** Amplitude of one frequency component (Goertzel), scaled so a full sine of amplitude A gives A. */
export function goertzel(samples: Int16Array, frequency: number, rate = RATE): number {
  const w = (2 * Math.PI * frequency) / rate;
  const coeff = 2 * Math.cos(w);
  let s1 = 0;
  let s2 = 0;
  for (const x of samples) {
    const s0 = x + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
  return (2 * Math.sqrt(Math.max(0, power))) / samples.length;
}

/** The strongest frequency between lo and hi Hz, in `step` Hz steps. */
export function dominantFrequency(samples: Int16Array, lo = 100, hi = 4000, step = 10, rate = RATE): number {
  let best = lo;
  let bestAmp = -1;
  for (let f = lo; f <= hi; f += step) {
    const a = goertzel(samples, f, rate);
    if (a > bestAmp) {
      bestAmp = a;
      best = f;
    }
  }
  return best;
}

/** Start indices of 20 ms windows whose RMS falls below `floor` (dropouts). */
export function silentWindows(samples: Int16Array, floor: number, window = 480): number[] {
  const out: number[] = [];
  for (let i = 0; i + window <= samples.length; i += window) {
    if (rms(samples.subarray(i, i + window)) < floor) out.push(i);
  }
  return out;
}

// ---- waiting ----

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

export async function waitFor(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const start = performance.now();
  while (!predicate()) {
    if (performance.now() - start > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
