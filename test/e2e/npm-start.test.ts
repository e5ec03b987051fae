// `npm start` as a new user runs it: the three parts come up on their ports, the relay
// registers, a call can be placed, and Ctrl-C leaves no process or port behind.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";
import { turnCredential } from "../../workers/turn.ts";
import { freePort, root, waitUntil } from "../support/loopback.ts";

const stateDir = mkdtempSync(join(tmpdir(), "earshot-start-"));
afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: "127.0.0.1" });
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });
}

it("starts edge, relay and agent together, and Ctrl-C stops them all", { timeout: 120_000 }, async () => {
  const ports = { edge: await freePort(), relay: await freePort(), agent: await freePort() };
  const given = "sk_given_by_the_user_0123456789";
  // TURN as a user configures it: a var wrangler.toml declares, and a secret it does not.
  const turn = { url: "turn:127.0.0.1:3478?transport=udp", secret: "turn-secret-from-the-environment" };
  const proc = spawn(process.execPath, ["scripts/start.ts"], {
    cwd: root,
    // Cast: wrangler's generated types pin EARSHOT_TURN_URLS in ProcessEnv to its default "".
    env: {
      ...process.env,
      EARSHOT_STATE_DIR: stateDir,
      EARSHOT_EDGE_PORT: String(ports.edge),
      RELAY_HTTP_PORT: String(ports.relay),
      AGENT_PORT: String(ports.agent),
      EARSHOT_API_KEYS: given,
      EARSHOT_TURN_URLS: turn.url,
      EARSHOT_TURN_SECRET: turn.secret,
      INFERENCE_URL: "",
    } as NodeJS.ProcessEnv,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  proc.stdout.on("data", (d: Buffer) => (output += d));
  proc.stderr.on("data", (d: Buffer) => (output += d));
  const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
  try {
    await waitUntil(
      "npm start to say it is up",
      () => output.includes("Earshot is up") || undefined,
      90_000,
      200,
    );
    // The key given in the environment wins over the generated one; the rest were generated.
    expect(output).toContain(given);
    const generated = readFileSync(join(stateDir, "local.env"), "utf8");
    expect(generated).toMatch(/EARSHOT_SIGNING_KEYS=\S+:\S{20,}/);
    expect(generated).toMatch(/EARSHOT_RELAY_SECRET=\S{20,}/);

    const edge = `http://127.0.0.1:${ports.edge}`;
    expect((await fetch(`${edge}/`)).status).toBe(200);
    // The relay registered: a call is refused for its SDP (400), not for want of a relay (503).
    const mint = await fetch(`${edge}/v1/realtime/client_secrets`, {
      method: "POST",
      headers: { Authorization: `Bearer ${given}`, "Content-Type": "application/json" },
      body: "{}",
    });
    // Every setting in the environment reached the edge: with the TURN secret it mints (no
    // 500 misconfigured) and signs TURN credentials with that secret.
    expect(mint.status).toBe(200);
    const { value, ice_servers } = (await mint.json()) as {
      value: string;
      ice_servers: { urls: string[]; username: string; credential: string }[];
    };
    expect(ice_servers).toHaveLength(1);
    expect(ice_servers[0]!.urls).toEqual([turn.url]);
    expect(ice_servers[0]!.credential).toBe(await turnCredential(turn.secret, ice_servers[0]!.username));
    // No log line shows the secret (wrangler prints a --var binding as "(hidden)").
    expect(output).not.toContain(turn.secret);
    const status = await waitUntil("the relay to register", async () => {
      const res = await fetch(`${edge}/v1/realtime/calls`, {
        method: "POST",
        headers: { Authorization: `Bearer ${value}`, "Content-Type": "application/sdp" },
        body: "not an sdp",
      });
      await res.body?.cancel();
      return res.status === 503 ? undefined : res.status;
    });
    expect(status).toBe(400);
    for (const port of Object.values(ports)) expect(await listening(port)).toBe(true);
  } finally {
    proc.kill("SIGINT");
  }
  expect(await exited).toBe(0);
  for (const port of Object.values(ports)) expect(await listening(port)).toBe(false);
  // The edge's workerd is the grandchild most likely to be orphaned: none may be left for this state dir.
  const { execFileSync } = await import("node:child_process");
  const leftovers = (() => {
    try {
      return execFileSync("pgrep", ["-f", stateDir]).toString().trim();
    } catch {
      return "";
    }
  })();
  expect(leftovers).toBe("");
});
