// CPU per data-channel event through werift's SCTP (pure JavaScript), both ends in this process:
// what the transcript deltas and response events of a conversation cost a relay. A relay pays
// the sending end (and the client's SACKs); this measures both ends, so it is an upper bound.
// Messages go in bursts of `burst` (a model's events arrive a few at a time), each burst waited
// for at the other end before the next.
//   npx node bench/datachannel.ts [messages=5000] [burst=4]
import { RTCPeerConnection, type PeerConfig, type RTCDataChannel } from "werift";
import { round } from "./lib/stats.ts";

const loopback: Partial<PeerConfig> = {
  iceServers: [],
  iceUseIpv6: false,
  iceInterfaceAddresses: { udp4: "127.0.0.1" },
  iceAdditionalHostAddresses: ["127.0.0.1"],
};
const messages = Number(process.argv[2] ?? 5000);
const burst = Number(process.argv[3] ?? 4);

const client = new RTCPeerConnection(loopback);
const relay = new RTCPeerConnection(loopback);
const clientChannel = client.createDataChannel("oai-events");
const relayChannel = new Promise<RTCDataChannel>((resolve) => relay.onDataChannel.subscribe(resolve));
await client.setLocalDescription(await client.createOffer());
await relay.setRemoteDescription(client.localDescription!);
await relay.setLocalDescription(await relay.createAnswer());
await client.setRemoteDescription(relay.localDescription!);
const channel = await relayChannel;
await new Promise<void>((resolve) => {
  if (channel.readyState === "open") resolve();
  else channel.stateChanged.subscribe((s) => s === "open" && resolve());
});

// A transcript delta as the relay forwards it (OpenAI's shape and id lengths).
const event = JSON.stringify({
  type: "response.output_audio_transcript.delta",
  event_id: "event_CBqF3sQYhXYw5wW7YkUz1",
  response_id: "resp_CBqF3rM2Pq8p8cS3n3Zyx",
  item_id: "item_CBqF3rQ9pH2x9N3mKXbbE",
  output_index: 0,
  content_index: 0,
  delta: " platform",
});
let received = 0;
let waiting: (() => void) | undefined;
clientChannel.onMessage.subscribe(() => {
  received++;
  waiting?.();
});

async function send(count: number): Promise<number> {
  const started = process.cpuUsage();
  for (let sent = 0; sent < count; sent += burst) {
    const target = received + Math.min(burst, count - sent);
    for (let i = 0; i < Math.min(burst, count - sent); i++) channel.send(event);
    await new Promise<void>((resolve) => {
      waiting = () => received >= target && resolve();
      waiting();
    });
  }
  const used = process.cpuUsage(started);
  return used.user + used.system;
}

await send(Math.min(1000, messages)); // warm up the JIT
const us = await send(messages);
process.stdout.write(
  `${messages} events of ${event.length} bytes in bursts of ${burst}: ${round(us / messages, 1)} µs CPU per event (both ends)\n`,
);
await Promise.all([client.close(), relay.close()]);
process.exit(0);
