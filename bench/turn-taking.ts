// Turn-taking on the labelled evaluation set (test/support/turn-taking.ts), through a real relay
// process and the built-in agent, a werift client with a real RTP clock: per class, the barge-in
// rate (wanted for interruptions, false for echo, backchannels and noise) and speech onset → last
// assistant packet (p50/p95), for production defaults and for the relay's VAD without echo
// suppression, side by side.
//   npx node bench/turn-taking.ts [--repeat=1] [--only=class,class] [--configs=defaults,vad-only]
//     [--second-reply] (only the trials in a call's second reply) [--start=600] (only the trials
//     starting that far into the reply)
import { AgentServer } from "../agent/agent-server.ts";
import {
  SHOULD_BARGE_IN,
  connectTurnClient,
  evaluationSet,
  playTrial,
  type StimulusClass,
  type Trial,
  type TrialResult,
} from "../test/support/turn-taking.ts";
import { loadAverage, startBenchRelay, BENCH_SECRET } from "./lib/procs.ts";
import { summarize, table, type Summary } from "./lib/stats.ts";

export const TURN_CONFIGS = {
  defaults: {},
  "vad-only": { RELAY_ECHO_SUPPRESSION: "0" },
  "upstream-only": { RELAY_VAD: "off" },
} satisfies Record<string, Record<string, string>>;
export type TurnConfig = keyof typeof TURN_CONFIGS;

export interface ClassResult {
  trials: number;
  bargeIns: number;
  /** Barge-ins per trial: the hit rate for interruptions, the false rate for the rest. */
  bargeInRate: number;
  onsetToLastPacketMs: Summary;
  /** Longest pause in a reply that went on (a held reply resuming), ms. */
  longestPauseMs: Summary;
}

/**
 * A row of the table: a class, or a class in a call's second reply (Trial.secondReply), where the
 * echo guard starts with what the first reply showed it. Interruptions in a call's first reply
 * are split by when they start: 0.6 s in, the reply's opening can still be echoing.
 */
export type TrialGroup =
  StimulusClass | `${StimulusClass}, second reply` | "interruption, 0.6 s into the first reply";
const groupOf = (t: Trial): TrialGroup =>
  t.secondReply
    ? `${t.class}, second reply`
    : t.class === "interruption" && t.startAfterMs === 600
      ? "interruption, 0.6 s into the first reply"
      : t.class;

export interface TurnTakingResult {
  configs: Partial<Record<TurnConfig, Partial<Record<TrialGroup, ClassResult>>>>;
  failures: Partial<
    Record<TurnConfig, { name: string; class: StimulusClass; bargedIn: boolean; ms: number }[]>
  >;
  /** Trials that did not run to the end (no reply heard, say): not counted above. */
  errors: Partial<Record<TurnConfig, { name: string; class: StimulusClass; error: string }[]>>;
  load: string;
}

function classSummary(results: TrialResult[]): ClassResult {
  const barged = results.filter((r) => r.bargedIn);
  return {
    trials: results.length,
    bargeIns: barged.length,
    bargeInRate: Math.round((barged.length / results.length) * 100) / 100,
    onsetToLastPacketMs: summarize(barged.map((r) => r.onsetToLastPacketMs)),
    longestPauseMs: summarize(results.filter((r) => !r.bargedIn).map((r) => r.longestPauseMs)),
  };
}

export async function runTurnTaking(
  options: {
    repeat?: number;
    only?: StimulusClass[];
    secondReplyOnly?: boolean;
    startAfterMs?: number;
    configs?: TurnConfig[];
    log?: (line: string) => void;
  } = {},
): Promise<TurnTakingResult> {
  const log = options.log ?? (() => {});
  const set = await evaluationSet("bench");
  const trials = set.trials.filter(
    (t) =>
      (!options.only || options.only.includes(t.class)) &&
      (!options.secondReplyOnly || t.secondReply) &&
      (options.startAfterMs === undefined || t.startAfterMs === options.startAfterMs),
  );
  const result: TurnTakingResult = { configs: {}, failures: {}, errors: {}, load: loadAverage() };
  for (const config of options.configs ?? (["defaults", "vad-only"] as TurnConfig[])) {
    const agent = await AgentServer.start({ port: 0, speed: 4 });
    const relay = await startBenchRelay({ inferenceUrl: agent.url, env: TURN_CONFIGS[config] });
    const byClass = new Map<TrialGroup, TrialResult[]>();
    const failures: NonNullable<TurnTakingResult["failures"][TurnConfig]> = [];
    const errors: NonNullable<TurnTakingResult["errors"][TurnConfig]> = [];
    try {
      for (let r = 0; r < (options.repeat ?? 1); r++)
        for (const trial of trials) {
          const client = await connectTurnClient(
            relay.url,
            {},
            { secret: BENCH_SECRET, relayId: relay.relayId },
          );
          try {
            const outcome = await playTrial(client, trial).catch((error: unknown) => {
              errors.push({ name: trial.name, class: trial.class, error: String(error) });
              log(`${config} ${trial.class} ${trial.name}: ERROR ${String(error)}`);
              return null;
            });
            if (!outcome) continue;
            byClass.set(groupOf(trial), [...(byClass.get(groupOf(trial)) ?? []), outcome]);
            const wrong = outcome.bargedIn !== SHOULD_BARGE_IN.has(trial.class);
            if (wrong)
              failures.push({
                name: trial.name,
                class: trial.class,
                bargedIn: outcome.bargedIn,
                ms: Math.round(outcome.onsetToLastPacketMs),
              });
            log(
              `${config} ${trial.class} ${trial.name}: ${outcome.bargedIn ? `barge-in, last packet ${outcome.onsetToLastPacketMs.toFixed(0)} ms after onset` : `played on (longest pause ${outcome.longestPauseMs.toFixed(0)} ms)`}${wrong ? "  ✗" : ""}`,
            );
          } finally {
            await client.close();
          }
        }
    } finally {
      await relay.stop();
      await agent.close();
    }
    result.configs[config] = Object.fromEntries([...byClass].map(([k, v]) => [k, classSummary(v)]));
    result.failures[config] = failures;
    result.errors[config] = errors;
  }
  result.load = `${result.load} → ${loadAverage()}`;
  return result;
}

export function turnTakingTable(r: TurnTakingResult): string {
  const configs = Object.keys(r.configs) as TurnConfig[];
  const classes: TrialGroup[] = [
    "interruption",
    "interruption, 0.6 s into the first reply",
    "interruption, second reply",
    "double_talk",
    "continuation",
    "echo",
    "backchannel",
    "noise",
  ];
  const rows: (string | number)[][] = [
    [
      "class (wanted)",
      ...configs.flatMap((c) => [
        `${c}: barge-ins`,
        `${c}: onset→last p50/p95 ms (played on: longest pause p50/max)`,
      ]),
    ],
  ];
  for (const cls of classes) {
    if (!configs.some((c) => r.configs[c]?.[cls])) continue;
    rows.push([
      `${cls} (${SHOULD_BARGE_IN.has(cls.split(",")[0] as StimulusClass) ? "barge in" : "play on"})`,
      ...configs.flatMap((c) => {
        const s = r.configs[c]?.[cls];
        if (!s) return ["-", "-"];
        return [
          `${s.bargeIns}/${s.trials}`,
          s.bargeIns
            ? `${s.onsetToLastPacketMs.p50} / ${s.onsetToLastPacketMs.p95}`
            : `pause ${s.longestPauseMs.p50} / ${s.longestPauseMs.max}`,
        ];
      }),
    ]);
  }
  return table(rows);
}

if (import.meta.main) {
  const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
  const result = await runTurnTaking({
    repeat: Number(arg("repeat") ?? 1),
    only: arg("only")?.split(",") as StimulusClass[] | undefined,
    secondReplyOnly: process.argv.includes("--second-reply"),
    startAfterMs: arg("start") === undefined ? undefined : Number(arg("start")),
    configs: arg("configs")?.split(",") as TurnConfig[] | undefined,
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`${turnTakingTable(result)}\nload ${result.load}\n`);
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
}
