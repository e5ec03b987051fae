// Forged STUN Binding requests: what an attacker who has seen (or guessed) a call's ufrags can
// send at a relay's UDP port. Each lacks something a real check has: MESSAGE-INTEGRITY under the
// relay's password for the relay's ufrag, intact. Used by the hostile UDP and shared-port tests.
import { Message } from "werift";

export interface IceCredentials {
  relayUfrag: string;
  relayPwd: string;
  clientUfrag: string;
  clientPwd: string;
}

const BINDING = 0x001;
const ALLOCATE = 0x003;
const REQUEST = 0x000;

export interface Forgery {
  name: string;
  bytes: Buffer;
}

export function request(
  attrs: { username?: string; key?: string; useCandidate?: boolean; method?: number },
  after?: (bytes: Buffer) => Buffer,
): Buffer {
  const m = new Message(attrs.method ?? BINDING, REQUEST);
  if (attrs.username !== undefined) m.setAttribute("USERNAME", attrs.username);
  m.setAttribute("PRIORITY", 1_853_766_911);
  m.setAttribute("ICE-CONTROLLING", 0x1234_5678_9abc_def0n);
  if (attrs.useCandidate) m.setAttribute("USE-CANDIDATE", null);
  if (attrs.key !== undefined) m.addMessageIntegrity(Buffer.from(attrs.key, "utf8"));
  m.addFingerprint();
  const bytes = Buffer.from(m.bytes);
  return after ? after(bytes) : bytes;
}

export function forgeries(c: IceCredentials): Forgery[] {
  const username = `${c.relayUfrag}:${c.clientUfrag}`;
  return [
    { name: "no USERNAME, no MESSAGE-INTEGRITY", bytes: request({}) },
    { name: "right USERNAME, no MESSAGE-INTEGRITY", bytes: request({ username }) },
    {
      name: "right USERNAME, integrity with a wrong password",
      bytes: request({ username, key: "x".repeat(22) }),
    },
    {
      name: "right USERNAME, integrity with the client's password",
      bytes: request({ username, key: c.clientPwd }),
    },
    {
      name: "unknown ufrag, integrity with the relay's password",
      bytes: request({ username: `zzzz:${c.clientUfrag}`, key: c.relayPwd }),
    },
    {
      name: "USERNAME reversed",
      bytes: request({ username: `${c.clientUfrag}:${c.relayUfrag}`, key: c.relayPwd }),
    },
    { name: "USERNAME without a colon", bytes: request({ username: c.relayUfrag, key: c.relayPwd }) },
    { name: "empty USERNAME", bytes: request({ username: "", key: c.relayPwd }) },
    {
      name: "signed, then PRIORITY tampered",
      bytes: request({ username, key: c.relayPwd }, (b) => {
        const out = Buffer.from(b);
        out[27] = out[27]! ^ 0xff; // inside the PRIORITY value (header 20 + USERNAME attr + 4)
        return out;
      }),
    },
    {
      name: "nomination (USE-CANDIDATE) without credentials",
      bytes: request({ username, useCandidate: true }),
    },
    { name: "TURN Allocate without credentials", bytes: request({ method: ALLOCATE }) },
    {
      name: "TURN Allocate with a wrong password",
      bytes: request({ method: ALLOCATE, username, key: "nope" }),
    },
    { name: "integrity with an empty password", bytes: request({ username, key: "" }) },
  ];
}
