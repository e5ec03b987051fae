import { constantTimeEqual, utf8 } from "./encoding.ts";

// CryptoKey import costs more than the HMAC itself; keep one per secret.
const keyCache = new Map<string, Promise<CryptoKey>>();

function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keyCache.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", utf8(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
      "verify",
    ]);
    if (keyCache.size > 16) keyCache.clear();
    keyCache.set(secret, key);
  }
  return key;
}

export async function hmacSha256(secret: string, message: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign("HMAC", await hmacKey(secret), utf8(message)));
}

export async function hmacVerify(secret: string, message: string, mac: Uint8Array): Promise<boolean> {
  const expected = await hmacSha256(secret, message);
  return constantTimeEqual(expected, mac);
}
