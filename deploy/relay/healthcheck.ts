// The image's HEALTHCHECK (and anyone's liveness probe): exits 0 when every relay on this host
// (one, or each of RELAY_PROCESSES on its own port) answers GET /healthz with 200 (also while
// draining), else 1. It reads the relay's own configuration, so it checks the ports the relays
// use. Over HTTPS when RELAY_TLS_CERT is set; the certificate names the public host, not
// 127.0.0.1, so it is not checked here.
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { loadConfig, type RelayConfig } from "../../relay/config.ts";

let config: RelayConfig;
try {
  config = loadConfig();
} catch {
  process.exit(1);
}
const ports = config.processes.length > 0 ? config.processes.map((p) => p.httpPort) : [config.httpPort];
const request = config.tls ? httpsRequest : httpRequest;

function healthy(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(
      { host: "127.0.0.1", port, path: "/healthz", method: "GET", timeout: 2000, rejectUnauthorized: false },
      (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(false));
    req.end();
  });
}

process.exit((await Promise.all(ports.map(healthy))).every(Boolean) ? 0 : 1);
