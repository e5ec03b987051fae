// What a user notices when a call outlives its relay or its model session (issue 18), on
// loopback with real processes: `wrangler dev` for the edge, relay processes, a werift caller,
// and a scripted model (test/support/scripted-model.ts) in this process.
//   resume: per run, a call through the edge has one turn and falls idle (only the relay's
//     keepalive flows); its relay gets SIGKILL; the caller notices as the client library does
//     (web/src/earshot-client.ts: no packet for LOST_AFTER_MS, looked at every
//     LIVENESS_POLL_MS), offers on POST /v1/realtime/calls/{id}/resume, and on
//     `earshot.call.resumed` asks for a reply. Measured from the kill: the loss noticed, the
//     resume's 201, ICE+DTLS connected, the resumed event, and the first packet of the
//     assistant's audio from the new relay (the silence the user hears, detection included).
//     A fresh relay replaces the killed one before the next run.
//   rollover: one call on a relay with RELAY_MODEL_SESSION_MAX_SECONDS=2 asks for replies back
//     to back (1.2 s each, 1 s apart); every rollover falls between them. Every reply must
//     arrive whole: missing frames are the frames of a reply not heard (60 a reply), plus RTP
//     sequence gaps; the widest gap between packets inside a reply is reported too.
//   npx node bench/continuity.ts [--runs=10] [--replies=20]
import { performance } from "node:perf_hooks";
import { EventClient } from "../test/faults/fixtures.ts";
import {
  startEdge,
  startRelayProcess,
  waitForRelayAtEdge,
  type RelayProcess,
} from "../test/support/relays.ts";
import { isKeepalive, lastSoundAt } from "../test/support/audio.ts";
import { ScriptedModel } from "../test/support/scripted-model.ts";
import { TEST_SECRET } from "../test/support/relay-api.ts";
import { waitFor, waitUntil } from "../test/support/loopback.ts";
import { summarize, table, type Summary } from "./lib/stats.ts";

export interface ContinuityResult {
  runs: number;
  /** From the kill to the caller noticing, by the client library's rule. */
  killToDetectedMs: Summary;
  killToAnswerMs: Summary;
  killToConnectedMs: Summary;
  killToResumedEventMs: Summary;
  /** From the kill to the first packet of the assistant's reply on the new relay, detection included. */
  killToAudioMs: Summary;
  replies: number;
  rollovers: number;
  missingFrames: number;
  sequenceGaps: number;
  /** Widest gap between two packets of one reply, ms (20 when paced perfectly). */
  widestGapInReplyMs: number;
}

const FRAMES_PER_REPLY = 60;
const env = { RELAY_VAD: "off", LOG_LEVEL: "warn" };

export async function runContinuity(
  options: { runs?: number; replies?: number } = {},
): Promise<ContinuityResult> {
  const model = await ScriptedModel.start();
  try {
    const resume = await measureResume(model, options.runs ?? 10);
    const rollover = await measureRollover(model, options.replies ?? 20);
    return { ...resume, ...rollover };
  } finally {
    await model.close();
  }
}

const send = (client: EventClient, event: object) => client.channel.send(JSON.stringify(event));

/** The client library's loss detection (web/src/earshot-client.ts), with its defaults. */
const LOST_AFTER_MS = 1000;
const LIVENESS_POLL_MS = 200;

/** Resolves when `client` has heard no packet (keepalives included) for LOST_AFTER_MS. */
async function noticeLoss(client: EventClient): Promise<void> {
  for (;;) {
    await new Promise((r) => setTimeout(r, LIVENESS_POLL_MS));
    if (performance.now() - (client.received.at(-1)?.at ?? 0) > LOST_AFTER_MS) return;
  }
}

async function measureResume(model: ScriptedModel, runs: number) {
  const edge = await startEdge();
  const relays: RelayProcess[] = [];
  const startOne = async () => {
    const relay = await startRelayProcess({
      edge: { url: edge.url, relaySecret: edge.relaySecret },
      inferenceUrl: model.url,
      env,
    });
    await waitForRelayAtEdge(edge, relay.id);
    relays.push(relay);
  };
  const samples = {
    detected: [] as number[],
    answer: [] as number[],
    connected: [] as number[],
    resumed: [] as number[],
    audio: [] as number[],
  };
  const auth = { authorization: `Bearer ${edge.apiKey}` };
  try {
    await Promise.all([startOne(), startOne()]);
    for (let run = 0; run < runs; run++) {
      const caller = new EventClient();
      const placed = await caller.callViaEdge(edge.url, edge.apiKey);
      if (placed.status !== 201) throw new Error(`call refused: ${placed.status} ${await placed.text()}`);
      await caller.connected();
      await caller.channelOpen();
      await caller.waitEvent("session.created");
      const callId = caller.edgeCallId;
      send(caller, {
        type: "conversation.item.create",
        item: {
          id: `item_user_${run}`,
          type: "message",
          role: "user",
          content: [{ type: "input_text", text: "Hi." }],
        },
      });
      send(caller, { type: "response.create" });
      await caller.waitEvent("response.done", () => true, 10_000);
      await waitUntil(
        "the turn in the edge's log",
        async () => {
          const log = (await (
            await fetch(`${edge.url}/v1/realtime/calls/${callId}/log`, { headers: auth })
          ).json()) as {
            items: unknown[];
          };
          return log.items.length >= 2 || undefined;
        },
        10_000,
        50,
      );
      const view = (await (
        await fetch(`${edge.url}/v1/realtime/calls/${callId}`, { headers: auth })
      ).json()) as {
        relay: { id: string };
      };
      const serving = relays.find((r) => r.id === view.relay.id)!;
      // The reply has played out: the call is idle, as most calls are when a relay dies.
      await waitFor(() => performance.now() - lastSoundAt(caller.received) > 500, 10_000, "playout");
      const killedAt = performance.now();
      await serving.stop("SIGKILL");
      await noticeLoss(caller);
      samples.detected.push(performance.now() - killedAt);
      const resumed = new EventClient();
      const offer = await resumed.offer();
      const response = await fetch(`${edge.url}/v1/realtime/calls/${callId}/resume`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/sdp" },
        body: offer,
      });
      if (response.status !== 201)
        throw new Error(`resume refused: ${response.status} ${await response.text()}`);
      samples.answer.push(performance.now() - killedAt);
      await resumed.applyAnswer(await response.text());
      await resumed.connected();
      samples.connected.push(performance.now() - killedAt);
      const event = await resumed.waitEvent("earshot.call.resumed", () => true, 10_000);
      samples.resumed.push(event.at - killedAt);
      send(resumed, { type: "response.create" });
      // The reply's first packet (not the new relay's idle keepalive before it).
      await waitFor(
        () => resumed.received.some((p) => !isKeepalive(p)),
        10_000,
        "the reply's audio on the new relay",
      );
      samples.audio.push(resumed.received.find((p) => !isKeepalive(p))!.at - killedAt);
      await fetch(`${edge.url}/v1/realtime/calls/${callId}`, { method: "DELETE", headers: auth });
      await Promise.all([caller.close(), resumed.close()]);
      relays.splice(relays.indexOf(serving), 1);
      await startOne();
    }
  } finally {
    await Promise.all(relays.map((r) => r.stop("SIGKILL")));
    await edge.stop();
  }
  return {
    runs,
    killToDetectedMs: summarize(samples.detected),
    killToAnswerMs: summarize(samples.answer),
    killToConnectedMs: summarize(samples.connected),
    killToResumedEventMs: summarize(samples.resumed),
    killToAudioMs: summarize(samples.audio),
  };
}

async function measureRollover(model: ScriptedModel, replies: number) {
  const relay = await startRelayProcess({
    secret: TEST_SECRET,
    inferenceUrl: model.url,
    env: { ...env, RELAY_MODEL_SESSION_MAX_SECONDS: "2" },
  });
  const client = new EventClient();
  try {
    const placed = await client.call(relay.url, {}, { relayId: relay.id });
    if (placed.status !== 201) throw new Error(`call refused: ${placed.status} ${await placed.text()}`);
    await client.connected();
    await client.channelOpen();
    await client.waitEvent("session.created");
    for (let n = 0; n < replies; n++) {
      const done = client.events.filter((e) => e.type === "response.done").length;
      send(client, { type: "response.create" });
      await waitFor(
        () => client.events.filter((e) => e.type === "response.done").length > done,
        10_000,
        "a reply",
      );
      await waitFor(() => performance.now() - lastSoundAt(client.received) > 1000, 10_000, "playout");
    }
    let missing = 0;
    let gaps = 0;
    let widest = 0;
    let frames = 0;
    let spurts = 0;
    const count = () => {
      if (spurts > 0) missing += Math.max(0, FRAMES_PER_REPLY - frames);
    };
    for (const [n, packet] of client.received.entries()) {
      // The idle keepalive between replies is no reply's frame; the reply after it has the marker.
      if (isKeepalive(packet)) continue;
      const previous = client.received[n - 1];
      if (!previous || packet.marker) {
        count();
        spurts++;
        frames = 0;
      } else {
        if (((packet.sequenceNumber - previous.sequenceNumber) & 0xffff) !== 1) gaps++;
        widest = Math.max(widest, packet.at - previous.at);
      }
      frames++;
    }
    count();
    missing += Math.max(0, replies - spurts) * FRAMES_PER_REPLY;
    return {
      replies,
      rollovers: client.events.filter((e) => e.type === "earshot.session.rolled_over").length,
      missingFrames: missing,
      sequenceGaps: gaps,
      widestGapInReplyMs: Math.round(widest),
    };
  } finally {
    await client.close();
    await relay.stop("SIGKILL");
  }
}

export function continuityTable(r: ContinuityResult): string {
  const row = (name: string, s: Summary, goal = "") => [name, `${s.p50} / ${s.p95} / ${s.max}`, goal];
  return table([
    ["continuity (loopback)", "p50 / p95 / max ms", "goal"],
    row(`kill → loss noticed, as the client library does (${r.runs} runs)`, r.killToDetectedMs),
    row("kill → resume answered", r.killToAnswerMs),
    row("kill → ICE+DTLS connected on the new relay", r.killToConnectedMs),
    row("kill → earshot.call.resumed", r.killToResumedEventMs),
    row("kill → assistant audio (detection included)", r.killToAudioMs, "p95 < 1500"),
    [`rollover: missing frames (${r.rollovers} rollovers, ${r.replies} replies)`, `${r.missingFrames}`, "0"],
    [
      "rollover: RTP sequence gaps / widest gap in a reply ms",
      `${r.sequenceGaps} / ${r.widestGapInReplyMs}`,
      "0 / ~20",
    ],
  ]);
}

if (import.meta.main) {
  const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
  const result = await runContinuity({
    runs: Number(arg("runs") ?? 10),
    replies: Number(arg("replies") ?? 20),
  });
  process.stdout.write(`${continuityTable(result)}\n`);
}
