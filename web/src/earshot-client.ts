// The Earshot browser client: the OpenAI Realtime WebRTC flow, nothing more. POST the SDP offer
// to `{baseUrl}/v1/realtime/calls` with the `ek_` client secret, get the answer, and talk over
// the `oai-events` data channel. Code written for OpenAI's endpoint works the same way.

export interface ConnectOptions {
  /** The edge's origin, e.g. "http://localhost:8787" (OpenAI: "https://api.openai.com"). */
  baseUrl: string;
  /** An `ek_…` client secret minted by your server. */
  clientSecret: string;
  /** The microphone track to send, or a MediaStream holding one. */
  audio: MediaStreamTrack | MediaStream;
  /** ICE servers (e.g. TURN) for restrictive networks. */
  iceServers?: RTCIceServer[];
  /** Where the assistant's audio plays; created if absent. */
  audioElement?: HTMLAudioElement;
  signal?: AbortSignal;
}

/** Milliseconds from `connect()` to each step, measured with performance.now(). */
export interface CallTimings {
  answerReceived?: number;
  iceConnected?: number;
  channelOpen?: number;
  firstAudio?: number;
}

export interface RealtimeServerEvent {
  type: string;
  [key: string]: unknown;
}

export class EarshotError extends Error {
  readonly status: number;
  readonly code: string | null;
  constructor(message: string, status: number, code: string | null) {
    super(message);
    this.name = "EarshotError";
    this.status = status;
    this.code = code;
  }
}

export interface RealtimeCall {
  /** Dispatches a CustomEvent per server event (name = event type) and "event" for all of them. */
  readonly events: EventTarget;
  readonly callId: string | null;
  readonly timings: CallTimings;
  readonly remoteStream: MediaStream;
  readonly peerConnection: RTCPeerConnection;
  send(event: { type: string; [key: string]: unknown }): void;
  stats(): Promise<{
    rttMs?: number;
    jitterMs?: number;
    packetsLost?: number;
    packetsReceived?: number;
    bytesReceived?: number;
  }>;
  hangup(): Promise<void>;
}

export async function connect(options: ConnectOptions): Promise<RealtimeCall> {
  const t0 = performance.now();
  const timings: CallTimings = {};
  const events = new EventTarget();
  const emit = (event: RealtimeServerEvent) => {
    events.dispatchEvent(new CustomEvent(event.type, { detail: event }));
    events.dispatchEvent(new CustomEvent("event", { detail: event }));
  };

  const pc = new RTCPeerConnection({ iceServers: options.iceServers ?? [] });
  const remoteStream = new MediaStream();
  const audioEl = options.audioElement ?? document.createElement("audio");
  audioEl.autoplay = true;
  pc.ontrack = (e) => {
    remoteStream.addTrack(e.track);
    audioEl.srcObject = remoteStream;
  };
  const track = options.audio instanceof MediaStream ? options.audio.getAudioTracks()[0] : options.audio;
  if (!track) throw new EarshotError("No audio track to send.", 0, "no_audio_track");
  pc.addTrack(track, options.audio instanceof MediaStream ? options.audio : new MediaStream([track]));

  const channel = pc.createDataChannel("oai-events");
  const pending: string[] = [];
  channel.onopen = () => {
    timings.channelOpen = performance.now() - t0;
    for (const text of pending.splice(0)) channel.send(text);
  };
  channel.onmessage = (e) => {
    let event: RealtimeServerEvent;
    try {
      event = JSON.parse(String(e.data));
    } catch {
      return;
    }
    if (typeof event?.type !== "string") return;
    if (event.type === "output_audio_buffer.started" && timings.firstAudio === undefined) {
      timings.firstAudio = performance.now() - t0;
    }
    emit(event);
  };
  pc.oniceconnectionstatechange = () => {
    const state = pc.iceConnectionState;
    if ((state === "connected" || state === "completed") && timings.iceConnected === undefined) {
      timings.iceConnected = performance.now() - t0;
    }
    if (state === "failed" || state === "disconnected") emit({ type: "earshot.connection", state });
  };
  pc.onconnectionstatechange = () => emit({ type: "earshot.connection", state: pc.connectionState });

  await pc.setLocalDescription(await pc.createOffer());
  let callId: string | null = null;
  let location: string | null = null;
  try {
    const res = await fetch(`${options.baseUrl.replace(/\/$/, "")}/v1/realtime/calls`, {
      method: "POST",
      body: pc.localDescription!.sdp,
      headers: { Authorization: `Bearer ${options.clientSecret}`, "Content-Type": "application/sdp" },
      signal: options.signal,
    });
    if (!res.ok) {
      const body = (await res.json().catch(() => null)) as {
        error?: { message?: string; code?: string };
      } | null;
      throw new EarshotError(
        body?.error?.message ?? `The edge answered ${res.status}.`,
        res.status,
        body?.error?.code ?? null,
      );
    }
    location = res.headers.get("Location");
    callId = location?.split("/").pop() ?? null;
    const answer = await res.text();
    timings.answerReceived = performance.now() - t0;
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
  } catch (err) {
    pc.close();
    throw err;
  }

  let closed = false;
  return {
    events,
    callId,
    timings,
    remoteStream,
    peerConnection: pc,
    send(event) {
      const text = JSON.stringify(event);
      if (channel.readyState === "open") channel.send(text);
      else if (channel.readyState === "connecting") pending.push(text);
      else throw new EarshotError("The call's data channel is closed.", 0, "channel_closed");
    },
    async stats() {
      const out: {
        rttMs?: number;
        jitterMs?: number;
        packetsLost?: number;
        packetsReceived?: number;
        bytesReceived?: number;
      } = {};
      (await pc.getStats()).forEach((s) => {
        if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
          out.rttMs = s.currentRoundTripTime * 1000;
        }
        if (s.type === "inbound-rtp" && s.kind === "audio") {
          out.jitterMs = (s.jitter ?? 0) * 1000;
          out.packetsLost = s.packetsLost;
          out.packetsReceived = s.packetsReceived;
          out.bytesReceived = s.bytesReceived;
        }
      });
      return out;
    },
    async hangup() {
      if (closed) return;
      closed = true;
      if (location) {
        await fetch(`${options.baseUrl.replace(/\/$/, "")}${location}`, {
          method: "DELETE",
          headers: { Authorization: `Bearer ${options.clientSecret}` },
        }).catch(() => undefined);
      }
      pc.close();
      emit({ type: "earshot.connection", state: "closed" });
    },
  };
}
