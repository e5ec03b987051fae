// CPU per input_audio_buffer.append over a loopback WebSocket, with and without
// permessage-deflate (why the relay's upstream connection turns it off). Client and server
// share this process, so the figure is both ends together. Usage:
//   npx node bench/ws-deflate.ts
import { WebSocket, WebSocketServer } from "ws";

const MESSAGES = 3000;
// 40 ms of 24 kHz PCM16, a voiced-speech-like signal with noise, as the relay sends it.
const pcm = Buffer.alloc(1920);
for (let i = 0; i < 960; i++)
  pcm.writeInt16LE(Math.round(3000 * Math.sin(i / 5) + (Math.random() - 0.5) * 800), i * 2);
const append = `{"type":"input_audio_buffer.append","audio":"${pcm.toString("base64")}"}`;

for (const deflate of [false, true, false, true]) {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: deflate });
  await new Promise((r) => server.once("listening", r));
  let received = 0;
  const all = new Promise<void>((resolve) =>
    server.on("connection", (socket) => socket.on("message", () => ++received === MESSAGES && resolve())),
  );
  const port = (server.address() as { port: number }).port;
  const client = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: deflate });
  await new Promise((r) => client.once("open", r));
  const start = process.cpuUsage();
  for (let i = 0; i < MESSAGES; i++) {
    client.send(append);
    if (i % 50 === 49) await new Promise((r) => setImmediate(r));
  }
  await all;
  const used = process.cpuUsage(start);
  process.stdout.write(
    `permessage-deflate ${deflate ? "on " : "off"}: ${((used.user + used.system) / MESSAGES).toFixed(1)} µs CPU per append (both ends)\n`,
  );
  client.close();
  server.close();
}
