// A self-signed certificate for 127.0.0.1 (EC P-256, one day), made with openssl for tests that
// speak TLS on loopback: the relay's HTTPS and the TLS front before a plain-http edge.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";

export interface SelfSigned {
  certPath: string;
  keyPath: string;
  /** The certificate's PEM: what a client trusts to reach the server. */
  cert: string;
  key: string;
}

/** Writes `cert.pem` and `key.pem` into `dir` and returns them. */
export function selfSignedFor127(dir: string): SelfSigned {
  const [certPath, keyPath] = [join(dir, "cert.pem"), join(dir, "key.pem")];
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
      "-keyout",
      keyPath,
      "-out",
      certPath,
    ],
    { stdio: "ignore" },
  );
  return { certPath, keyPath, cert: readFileSync(certPath, "utf8"), key: readFileSync(keyPath, "utf8") };
}
