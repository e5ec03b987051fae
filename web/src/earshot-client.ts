// The Earshot browser client: the OpenAI Realtime WebRTC flow. POST the SDP offer to
// `{baseUrl}/v1/realtime/calls` with the `ek_` client secret, get the answer, and talk over the
// `oai-events` data channel. Code written for OpenAI's endpoint works the same way.
// One thing more (issue 18): when the call's relay is lost, the client resumes the call on
// another relay. An Earshot relay sends audio at least every 300 ms, silence included, so a
// second without a packet, or ICE failing, means the relay is gone: the client opens a new
// RTCPeerConnection with the same microphone track and offers it on
// `POST …/calls/{id}/resume`; the edge moves the call, its session and its conversation there.

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
  /** Resume the call on another relay when its relay is lost (default true). */
  resume?: boolean;
  /**
   * No audio packet for this long means the relay is lost (default 1000 ms). The relay sends
   * one at least every 300 ms while idle, so this allows for two lost in a row and some jitter.
   */
  lostAfterMs?: number;
}

/** Why the client decided the relay was lost. */
export type LostReason = "no_audio" | "ice_failed" | "ice_disconnected";

/**
 * Client-side events the app can show, dispatched on `events` like server events:
 * - `earshot.connection` { state }: the peer connection's state, and "resuming" while a resume
 *   is under way;
 * - `earshot.relay_lost` { reason, silent_ms }: the relay stopped answering, a resume starts;
 * - `earshot.resumed`: the call carries on on another relay; the edge's `earshot.call.resumed`
 *   (what was replayed and what was lost) plus the client's own figures;
 * - `earshot.resume_failed` { status, code, message }: the resume was refused (503
 *   no_relay_available, 410 the call ended, …); the call is over.
 */
export interface ResumedEvent extends RealtimeServerEvent {
  type: "earshot.resumed";
  reason: LostReason;
  /** Ms from the last packet heard to the loss being noticed. */
  detected_after_ms: number;
  /** Ms from the loss being noticed to the new relay saying the call resumed. */
  resumed_after_ms: number;
  /** The edge's account: previous_relay_id, replayed/summarised/dropped items, what was lost. */
  previous_relay_id?: string;
  replayed_items?: number;
  message?: string;
}

/** Milliseconds from `connect()` to each step, measured with performance.now(). */
export interface CallTimings {
  answerReceived?: number;
  iceConnected?: number;
  channelOpen?: number;
  firstAudio?: number;
  /** Each resume: ms from connect() to the loss being noticed, and to the call carrying on. */
  resumes?: { lostAt: number; resumedAt?: number }[];
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
  /** The assistant's audio; after a resume it holds the new relay's track instead. */
  readonly remoteStream: MediaStream;
  /** The current peer connection (a new one after each resume). */
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

/** How often the client looks at the inbound audio's packet count. */
const LIVENESS_POLL_MS = 200;
/** A resumed connection has this long to set up ICE and DTLS before silence counts. */
const RESUME_SETUP_MS = 3000;
/** Resumes in a row that never heard a packet before the client gives up. */
const MAX_UNHEARD_RESUMES = 3;

interface Peer {
  pc: RTCPeerConnection;
  channel: RTCDataChannel;
}

export async function connect(options: ConnectOptions): Promise<RealtimeCall> {
  const t0 = performance.now();
  const timings: CallTimings = {};
  const events = new EventTarget();
  const emit = (event: RealtimeServerEvent) => {
    events.dispatchEvent(new CustomEvent(event.type, { detail: event }));
    events.dispatchEvent(new CustomEvent("event", { detail: event }));
  };
  const baseUrl = options.baseUrl.replace(/\/$/, "");
  const lostAfterMs = options.lostAfterMs ?? 1000;
  const track = options.audio instanceof MediaStream ? options.audio.getAudioTracks()[0] : options.audio;
  if (!track) throw new EarshotError("No audio track to send.", 0, "no_audio_track");
  const micStream = options.audio instanceof MediaStream ? options.audio : new MediaStream([track]);
  const remoteStream = new MediaStream();
  const audioEl = options.audioElement ?? document.createElement("audio");
  audioEl.autoplay = true;

  let callId: string | null = null;
  let location: string | null = null;
  let closed = false;
  let resuming = false;
  /** Set when a resume starts; the new relay's `earshot.call.resumed` completes it. */
  let resume: { reason: LostReason; lostAt: number; detectedAfterMs: number } | null = null;
  let unheardResumes = 0;
  const pending: string[] = [];

  // Liveness: the inbound audio's packet count, polled; armed by the first packet (a relay
  // without the idle keepalive would look lost between replies, so nothing is assumed before).
  let packetsReceived = 0;
  let lastPacketAt = 0;
  let livenessTimer: ReturnType<typeof setInterval> | undefined;

  /** A peer connection sending the microphone, with its data channel and handlers. */
  function openPeer(): Peer {
    const pc = new RTCPeerConnection({ iceServers: options.iceServers ?? [] });
    pc.ontrack = (e) => {
      for (const old of remoteStream.getTracks()) remoteStream.removeTrack(old);
      remoteStream.addTrack(e.track);
      audioEl.srcObject = remoteStream;
    };
    pc.addTrack(track!, micStream);
    const channel = pc.createDataChannel("oai-events");
    channel.onopen = () => {
      if (timings.channelOpen === undefined) timings.channelOpen = performance.now() - t0;
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
      if (event.type === "earshot.call.resumed") onResumed(event);
    };
    pc.oniceconnectionstatechange = () => {
      const state = pc.iceConnectionState;
      if ((state === "connected" || state === "completed") && timings.iceConnected === undefined) {
        timings.iceConnected = performance.now() - t0;
      }
      if (state !== "failed" && state !== "disconnected") return;
      if (canResume()) void resumeCall(state === "failed" ? "ice_failed" : "ice_disconnected");
      else emit({ type: "earshot.connection", state });
    };
    pc.onconnectionstatechange = () => {
      if (resuming && pc.connectionState !== "connected") return;
      emit({ type: "earshot.connection", state: pc.connectionState });
    };
    return { pc, channel };
  }

  function closePeer({ pc, channel }: Peer): void {
    pc.ontrack = pc.oniceconnectionstatechange = pc.onconnectionstatechange = null;
    channel.onopen = channel.onmessage = null;
    pc.close();
  }

  const canResume = () => options.resume !== false && !closed && !resuming && callId !== null;

  async function offer(pc: RTCPeerConnection, path: string): Promise<Response> {
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(`${baseUrl}${path}`, {
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
    return res;
  }

  let peer = openPeer();
  try {
    const res = await offer(peer.pc, "/v1/realtime/calls");
    location = res.headers.get("Location");
    callId = location?.split("/").pop() ?? null;
    const answer = await res.text();
    timings.answerReceived = performance.now() - t0;
    await peer.pc.setRemoteDescription({ type: "answer", sdp: answer });
  } catch (err) {
    closePeer(peer);
    throw err;
  }

  async function checkLiveness(): Promise<void> {
    const watched = peer;
    const receiver = watched.pc.getReceivers().find((r) => r.track.kind === "audio");
    if (!receiver || resuming || closed) return;
    let count = packetsReceived;
    (await receiver.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp") count = s.packetsReceived ?? count;
    });
    // A resume may have started (and replaced the peer) while the stats were on their way.
    if (watched !== peer || resuming || closed) return;
    const now = performance.now();
    if (count !== packetsReceived) {
      if (packetsReceived === 0) unheardResumes = 0;
      packetsReceived = count;
      lastPacketAt = now;
      return;
    }
    if (lastPacketAt > 0 && now - lastPacketAt > lostAfterMs && canResume()) void resumeCall("no_audio");
  }
  if (options.resume !== false && callId !== null) {
    livenessTimer = setInterval(() => void checkLiveness().catch(() => undefined), LIVENESS_POLL_MS);
  }

  /** The relay is lost: a new peer connection, offered on the call's resume route. */
  async function resumeCall(reason: LostReason): Promise<void> {
    resuming = true;
    const lostAt = performance.now();
    const silentMs = lastPacketAt > 0 ? lostAt - lastPacketAt : 0;
    resume = { reason, lostAt, detectedAfterMs: silentMs };
    (timings.resumes ??= []).push({ lostAt: lostAt - t0 });
    emit({ type: "earshot.relay_lost", reason, silent_ms: Math.round(silentMs) });
    emit({ type: "earshot.connection", state: "resuming" });
    if (++unheardResumes > MAX_UNHEARD_RESUMES) {
      fail(
        new EarshotError(
          "The call's relay was lost and resuming did not bring audio back.",
          0,
          "resume_failed",
        ),
      );
      return;
    }
    closePeer(peer);
    peer = openPeer();
    packetsReceived = 0;
    lastPacketAt = 0;
    try {
      const res = await offer(peer.pc, `/v1/realtime/calls/${callId}/resume`);
      const answer = await res.text();
      if (closed) return;
      await peer.pc.setRemoteDescription({ type: "answer", sdp: answer });
      // Armed even before its first packet: a relay that answers and never sends is lost too.
      lastPacketAt = performance.now() + RESUME_SETUP_MS;
    } catch (err) {
      if (closed) return;
      fail(
        err instanceof EarshotError
          ? err
          : new EarshotError(`The call could not be resumed: ${(err as Error).message}`, 0, "resume_failed"),
      );
      return;
    }
    resuming = false;
  }

  function onResumed(event: RealtimeServerEvent): void {
    if (!resume) return;
    const now = performance.now();
    timings.resumes!.at(-1)!.resumedAt = now - t0;
    const { type: _type, ...edgeAccount } = event;
    const resumed: ResumedEvent = {
      ...edgeAccount,
      type: "earshot.resumed",
      reason: resume.reason,
      detected_after_ms: Math.round(resume.detectedAfterMs),
      resumed_after_ms: Math.round(now - resume.lostAt),
    };
    resume = null;
    emit(resumed);
  }

  /** A refused or impossible resume ends the call, saying why. */
  function fail(error: EarshotError): void {
    emit({ type: "earshot.resume_failed", status: error.status, code: error.code, message: error.message });
    shutdown();
    emit({ type: "earshot.connection", state: "failed" });
  }

  function shutdown(): void {
    closed = true;
    resuming = false;
    clearInterval(livenessTimer);
    closePeer(peer);
  }

  return {
    events,
    callId,
    timings,
    remoteStream,
    get peerConnection() {
      return peer.pc;
    },
    send(event) {
      const text = JSON.stringify(event);
      const channel = peer.channel;
      if (channel.readyState === "open") channel.send(text);
      else if (channel.readyState === "connecting" || resuming) pending.push(text);
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
      (await peer.pc.getStats()).forEach((s) => {
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
      shutdown();
      if (location) {
        await fetch(`${baseUrl}${location}`, {
          method: "DELETE",
          headers: { Authorization: `Bearer ${options.clientSecret}` },
        }).catch(() => undefined);
      }
      emit({ type: "earshot.connection", state: "closed" });
    },
  };
}
