// Requests between the edge and relays that carry no ticket (heartbeats, call events, DELETE
// and PATCH of a call) are signed with the relay's own key (protocol/relay-key.ts):
//
//   Earshot-Signature: t=<unix seconds>,n=<nonce>,v1=<base64url HMAC-SHA256>
//
// over "t \n n \n METHOD \n path \n sha256(body)". A signature older than the skew window, or
// more than a few seconds in the future, is refused; inside the window the receiver remembers
// the nonce until `expires` (verifyRequest's answer), so a signature is accepted once.
import { base64url, fromBase64url, randomToken, sha256Hex } from "./encoding.ts";
import { hmacSha256, hmacVerify } from "./hmac.ts";
import { CLOCK_SKEW_SECONDS, MAX_FUTURE_SECONDS } from "./ticket.ts";

export const SIGNATURE_HEADER = "Earshot-Signature";

async function signingString(t: number, nonce: string, method: string, path: string, body: string) {
  return `${t}\n${nonce}\n${method.toUpperCase()}\n${path}\n${await sha256Hex(body)}`;
}

export async function signRequest(
  secret: string,
  method: string,
  path: string,
  body = "",
  nowSeconds = Math.floor(Date.now() / 1000),
): Promise<string> {
  const nonce = randomToken(12);
  const mac = await hmacSha256(secret, await signingString(nowSeconds, nonce, method, path, body));
  return `t=${nowSeconds},n=${nonce},v1=${base64url(mac)}`;
}

/** `expires`: the epoch second after which the signature no longer verifies (remember the nonce until then). */
export type SignatureVerification =
  { ok: true; nonce: string; expires: number } | { ok: false; message: string };

export async function verifyRequest(
  secret: string,
  header: string | null | undefined,
  method: string,
  path: string,
  body = "",
  nowSeconds = Math.floor(Date.now() / 1000),
): Promise<SignatureVerification> {
  if (!header) return { ok: false, message: `The ${SIGNATURE_HEADER} header is required.` };
  if (header.length > 256) return { ok: false, message: "The signature header is too long." };
  const fields = new Map(
    header.split(",").map((part) => {
      const eq = part.indexOf("=");
      return [part.slice(0, eq).trim(), part.slice(eq + 1).trim()] as const;
    }),
  );
  const t = Number(fields.get("t"));
  const nonce = fields.get("n");
  const mac = fromBase64url(fields.get("v1") ?? "");
  if (!Number.isInteger(t) || !nonce || !mac || mac.length !== 32) {
    return { ok: false, message: "The signature header is malformed." };
  }
  if (nowSeconds - t > CLOCK_SKEW_SECONDS || t - nowSeconds > MAX_FUTURE_SECONDS) {
    return { ok: false, message: "The signature is outside the allowed clock skew." };
  }
  const valid = await hmacVerify(secret, await signingString(t, nonce, method, path, body), mac);
  return valid
    ? { ok: true, nonce, expires: t + CLOCK_SKEW_SECONDS }
    : { ok: false, message: "The signature does not match." };
}
