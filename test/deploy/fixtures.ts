// Arrange helpers for the deployment tests: coturn as a real process, a raw STUN/TURN Allocate
// (to see exactly what coturn answers a credential), and a werift caller that places calls
// through the edge the way a browser does (client secret or API key, SDP POST, answer), built on test/support/peer.ts.
import { spawn } from "node:child_process";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { waitFor, withTimeout } from "../support/loopback.ts";
import { TestPeer, type IceServer } from "../support/peer.ts";
import { startEdge, type Edge } from "../support/relays.ts";

// ─── coturn ──────────────────────────────────────────────────────────────────────────────────

export const TURN_REALM = "earshot.test";

export interface TurnServer {
  port: number;
  url: string;
  output(): string;
  stop(): Promise<void>;
}

/**
 * Debian's coturn on 127.0.0.1 with the TURN REST API secret, no config file, no TLS/DTLS, a small
 * relay port range, logging to stdout. `--allow-loopback-peers` lets it relay to a relay on
 * 127.0.0.1 (production keeps the default, which refuses loopback peers).
 */
export async function startTurnServer(options: {
  port: number;
  secret: string;
  relayPorts: [number, number];
  pidDir: string;
}): Promise<TurnServer> {
  const args = [
    "-c",
    "/dev/null",
    "--listening-ip=127.0.0.1",
    `--listening-port=${options.port}`,
    "--relay-ip=127.0.0.1",
    `--min-port=${options.relayPorts[0]}`,
    `--max-port=${options.relayPorts[1]}`,
    "--use-auth-secret",
    `--static-auth-secret=${options.secret}`,
    `--realm=${TURN_REALM}`,
    "--allow-loopback-peers",
    "--no-cli",
    "--no-tls",
    "--no-dtls",
    "--no-tcp-relay",
    "--relay-threads=1",
    `--pidfile=${options.pidDir}/turnserver.pid`,
    "--log-file=stdout",
    "--simple-log",
    "--verbose",
  ];
  const proc = spawn("turnserver", args, { detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const append = (chunk: Buffer) => {
    output += chunk.toString();
    if (output.length > 1_000_000) output = output.slice(-500_000);
  };
  proc.stdout.on("data", append);
  proc.stderr.on("data", append);
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const server: TurnServer = {
    port: options.port,
    url: `turn:127.0.0.1:${options.port}?transport=udp`,
    output: () => output,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      process.kill(-proc.pid!, "SIGTERM");
      const timer = setTimeout(() => process.kill(-proc.pid!, "SIGKILL"), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
  try {
    // Ready once it answers a STUN Binding on its port.
    await waitFor(
      () => /relay 127\.0\.0\.1 initialization done|Total auth threads/.test(output),
      10_000,
      "coturn",
    );
    await withTimeout(stunBinding(options.port), 5000, "coturn STUN binding");
  } catch (error) {
    await server.stop();
    throw new Error(`${(error as Error).message}\n${output}`);
  }
  return server;
}

/**
 * The edge under `wrangler dev` with TURN configured. Like stack.ts's startEdge, but the TURN
 * secret goes in with `--var`: because wrangler.toml lists [secrets].required, wrangler dev loads
 * only those required names from an env file, and TURN's secret is optional, so not among them.
 * (Deployed, `wrangler secret put EARSHOT_TURN_SECRET` binds it whatever `required` says.)
 */
export function startEdgeWithTurn(turn: { urls: string; secret: string }): Promise<Edge> {
  return startEdge({ cliVars: { EARSHOT_TURN_URLS: turn.urls, EARSHOT_TURN_SECRET: turn.secret } });
}

// ─── STUN / TURN on the wire (RFC 5389, RFC 5766) ────────────────────────────────────────────

const MAGIC_COOKIE = 0x2112a442;
const BINDING_REQUEST = 0x0001;
const ALLOCATE_REQUEST = 0x0003;
const ALLOCATE_SUCCESS = 0x0103;
const ATTR = {
  USERNAME: 0x0006,
  MESSAGE_INTEGRITY: 0x0008,
  ERROR_CODE: 0x0009,
  REALM: 0x0014,
  NONCE: 0x0015,
  XOR_RELAYED_ADDRESS: 0x0016,
  REQUESTED_TRANSPORT: 0x0019,
} as const;

function attribute(type: number, value: Buffer): Buffer {
  const padded = Buffer.alloc(4 + Math.ceil(value.length / 4) * 4);
  padded.writeUInt16BE(type, 0);
  padded.writeUInt16BE(value.length, 2);
  value.copy(padded, 4);
  return padded;
}

function stunMessage(method: number, attributes: Buffer[], integrityKey?: Buffer): Buffer {
  const header = Buffer.alloc(20);
  header.writeUInt16BE(method, 0);
  header.writeUInt32BE(MAGIC_COOKIE, 4);
  randomBytes(12).copy(header, 8);
  let body = Buffer.concat(attributes);
  if (integrityKey) {
    // The length covers MESSAGE-INTEGRITY itself (24 bytes) while the HMAC covers what precedes it.
    header.writeUInt16BE(body.length + 24, 2);
    const mac = createHmac("sha1", integrityKey)
      .update(Buffer.concat([header, body]))
      .digest();
    body = Buffer.concat([body, attribute(ATTR.MESSAGE_INTEGRITY, mac)]);
  }
  header.writeUInt16BE(body.length, 2);
  return Buffer.concat([header, body]);
}

interface StunReply {
  type: number;
  attributes: Map<number, Buffer>;
}

function parseStun(packet: Buffer): StunReply {
  const attributes = new Map<number, Buffer>();
  let offset = 20;
  const end = 20 + packet.readUInt16BE(2);
  while (offset + 4 <= end) {
    const type = packet.readUInt16BE(offset);
    const length = packet.readUInt16BE(offset + 2);
    attributes.set(type, packet.subarray(offset + 4, offset + 4 + length));
    offset += 4 + Math.ceil(length / 4) * 4;
  }
  return { type: packet.readUInt16BE(0), attributes };
}

/** A UDP socket on 127.0.0.1 for request/response STUN; coturn binds a nonce to this 5-tuple. */
async function stunSocket(port: number) {
  const socket = createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return {
    async exchange(message: Buffer): Promise<StunReply> {
      const reply = new Promise<Buffer>((resolve) => socket.once("message", resolve));
      // UDP: resend until an answer comes (coturn may still be starting).
      const resend = setInterval(() => socket.send(message, port, "127.0.0.1"), 250);
      socket.send(message, port, "127.0.0.1");
      try {
        return parseStun(await withTimeout(reply, 3000, "a STUN reply"));
      } finally {
        clearInterval(resend);
      }
    },
    close: () => socket.close(),
  };
}

async function stunBinding(port: number): Promise<void> {
  const socket = await stunSocket(port);
  try {
    await socket.exchange(stunMessage(BINDING_REQUEST, []));
  } finally {
    socket.close();
  }
}

export type AllocateOutcome =
  { ok: true; relayedPort: number } | { ok: false; status: number; reason: string };

/**
 * A TURN Allocate with long-term credentials: the first, unauthenticated request earns a 401 with
 * the realm and a nonce; the second carries USERNAME, REALM, NONCE and MESSAGE-INTEGRITY keyed
 * with MD5(username:realm:password), as every TURN client does.
 */
export async function allocate(port: number, username: string, password: string): Promise<AllocateOutcome> {
  const transport = attribute(ATTR.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0]));
  const socket = await stunSocket(port);
  try {
    return await authenticatedAllocate(socket, transport, username, password);
  } finally {
    socket.close();
  }
}

async function authenticatedAllocate(
  socket: Awaited<ReturnType<typeof stunSocket>>,
  transport: Buffer,
  username: string,
  password: string,
): Promise<AllocateOutcome> {
  const challenge = await socket.exchange(stunMessage(ALLOCATE_REQUEST, [transport]));
  const realm = challenge.attributes.get(ATTR.REALM);
  const nonce = challenge.attributes.get(ATTR.NONCE);
  if (!realm || !nonce) throw new Error("coturn sent no realm/nonce challenge");
  const key = createHash("md5").update(`${username}:${realm.toString()}:${password}`).digest();
  const reply = await socket.exchange(
    stunMessage(
      ALLOCATE_REQUEST,
      [
        transport,
        attribute(ATTR.USERNAME, Buffer.from(username)),
        attribute(ATTR.REALM, realm),
        attribute(ATTR.NONCE, nonce),
      ],
      key,
    ),
  );
  if (reply.type === ALLOCATE_SUCCESS) {
    const relayed = reply.attributes.get(ATTR.XOR_RELAYED_ADDRESS);
    if (!relayed) throw new Error("Allocate success without XOR-RELAYED-ADDRESS");
    return { ok: true, relayedPort: relayed.readUInt16BE(2) ^ (MAGIC_COOKIE >>> 16) };
  }
  const error = reply.attributes.get(ATTR.ERROR_CODE);
  if (!error) throw new Error(`unexpected STUN reply type 0x${reply.type.toString(16)}`);
  return { ok: false, status: error[2]! * 100 + error[3]!, reason: error.subarray(4).toString() };
}

/** A TURN REST credential computed here with node:crypto, independently of the edge's WebCrypto code. */
export function restCredential(secret: string, username: string): string {
  return createHmac("sha1", secret).update(username).digest("base64");
}

// ─── a caller through the edge ───────────────────────────────────────────────────────────────

/** A werift peer on loopback playing the browser: offers, POSTs to the edge, plays and hears audio. */
export class Caller extends TestPeer {
  constructor(options: { iceServers?: IceServer[]; relayOnly?: boolean } = {}) {
    super(options);
  }

  /** POSTs the offer to the edge; on 201 applies the answer. */
  place(edge: Edge, bearer: string, headers: Record<string, string> = {}): Promise<Response> {
    return this.callViaEdge(edge.url, bearer, headers);
  }

  override connected(timeoutMs = 15_000): Promise<void> {
    return super.connected(timeoutMs);
  }

  /** Sends 24 kHz PCM as 20 ms Opus RTP frames, in real time. */
  send(pcm: Int16Array): Promise<void> {
    return this.say(pcm);
  }

  /** Everything heard so far, decoded to 24 kHz PCM. */
  heard(): Int16Array {
    return this.decodeReceived();
  }

  async hangUp(edge: Edge, bearer: string): Promise<void> {
    if (this.callPath) {
      const response = await fetch(`${edge.url}${this.callPath}`, {
        method: "DELETE",
        headers: { Authorization: `Bearer ${bearer}` },
      });
      await response.body?.cancel();
    }
    await this.pc.close();
  }
}

/** Ports of the candidates in an SDP, by type. */
export function candidatePorts(sdp: string, type = "host"): number[] {
  return [...sdp.matchAll(/^a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ (\w+)/gim)]
    .filter((m) => m[3] === type)
    .map((m) => Number(m[2]));
}

export async function mintClientSecret(edge: Edge): Promise<{
  value: string;
  expires_at: number;
  ice_servers: { urls: string[]; username: string; credential: string }[];
}> {
  const response = await fetch(`${edge.url}/v1/realtime/client_secrets`, {
    method: "POST",
    headers: { Authorization: `Bearer ${edge.apiKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ session: { type: "realtime", model: "gpt-realtime" } }),
  });
  if (response.status !== 200) throw new Error(`client_secrets: ${response.status} ${await response.text()}`);
  return (await response.json()) as Awaited<ReturnType<typeof mintClientSecret>>;
}

/**
 * Waits until the edge places calls on a relay in `region`: a real offer with `?region=`, hung up
 * at once. Proves the relay registered by its own heartbeat, not just that it runs.
 */
export async function waitForRegion(edge: Edge, region: string, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const probe = new Caller();
    try {
      const offer = await probe.offer();
      const response = await fetch(`${edge.url}/v1/realtime/calls?region=${region}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${edge.apiKey}`, "Content-Type": "application/sdp" },
        body: offer,
      });
      last = `${response.status} ${await response.text()}`;
      if (response.status === 201) {
        const path = response.headers.get("location")!;
        const view = (await (
          await fetch(`${edge.url}${path}`, { headers: { Authorization: `Bearer ${edge.apiKey}` } })
        ).json()) as { relay: { id: string } };
        await (
          await fetch(`${edge.url}${path}`, {
            method: "DELETE",
            headers: { Authorization: `Bearer ${edge.apiKey}` },
          })
        ).body?.cancel();
        return view.relay.id;
      }
      if (response.status !== 503) throw new Error(`probe call in ${region}: ${last}`);
    } finally {
      await probe.pc.close();
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`no relay registered in ${region} after ${timeoutMs} ms (last answer: ${last})`);
}
