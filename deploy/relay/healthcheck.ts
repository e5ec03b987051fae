// The image's HEALTHCHECK (and anyone's liveness probe): exits 0 when the relay on this host
// answers GET /healthz with 200 (also while draining), else 1. Over HTTPS when RELAY_TLS_CERT is
// set; the certificate names the public host, not 127.0.0.1, so it is not checked here.
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";

const port = Number(process.env.RELAY_HTTP_PORT || 8790);
const tls = Boolean(process.env.RELAY_TLS_CERT);
const request = tls ? httpsRequest : httpRequest;

const req = request(
  { host: "127.0.0.1", port, path: "/healthz", method: "GET", timeout: 2000, rejectUnauthorized: false },
  (res) => {
    res.resume();
    process.exit(res.statusCode === 200 ? 0 : 1);
  },
);
req.on("timeout", () => req.destroy(new Error("timeout")));
req.on("error", () => process.exit(1));
req.end();
