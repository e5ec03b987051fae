// The sideband's own cost on a tool call, on loopback: a real relay process bridges one werift
// call to a scripted model (test/support/scripted-model.ts) in this process, and an app server's
// sideband (plain `ws`, also here, so one clock times both ends) is attached to the call, straight
// on the relay and, with `--edge`, through `wrangler dev`'s pass-through. Per round:
//   model → server: the model sends response.function_call_arguments.done; the sideband has it;
//   server → model: the sideband sends conversation.item.create (function_call_output); the model
//   has it.
// For scale, `loopback ws hop` is one message over a bare loopback WebSocket between two sockets
// of this process: each path above is two such hops (model ⇄ relay ⇄ server) plus the relay's work.
//   npx node bench/sideband.ts [--rounds=200] [--edge]
import { performance } from "node:perf_hooks";
import { WebSocket, WebSocketServer } from "ws";
import { startEdge, startRelayProcess, waitForRelayAtEdge } from "../test/support/relays.ts";
import { TestPeer } from "../test/support/peer.ts";
import { ScriptedModel } from "../test/support/scripted-model.ts";
import { SidebandClient } from "../test/support/sideband-client.ts";
import { TEST_SECRET } from "../test/support/relay-api.ts";
import { summarize, table, type Summary } from "./lib/stats.ts";

export interface SidebandPathResult {
  path: "relay" | "edge";
  modelToServerMs: Summary;
  serverToModelMs: Summary;
}

export interface SidebandResult {
  rounds: number;
  loopbackHopMs: Summary;
  paths: SidebandPathResult[];
}

const WARM_UP = 10;

export async function runSideband(
  options: { rounds?: number; edge?: boolean } = {},
): Promise<SidebandResult> {
  const rounds = options.rounds ?? 200;
  const model = await ScriptedModel.start();
  const paths: SidebandPathResult[] = [];
  try {
    const relay = await startRelayProcess({
      secret: TEST_SECRET,
      inferenceUrl: model.url,
      env: { RELAY_VAD: "off", LOG_LEVEL: "warn" },
    });
    try {
      const peer = new TestPeer({ record: false });
      const placed = await peer.call(relay.url, {}, { relayId: relay.id });
      if (placed.status !== 201) throw new Error(`call refused: ${placed.status} ${await placed.text()}`);
      await peer.connected();
      const sideband = await SidebandClient.onRelay(relay.url, peer.callId, { relayId: relay.id });
      await sideband.opened;
      paths.push({ path: "relay", ...(await measure(model, sideband, rounds)) });
      await sideband.close();
      await peer.close();
    } finally {
      await relay.stop();
    }
    if (options.edge) paths.push({ path: "edge", ...(await throughEdge(model, rounds)) });
  } finally {
    await model.close();
  }
  return { rounds, loopbackHopMs: await loopbackHop(rounds), paths };
}

async function throughEdge(model: ScriptedModel, rounds: number) {
  const edge = await startEdge();
  try {
    const relay = await startRelayProcess({
      edge: { url: edge.url, relaySecret: edge.relaySecret },
      inferenceUrl: model.url,
      env: { RELAY_VAD: "off", LOG_LEVEL: "warn" },
    });
    try {
      await waitForRelayAtEdge(edge, relay.id);
      const peer = new TestPeer({ record: false });
      const placed = await peer.callViaEdge(edge.url, edge.apiKey);
      if (placed.status !== 201) throw new Error(`call refused: ${placed.status} ${await placed.text()}`);
      await peer.connected();
      const sideband = SidebandClient.viaEdge(edge.url, peer.edgeCallId, edge.apiKey);
      await sideband.opened;
      const result = await measure(model, sideband, rounds);
      await sideband.close();
      await peer.close();
      return result;
    } finally {
      await relay.stop();
    }
  } finally {
    await edge.stop();
  }
}

async function measure(model: ScriptedModel, sideband: SidebandClient, rounds: number) {
  const toServer: number[] = [];
  const toModel: number[] = [];
  for (let i = 0; i < rounds + WARM_UP; i++) {
    const callId = `call_bench_${i}`;
    const sent = performance.now();
    model.inject({
      type: "response.function_call_arguments.done",
      response_id: "resp_bench",
      item_id: `item_bench_${i}`,
      output_index: 0,
      call_id: callId,
      name: "lookup",
      arguments: '{"q":"x"}',
    });
    const heard = await sideband.waitFor(
      "response.function_call_arguments.done",
      (e) => e.call_id === callId,
    );
    const answered = performance.now();
    const eventId = `event_bench_${i}`;
    sideband.send({
      type: "conversation.item.create",
      event_id: eventId,
      item: { type: "function_call_output", call_id: callId, output: '{"a":1}' },
    });
    const received = await model.received("conversation.item.create", (e) => e.event_id === eventId);
    if (i >= WARM_UP) {
      toServer.push(heard.at - sent);
      toModel.push(received.at - answered);
    }
    // Let the echoes of this round (conversation.item.created) settle before the next.
    await new Promise((r) => setTimeout(r, 5));
  }
  return { modelToServerMs: summarize(toServer), serverToModelMs: summarize(toModel) };
}

/** One text message over a bare loopback WebSocket, for scale. */
async function loopbackHop(rounds: number): Promise<Summary> {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false });
  await new Promise<void>((resolve) => server.once("listening", resolve));
  const port = (server.address() as { port: number }).port;
  const accepted = new Promise<WebSocket>((resolve) => server.once("connection", resolve));
  const client = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
  await new Promise<void>((resolve) => client.once("open", () => resolve()));
  const far = await accepted;
  const samples: number[] = [];
  for (let i = 0; i < rounds + WARM_UP; i++) {
    const sent = performance.now();
    const got = new Promise<number>((resolve) => far.once("message", () => resolve(performance.now())));
    client.send(`{"type":"response.function_call_arguments.done","call_id":"call_${i}","arguments":"{}"}`);
    const at = await got;
    if (i >= WARM_UP) samples.push(at - sent);
    await new Promise((r) => setTimeout(r, 5));
  }
  client.terminate();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return summarize(samples);
}

export function sidebandTable(result: SidebandResult): string {
  const row = (label: string, s: Summary) => [label, `${s.p50} / ${s.p99} / ${s.max}`];
  return table([
    ["sideband (loopback)", "p50 / p99 / max ms"],
    ...result.paths.flatMap((p) => [
      row(`${p.path}: model function_call_arguments.done → server`, p.modelToServerMs),
      row(`${p.path}: server function_call_output → model`, p.serverToModelMs),
    ]),
    row("loopback ws hop, for scale (each path is two)", result.loopbackHopMs),
  ]);
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const rounds = Number(args.find((a) => a.startsWith("--rounds="))?.split("=")[1] ?? 200);
  const result = await runSideband({ rounds, edge: args.includes("--edge") });
  process.stdout.write(`${sidebandTable(result)}\n`);
  process.exit(0);
}
