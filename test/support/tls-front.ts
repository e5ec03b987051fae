// A TLS terminator in front of a plain-http edge, for WebSocket upgrades: what Cloudflare is to a
// deployed edge, and what `wrangler dev` lacks. OpenAI's clients only open `wss:` Realtime
// sockets (openai-node forces the scheme), so a test that attaches with them connects here; the
// upgrade and everything after it are passed on byte for byte. The certificate is made here with
// openssl for 127.0.0.1; `ca` is what a client trusts to reach it.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:https";
import { connect, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { selfSignedFor127 } from "./self-signed.ts";

export interface TlsFront {
  /** `https://127.0.0.1:<port>`. */
  url: string;
  ca: string;
  close(): Promise<void>;
}

export async function startTlsFront(target: string): Promise<TlsFront> {
  const dir = mkdtempSync(join(tmpdir(), "earshot-front-"));
  const { cert: ca, key } = selfSignedFor127(dir);
  const server = createServer({ cert: ca, key }, (_req, res) => {
    res.writeHead(501, { "content-type": "text/plain" }).end("This front passes on WebSocket upgrades only.");
  });
  rmSync(dir, { recursive: true, force: true });
  const { hostname, port } = new URL(target);
  server.on("upgrade", (req, client, head) => {
    const upstream = connect(Number(port), hostname, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2)
        lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (head.length > 0) upstream.write(head);
      client.pipe(upstream).pipe(client);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    upstream.on("error", end);
    client.on("error", end);
    upstream.on("close", end);
    client.on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    ca,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
