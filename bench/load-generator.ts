// Load generator process for the capacity benchmark: many werift clients in one process, each
// sending a 20 ms Opus packet every 20 ms and counting what comes back. Driven over IPC by
// bench/capacity.ts (which pins it to a core other than the relay's).
//   npx node bench/load-generator.ts [converse|tone]
// `converse` (the default): each client takes turns, as a user does: an utterance (eSpeak),
// then silence while the assistant answers, and every third turn it talks over the answer
// (a barge-in) 2 s after its own turn ended. Clients start at different points of the cycle.
// `tone`: each client talks all the time (a 440 Hz tone), the old capacity load.
//   {cmd:"connect", count, target} → {connected, failed}
//   {cmd:"stats"} → {clients, packetsIn, packetsOut, gaps, lateTicks, ticks}
//   {cmd:"close"} → closes every client and exits.
import { performance } from "node:perf_hooks";
import { SpeechSynthesizer } from "../agent/tts.ts";
import { FRAME_SAMPLES } from "../relay/media/audio-format.ts";
import { opus } from "../test/support/audio.ts";
import { BenchClient, type RelayTarget } from "./lib/bench-client.ts";

type Command = { cmd: "connect"; count: number; target: RelayTarget } | { cmd: "stats" } | { cmd: "close" };

const converse = process.argv[2] !== "tone";
/** Frames a client listens before its next turn (the reply is about 4 s, after 0.5 s of silence). */
const LISTEN_FRAMES = 300;
/** Frames into listening at which a barge-in starts: the reply is playing then. */
const BARGE_IN_FRAMES = 100;
const BARGE_IN_EVERY = 3;

/** One utterance as 20 ms Opus packets, and one packet of silence; shared by every client. */
async function conversationPackets(): Promise<{ speech: Buffer[]; silence: Buffer }> {
  const pcm = await new SpeechSynthesizer().speak("Can you tell me when the next train to the city leaves?");
  const encoder = new opus.OpusEncoder(24_000, 1, 2048);
  const speech: Buffer[] = [];
  for (let at = 0; at + FRAME_SAMPLES <= pcm.length; at += FRAME_SAMPLES)
    speech.push(encoder.encode(Buffer.from(pcm.buffer, pcm.byteOffset + at * 2, FRAME_SAMPLES * 2)));
  return { speech, silence: encoder.encode(Buffer.alloc(FRAME_SAMPLES * 2)) };
}
// Synthesised while the first clients connect (the IPC handler must be listening at once).
const packetsReady = converse ? conversationPackets() : undefined;
let packets: { speech: Buffer[]; silence: Buffer } | undefined;

/** A client's place in the conversation: speaking (packet index) or listening (frames since). */
class Talker {
  #speechAt = -1;
  #listened = 0;
  #turn = 0;

  readonly client: BenchClient;

  constructor(client: BenchClient, start: number) {
    this.client = client;
    // Spread the clients over the cycle, as independent users are.
    this.#listened = start % LISTEN_FRAMES;
  }

  sendFrame(): void {
    const { speech, silence } = packets!; // set before any client connects
    if (this.#speechAt >= 0) {
      this.client.send(speech[this.#speechAt++]!);
      if (this.#speechAt === speech.length) {
        this.#speechAt = -1;
        this.#listened = 0;
        this.#turn++;
      }
      return;
    }
    this.client.send(silence);
    const bargeIn = this.#turn % BARGE_IN_EVERY === BARGE_IN_EVERY - 1;
    if (++this.#listened >= (bargeIn ? BARGE_IN_FRAMES : LISTEN_FRAMES)) this.#speechAt = 0;
  }
}

const clients: BenchClient[] = [];
const talkers: Talker[] = [];
let ticks = 0;
let lateTicks = 0;
const origin = performance.now();

// One drift-free 20 ms clock for all clients, like the relay's pacer.
function schedule(): void {
  const delay = origin + (ticks + 1) * 20 - performance.now();
  setTimeout(tick, Math.max(0, delay));
}
function tick(): void {
  ticks++;
  if (performance.now() - (origin + ticks * 20) > 20) lateTicks++;
  if (converse) for (const t of talkers) t.sendFrame();
  else for (const c of clients) c.sendFrame();
  schedule();
}
schedule();

async function connect(count: number, target: RelayTarget): Promise<{ connected: number; failed: number }> {
  packets ??= await packetsReady;
  let connected = 0;
  let failed = 0;
  // A few at a time: setup is not what this measures, and a burst of DTLS handshakes would be.
  for (let i = 0; i < count; i += 4) {
    await Promise.all(
      Array.from({ length: Math.min(4, count - i) }, async () => {
        // One retry: a rare DTLS failure under load is a setup problem, not a capacity limit
        // (bench/setup.ts counts those); it is reported on stderr either way.
        for (let attempt = 0; attempt < 2; attempt++) {
          const client = new BenchClient();
          try {
            await client.connect(target);
            clients.push(client);
            talkers.push(new Talker(client, clients.length * 37));
            connected++;
            return;
          } catch (error) {
            process.stderr.write(`connect failed: ${(error as Error).message}\n`);
            await client.close().catch(() => {});
          }
        }
        failed++;
      }),
    );
  }
  return { connected, failed };
}

process.on("message", (message: Command) => {
  void (async () => {
    switch (message.cmd) {
      case "connect":
        process.send!(await connect(message.count, message.target));
        return;
      case "stats": {
        let packetsIn = 0;
        let packetsOut = 0;
        let gaps = 0;
        for (const c of clients) {
          packetsIn += c.packetsIn;
          packetsOut += c.packetsOut;
          gaps += c.gaps;
        }
        process.send!({ clients: clients.length, packetsIn, packetsOut, gaps, lateTicks, ticks });
        return;
      }
      case "close":
        await Promise.all(clients.map((c) => c.close().catch(() => {})));
        process.exit(0);
    }
  })();
});
process.on("disconnect", () => process.exit(0));
