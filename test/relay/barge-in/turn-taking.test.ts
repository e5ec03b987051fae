// The labelled turn-taking set (test/support/turn-taking.ts, its "test" size) through a real
// relay process with production defaults (Silero VAD, echo suppression) and the built-in agent;
// a werift client with a real RTP clock plays each trial and judges what it hears. Bounds are
// generous (this machine is shared and loaded); `npm run bench` measures the figures. A barge-in
// on pure echo fails outright.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentServer } from "../../../agent/agent-server.ts";
import { startRelayProcess, type RelayProcess } from "../../support/relays.ts";
import {
  connectTurnClient,
  evaluationSet,
  playTrial,
  type Trial,
  type TrialResult,
} from "../../support/turn-taking.ts";

let agent: AgentServer;
let relay: RelayProcess;
let trials: Trial[];

beforeAll(async () => {
  agent = await AgentServer.start({ port: 0, speed: 4 });
  relay = await startRelayProcess({ inferenceUrl: agent.url, env: { LOG_LEVEL: "warn" } });
  trials = (await evaluationSet("test")).trials;
}, 60_000);
afterAll(async () => {
  await relay?.stop();
  await agent?.close();
});

async function play(trial: Trial): Promise<TrialResult> {
  const client = await connectTurnClient(relay.url, {}, { relayId: relay.id });
  try {
    return await playTrial(client, trial);
  } finally {
    await client.close();
  }
}

const named = (cls: Trial["class"]) => () => trials.filter((t) => t.class === cls);

describe("turn-taking on the labelled set, production defaults", () => {
  it("pure echo (40-180 ms, -6 and -12 dB, a room, a noise bed) never barges in", async () => {
    for (const trial of named("echo")()) {
      const result = await play(trial);
      expect({ trial: trial.name, bargedIn: result.bargedIn }).toEqual({
        trial: trial.name,
        bargedIn: false,
      });
      // The whole reply reached the client.
      expect(result.heardMs).toBeGreaterThan(4000);
    }
    // An operator sees the guard at work: echo frames judged and sent upstream as silence.
    expect(await relay.metric("earshot_relay_echo_guard_frames_total", { decision: "echo" })).toBeGreaterThan(
      0,
    );
    expect(await relay.metric("earshot_relay_echo_suppressed_frames_total")).toBeGreaterThan(50);
  }, 120_000);

  it("a sentence over the reply stops it soon after the speech onset, with and without echo", async () => {
    for (const trial of [...named("interruption")(), ...named("double_talk")()]) {
      const result = await play(trial);
      expect({ trial: trial.name, bargedIn: result.bargedIn }).toEqual({ trial: trial.name, bargedIn: true });
      // The target is 100 ms p95 (bench, quiet machine); 500 ms catches a relay that waits for
      // the end of the sentence or the model's turn.
      expect(result.onsetToLastPacketMs).toBeLessThan(500);
    }
  }, 120_000);

  it('"uh huh" and a cough do not cut the reply; "yeah… but wait" does, from its onset', async () => {
    for (const trial of [...named("backchannel")(), ...named("noise")()]) {
      const result = await play(trial);
      expect({ trial: trial.name, bargedIn: result.bargedIn }).toEqual({
        trial: trial.name,
        bargedIn: false,
      });
      expect(result.heardMs).toBeGreaterThan(4000);
    }
    expect(await relay.metric("earshot_relay_barge_in_holds_total", { outcome: "resumed" })).toBeGreaterThan(
      0,
    );
    const [continuation] = named("continuation")();
    const result = await play(continuation!);
    expect(result.bargedIn).toBe(true);
    // Held at the backchannel's onset; if the pause after "yeah" (eSpeak's silence plus 150 ms)
    // outlasts RESUME_SILENCE_MS the reply resumes, and stops again as the user goes on: within
    // the backchannel's own length (0.64 s) of the target, and generous for a loaded machine.
    expect(result.onsetToLastPacketMs).toBeLessThan(1200);
  }, 120_000);
});
