// The demo page: one button, the conversation, and what the call is doing.
import { connect, EarshotError, type RealtimeCall, type RealtimeServerEvent } from "./earshot-client.ts";
import { QualityPanel } from "./quality-panel.ts";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const talk = $<HTMLButtonElement>("talk");
const status = $("status");
const errorBox = $("error");
const bargeIn = $("barge-in");
const eventsList = $<HTMLOListElement>("events");
const transcript = $<HTMLOListElement>("transcript");
const remoteAudio = $<HTMLAudioElement>("remote-audio");

let call: RealtimeCall | null = null;
let mic: MediaStream | null = null;
let audioContext: AudioContext | null = null;
let meterTimer = 0;
const quality = new QualityPanel($<HTMLCanvasElement>("quality-chart"), $("quality-figures"));

/** Exposed for the browser tests: the levels the meters show, and the events seen. */
const demoState = {
  inputLevel: 0,
  outputLevel: 0,
  peakOutputLevel: 0,
  events: [] as string[],
  bargeIns: 0,
  quality: quality.samples,
};
(window as unknown as { earshotDemo: typeof demoState }).earshotDemo = demoState;

function showError(message: string): void {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function setTiming(id: string, ms: number | undefined): void {
  if (ms !== undefined) $(id).textContent = ms.toFixed(0);
}

function logEvent(event: RealtimeServerEvent): void {
  demoState.events.push(event.type);
  const li = document.createElement("li");
  li.textContent = event.type === "earshot.connection" ? `connection: ${String(event.state)}` : event.type;
  eventsList.prepend(li);
  while (eventsList.children.length > 200) eventsList.lastChild!.remove();
}

const agentLines = new Map<string, HTMLLIElement>();
function onEvent(event: RealtimeServerEvent): void {
  logEvent(event);
  switch (event.type) {
    case "input_audio_buffer.speech_started":
      status.textContent = "Listening…";
      break;
    case "output_audio_buffer.started":
      status.textContent = "Agent speaking";
      bargeIn.hidden = true;
      break;
    case "output_audio_buffer.cleared":
      demoState.bargeIns++;
      bargeIn.hidden = false;
      status.textContent = "Interrupted";
      break;
    case "response.output_audio_transcript.delta": {
      const id = String(event.item_id ?? "");
      let li = agentLines.get(id);
      if (!li) {
        li = document.createElement("li");
        agentLines.set(id, li);
        transcript.append(li);
      }
      li.textContent += String(event.delta ?? "");
      break;
    }
    case "conversation.item.input_audio_transcription.completed": {
      const li = document.createElement("li");
      li.className = "user";
      li.textContent = String(event.transcript ?? "");
      transcript.append(li);
      break;
    }
    case "error":
      showError(`The agent reported an error: ${String((event.error as { message?: string })?.message)}`);
      break;
    case "earshot.relay_lost":
      status.textContent = "Reconnecting…";
      break;
    case "earshot.resumed":
      // The new relay's track is a new source for the output meter.
      if (call) attachOutputMeter(call.remoteStream);
      status.textContent = `Reconnected after ${String(event.resumed_after_ms)} ms: say something`;
      break;
    case "earshot.resume_failed":
      showError(`The call's relay was lost and the call could not resume: ${String(event.message)}`);
      void stop();
      break;
    case "earshot.connection":
      if (event.state === "failed" || event.state === "disconnected") {
        if (errorBox.hidden) showError("The call dropped: the connection to the relay was lost.");
        void stop();
      }
      break;
  }
}

function level(analyser: AnalyserNode, buf: Float32Array<ArrayBuffer>): number {
  analyser.getFloatTimeDomainData(buf);
  let sum = 0;
  for (const x of buf) sum += x * x;
  return Math.min(1, Math.sqrt(sum / buf.length) * 4);
}

let outAnalyser: AnalyserNode | null = null;
let outSource: MediaStreamAudioSourceNode | null = null;
function attachOutputMeter(output: MediaStream): void {
  if (!audioContext || !outAnalyser || output.getAudioTracks().length === 0) return;
  outSource?.disconnect();
  outSource = audioContext.createMediaStreamSource(output);
  outSource.connect(outAnalyser);
}

function startMeters(input: MediaStream, output: MediaStream): void {
  audioContext = new AudioContext();
  const inAnalyser = audioContext.createAnalyser();
  outAnalyser = audioContext.createAnalyser();
  const outAnalyserNode = outAnalyser;
  audioContext.createMediaStreamSource(input).connect(inAnalyser);
  attachOutputMeter(output);
  const buf = new Float32Array(inAnalyser.fftSize);
  const inMeter = $<HTMLMeterElement>("input-level");
  const outMeter = $<HTMLMeterElement>("output-level");
  meterTimer = window.setInterval(() => {
    demoState.inputLevel = inMeter.value = level(inAnalyser, buf);
    demoState.outputLevel = outMeter.value = level(outAnalyserNode, buf);
    demoState.peakOutputLevel = Math.max(demoState.peakOutputLevel, demoState.outputLevel);
    // "First audio" is when the page first hears the agent, not when a packet was sent.
    if (!firstAudioHeard && demoState.outputLevel > 0.02) {
      firstAudioHeard = true;
      setTiming("t-audio", performance.now() - startedAt);
    }
  }, 50);
}

let startedAt = 0;
let firstAudioHeard = false;
async function start(): Promise<void> {
  errorBox.hidden = true;
  talk.disabled = true;
  status.textContent = "Connecting…";
  startedAt = performance.now();
  firstAudioHeard = false;
  for (const id of ["t-secret", "t-answer", "t-ice", "t-audio"]) $(id).textContent = "—";
  bargeIn.hidden = true;
  try {
    mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true },
    });
  } catch {
    showError("The microphone is blocked. Allow microphone access for this page and press Talk again.");
    status.textContent = "Idle";
    talk.disabled = false;
    return;
  }
  try {
    const res = await fetch("/dev/client_secret", { method: "POST" });
    if (!res.ok)
      throw new EarshotError("Could not get a client secret from /dev/client_secret.", res.status, null);
    const { value } = (await res.json()) as { value: string };
    const connectStartedAt = performance.now() - startedAt;
    setTiming("t-secret", connectStartedAt);
    // The client measures from connect(); the page shows ms from the Talk press.
    const sinceTalk = (ms: number | undefined) => (ms === undefined ? undefined : connectStartedAt + ms);
    call = await connect({
      baseUrl: location.origin,
      clientSecret: value,
      audio: mic,
      audioElement: remoteAudio,
    });
    call.events.addEventListener("event", (e) => onEvent((e as CustomEvent).detail));
    setTiming("t-answer", sinceTalk(call.timings.answerReceived));
    const showIce = () => setTiming("t-ice", sinceTalk(call?.timings.iceConnected));
    showIce();
    call.peerConnection.addEventListener("iceconnectionstatechange", showIce);
    startMeters(mic, call.remoteStream);
    quality.start(call);
    talk.textContent = "Hang up";
    talk.classList.add("live");
    status.textContent = "Connected: say something";
  } catch (err) {
    const e = err as EarshotError;
    showError(
      e.status === 503
        ? "No relay is available right now. Is the relay running? (npm start runs one.)"
        : e.status === 404 && e.message.includes("client_secret")
          ? "The dev route is off. Start the stack with npm start (EARSHOT_DEV=1)."
          : `Could not start the call: ${e.message}`,
    );
    await stop();
  } finally {
    talk.disabled = false;
  }
}

async function stop(): Promise<void> {
  window.clearInterval(meterTimer);
  quality.stop();
  await call?.hangup();
  call = null;
  mic?.getTracks().forEach((t) => t.stop());
  mic = null;
  await audioContext?.close();
  audioContext = null;
  outAnalyser = outSource = null;
  $<HTMLMeterElement>("input-level").value = $<HTMLMeterElement>("output-level").value = 0;
  demoState.inputLevel = demoState.outputLevel = 0;
  talk.textContent = "Talk";
  talk.classList.remove("live");
  status.textContent = "Idle";
}

talk.addEventListener("click", () => void (call ? stop() : start()));
