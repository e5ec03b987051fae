// The app page of test/web/openai-sdks.test.ts: OpenAI's own browser clients, bundled by esbuild
// as an app would bundle them, served from an origin other than the edge's. Each scenario runs
// in the page and returns what the app saw; the test judges it.
import { OpenAIRealtimeWebRTC, RealtimeAgent, RealtimeSession, tool } from "@openai/agents-realtime";
import OpenAI from "openai";

type RealtimeEvent = { type: string; [key: string]: unknown };

/** What the page heard on the remote track, measured by a WebAudio analyser every 20 ms. */
export interface Heard {
  peakRms: number;
  /** Time with the level above VOICED_RMS. */
  voicedMs: number;
}

const VOICED_RMS = 0.02;

/** Measures a remote stream until stop(). The stream must also play in a media element (Chromium). */
function listen(stream: MediaStream): { heard: () => Heard; stop: () => void } {
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  ctx.createMediaStreamSource(stream).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  const heard: Heard = { peakRms: 0, voicedMs: 0 };
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    const level = Math.sqrt(sum / buf.length);
    heard.peakRms = Math.max(heard.peakRms, level);
    if (level > VOICED_RMS) heard.voicedMs += now - last;
    last = now;
  }, 20);
  return {
    heard: () => ({ ...heard }),
    stop: () => {
      clearInterval(timer);
      void ctx.close();
    },
  };
}

async function until(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!check() && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return check();
}

/** The remote stream the SDK attached to its audio element, once it has one. */
async function remoteStreamOf(audio: HTMLAudioElement): Promise<MediaStream | undefined> {
  await until(() => audio.srcObject instanceof MediaStream, 10_000);
  return audio.srcObject instanceof MediaStream ? audio.srcObject : undefined;
}

export interface AgentsRunOptions {
  /** The edge's calls URL, given to the transport as its baseUrl. */
  callsUrl: string;
  clientSecret: string;
  instructions: string;
  /** Stop once this much reply audio was heard. */
  voicedMs: number;
  timeoutMs: number;
  /** Register a get_weather tool whose output is this text then the city, and report its calls. */
  weatherReport?: string;
}

export interface AgentsRunResult {
  error?: string;
  callId: string | undefined;
  events: RealtimeEvent[];
  heard: Heard;
  toolCalls: { city: string }[];
  /** The assistant's transcripts in the SDK's history. */
  transcripts: string[];
}

/** `@openai/agents-realtime`: a RealtimeSession over its WebRTC transport, as its quickstart. */
export async function runAgentsSession(options: AgentsRunOptions): Promise<AgentsRunResult> {
  const toolCalls: { city: string }[] = [];
  const { weatherReport } = options;
  const tools =
    weatherReport !== undefined
      ? [
          tool({
            name: "get_weather",
            description: "The weather in a city.",
            parameters: {
              type: "object",
              properties: { city: { type: "string" } },
              required: ["city"],
              additionalProperties: false,
            },
            strict: true,
            execute: async (input) => {
              const { city } = input as { city: string };
              toolCalls.push({ city });
              return `${weatherReport} ${city}.`;
            },
          }),
        ]
      : [];
  const agent = new RealtimeAgent({ name: "Assistant", instructions: options.instructions, tools });
  const audioElement = document.createElement("audio");
  const transport = new OpenAIRealtimeWebRTC({ baseUrl: options.callsUrl, audioElement });
  const session = new RealtimeSession(agent, { transport, model: "gpt-realtime" });
  const events: RealtimeEvent[] = [];
  session.on("transport_event", (event) => events.push(event as RealtimeEvent));
  // Read while connected: close() forgets it.
  const connected = { callId: undefined as string | undefined };
  const result = (heard: Heard, error?: string): AgentsRunResult => ({
    ...(error ? { error } : {}),
    callId: connected.callId,
    events,
    heard,
    toolCalls,
    transcripts: session.history.flatMap((item) =>
      item.type === "message" && item.role === "assistant"
        ? item.content.flatMap((part) =>
            part.type === "output_audio" && part.transcript ? [part.transcript] : [],
          )
        : [],
    ),
  });
  try {
    await session.connect({ apiKey: options.clientSecret });
  } catch (err) {
    return result({ peakRms: 0, voicedMs: 0 }, `connect: ${(err as Error).message}`);
  }
  connected.callId = transport.callId;
  const stream = await remoteStreamOf(audioElement);
  if (!stream) return result({ peakRms: 0, voicedMs: 0 }, "no remote stream on the SDK's audio element");
  const meter = listen(stream);
  await until(() => meter.heard().voicedMs >= options.voicedMs, options.timeoutMs);
  // The reply's last events (response.done, the transcript) follow its audio.
  await until(() => events.some((e) => e.type === "response.done"), 10_000);
  if (weatherReport !== undefined) await until(() => result(meter.heard()).transcripts.length > 0, 3000);
  meter.stop();
  session.close();
  return result(meter.heard());
}

export interface OpenAICallOptions {
  /**
   * Who places the call. "browser": the `openai` package in the page, with the client secret
   * (`dangerouslyAllowBrowser`). "app-server": the page hands its offer to the app's server,
   * which places the call with its API key and a session (OpenAI's unified interface) through
   * the functions the test exposes as window.appServer.
   */
  placedBy: "browser" | "app-server";
  /** The edge's API base, e.g. http://127.0.0.1:8787/v1. */
  baseURL: string;
  clientSecret?: string;
  /** The edge's `?region=` for the relay to use, if any. */
  region?: string;
  voicedMs: number;
  timeoutMs: number;
}

export interface PlacedCall {
  sdp: string;
  contentType: string | null;
  callId: string | undefined;
}

export interface OpenAICallResult {
  error?: string;
  callId: string | undefined;
  answerType: string | null;
  events: RealtimeEvent[];
  heard: Heard;
  hangup: { ok: boolean; status?: number; error?: string };
  /** The data channel closed after the hang-up, as a user of the call sees it end. */
  channelClosedAfterHangup: boolean;
}

/** A call placed with the `openai` package's calls.create, then ended with its calls.hangup. */
export async function runOpenAICall(options: OpenAICallOptions): Promise<OpenAICallResult> {
  const client =
    options.placedBy === "browser"
      ? new OpenAI({
          apiKey: options.clientSecret,
          baseURL: options.baseURL,
          dangerouslyAllowBrowser: true,
          maxRetries: 0,
        })
      : undefined;
  const place = async (sdp: string): Promise<PlacedCall> => {
    if (options.placedBy === "app-server") return window.appServer.placeCall(sdp);
    const query = options.region ? { query: { region: options.region } } : {};
    const { data, response } = await client!.realtime.calls.create({ sdp }, query).withResponse();
    return {
      sdp: await data.text(),
      contentType: data.headers.get("content-type"),
      callId: response.headers.get("location")?.split("/").pop(),
    };
  };
  const hangup = (callId: string): Promise<unknown> =>
    options.placedBy === "app-server"
      ? window.appServer.hangup(callId)
      : client!.realtime.calls.hangup(callId);

  const pc = new RTCPeerConnection();
  const audioElement = document.createElement("audio");
  audioElement.autoplay = true;
  pc.ontrack = (e) => (audioElement.srcObject = e.streams[0] ?? null);
  const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
  pc.addTrack(mic.getAudioTracks()[0]!);
  const channel = pc.createDataChannel("oai-events");
  const events: RealtimeEvent[] = [];
  channel.addEventListener("message", (e) => events.push(JSON.parse(String(e.data)) as RealtimeEvent));
  let channelClosed = false;
  channel.addEventListener("close", () => (channelClosed = true));
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const result: OpenAICallResult = {
    callId: undefined,
    answerType: null,
    events,
    heard: { peakRms: 0, voicedMs: 0 },
    hangup: { ok: false },
    channelClosedAfterHangup: false,
  };
  const end = (error?: string) => {
    pc.close();
    for (const track of mic.getTracks()) track.stop();
    return error ? { ...result, error } : result;
  };
  let placed: PlacedCall;
  try {
    placed = await place(offer.sdp!);
  } catch (err) {
    return end(`calls.create: ${(err as Error).message}`);
  }
  result.callId = placed.callId;
  result.answerType = placed.contentType;
  await pc.setRemoteDescription({ type: "answer", sdp: placed.sdp });
  const stream = await remoteStreamOf(audioElement);
  if (!stream) return end("no remote stream");
  const meter = listen(stream);
  await until(() => meter.heard().voicedMs >= options.voicedMs, options.timeoutMs);
  meter.stop();
  result.heard = meter.heard();
  try {
    await hangup(result.callId!);
    result.hangup = { ok: true };
  } catch (err) {
    const status = (err as { status?: number }).status;
    result.hangup = { ok: false, status, error: (err as Error).message };
  }
  // The relay ends the call: its data channel goes down without the page closing anything.
  result.channelClosedAfterHangup = await until(() => channelClosed, 10_000);
  return end();
}

declare global {
  interface Window {
    sdkPage: { runAgentsSession: typeof runAgentsSession; runOpenAICall: typeof runOpenAICall };
    /** The app's server, reached from the page as an app would (exposed by the test). */
    appServer: { placeCall: (sdp: string) => Promise<PlacedCall>; hangup: (callId: string) => Promise<void> };
  }
}
window.sdkPage = { runAgentsSession, runOpenAICall };
