// Raw UDP sockets on loopback for the tests that speak to a peer's sockets directly (forged STUN,
// DTLS and SRTP). Every socket is closed by closeRawSockets() (call it in afterEach).
import { createSocket, type Socket } from "node:dgram";

const open: Socket[] = [];

/** A raw UDP socket on 127.0.0.1 that records every datagram it receives. */
export async function rawSocket(): Promise<{ socket: Socket; port: number; received: Buffer[] }> {
  const socket = createSocket("udp4");
  open.push(socket);
  const received: Buffer[] = [];
  socket.on("message", (msg) => received.push(msg));
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return { socket, port: socket.address().port, received };
}

export function sendUdp(socket: Socket, data: Buffer, port: number): Promise<void> {
  return new Promise((resolve, reject) =>
    socket.send(data, port, "127.0.0.1", (error) => (error ? reject(error) : resolve())),
  );
}

export function closeRawSockets(): void {
  for (const socket of open.splice(0)) socket.close();
}
