// Measures answer → connected for werift peers on loopback, the way the relay answers
// (setup:passive, so the offerer is the DTLS client). Usage:
//   npx node bench/werift-connect.ts [runs]
import { performance } from "node:perf_hooks";
import { RTCPeerConnection, type PeerConfig } from "werift";

const loopback: Partial<PeerConfig> = {
  iceServers: [],
  iceUseIpv6: false,
  iceInterfaceAddresses: { udp4: "127.0.0.1" },
  iceAdditionalHostAddresses: ["127.0.0.1"],
};

function connected(pc: RTCPeerConnection): Promise<void> {
  return new Promise((resolve, reject) => {
    pc.connectionStateChange.subscribe((state) => {
      if (state === "connected") resolve();
      if (state === "failed") reject(new Error("failed"));
    });
  });
}

async function once(passive: boolean): Promise<number> {
  const client = new RTCPeerConnection(loopback);
  const relay = new RTCPeerConnection(loopback);
  client.addTransceiver("audio", { direction: "sendrecv" });
  client.createDataChannel("oai-events");
  await client.setLocalDescription(await client.createOffer());
  await relay.setRemoteDescription(client.localDescription!);
  relay.getTransceivers()[0]!.setDirection("sendrecv");
  if (passive) for (const t of relay.dtlsTransports) t.role = "server";
  await relay.setLocalDescription(await relay.createAnswer());
  const both = Promise.all([connected(client), connected(relay)]);
  const t0 = performance.now();
  await client.setRemoteDescription(relay.localDescription!);
  await both;
  const ms = performance.now() - t0;
  await Promise.all([client.close(), relay.close()]);
  return ms;
}

const runs = Number(process.argv[2] ?? 10);
for (const passive of [false, true]) {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push(await once(passive));
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)]!;
  process.stdout.write(
    `${passive ? "relay setup:passive" : "relay setup:active "} answer→connected ms: median ${median.toFixed(1)}, min ${times[0]!.toFixed(1)}, max ${times.at(-1)!.toFixed(1)} (n=${runs})\n`,
  );
}
process.exit(0);
