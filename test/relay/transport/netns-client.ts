// A werift client for the namespace tests, run with `ip netns exec <ns> node netns-client.ts
// <address> <uplink Hz>`. One JSON object per line each way: it prints {offer}, reads {answer},
// prints {connected, pair} and says a tone then silence, reads {report}, prints what it heard and exits.
import { createInterface } from "node:readline";
import { dominantFrequency, sine } from "../../support/audio.ts";
import { TestPeer } from "../../support/peer.ts";

const [address, upHz] = process.argv.slice(2);
const peer = new TestPeer({ address: address! });
const say = (message: object) => process.stdout.write(`${JSON.stringify(message)}\n`);
say({ offer: await peer.offer() });
for await (const line of createInterface({ input: process.stdin })) {
  const message = JSON.parse(line) as { answer?: string; report?: true };
  if (message.answer) {
    await peer.applyAnswer(message.answer);
    await peer.connected();
    say({ connected: true, pair: peer.selectedPair() });
    // A second of tone, then a second of silence: an echoing agent takes the silence as the turn's end.
    await peer.say(new Int16Array([...sine(Number(upHz), 1000, 8000), ...new Int16Array(24_000)]));
  } else if (message.report) {
    // The second of downlink audio the test pushed: all of it, or what came within 5 s.
    const deadline = Date.now() + 5000;
    while (peer.received.length < 50 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const heard = peer.decodeReceived();
    say({ packets: peer.received.length, downHz: dominantFrequency(heard.subarray(2400)) });
    await peer.close();
    process.exit(0);
  }
}
