// The relay's ICE ufrags (RFC 8839: 4-256 ice-chars, the base64 alphabet). A ufrag names the
// relay process that owns the call and carries a tag under the relay secret, so whatever sees the
// first STUN packet of a flow on the shared port (this process's mux, or a dispatcher in front of
// several processes) can route it, and drop forged or guessed ufrags, without any call state:
//
//   ufrag = version (1) ‖ process (2, 12 bits) ‖ random (8, 48 bits) ‖ tag (5, 30 bits)
//   tag   = first 30 bits of HMAC-SHA256(K, first 11 characters)
//   K     = HKDF-SHA256(relay secret, info "earshot ice ufrag v1")
//
// The tag only routes. The owning call still checks MESSAGE-INTEGRITY with its 22+ character
// ICE password, which the tag does not replace.
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";

/** RFC 8839 ice-char: ALPHA / DIGIT / "+" / "/", which is the base64 alphabet in this order. */
const ICE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const ICE_CHAR_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < ICE_CHARS.length; i++) ICE_CHAR_VALUE[ICE_CHARS.charCodeAt(i)] = i;

export const UFRAG_LENGTH = 16;
/** The first character: format version 1, key id 0. A new format or key takes the next one. */
const VERSION = "A";
const SIGNED_LENGTH = 11;
const TAG_LENGTH = 5;
/** Process index fits in two ice-chars. */
export const MAX_PROCESS_INDEX = 64 * 64 - 1;

/** K for the ufrag tags, from the deployment's relay secret (or a relay's own key). */
export function ufragKey(secret: string): Buffer {
  return Buffer.from(hkdfSync("sha256", secret, Buffer.alloc(0), "earshot ice ufrag v1", 32));
}

export class UfragMint {
  readonly #key: Buffer;
  readonly #prefix: string;

  constructor(key: Buffer, processIndex: number) {
    if (!Number.isInteger(processIndex) || processIndex < 0 || processIndex > MAX_PROCESS_INDEX)
      throw new RangeError(`process index ${processIndex} is outside 0-${MAX_PROCESS_INDEX}`);
    this.#key = key;
    this.#prefix = VERSION + ICE_CHARS[processIndex >> 6]! + ICE_CHARS[processIndex & 63]!;
  }

  /** A fresh ufrag owned by this process. */
  mint(): string {
    let ufrag = this.#prefix;
    for (const byte of randomBytes(8)) ufrag += ICE_CHARS[byte & 63];
    return ufrag + this.#tag(ufrag);
  }

  /** The process index a ufrag names, or undefined unless it is one of ours with a valid tag. */
  owner(ufrag: string): number | undefined {
    if (ufrag.length !== UFRAG_LENGTH || ufrag[0] !== VERSION) return undefined;
    for (let i = 0; i < UFRAG_LENGTH; i++) {
      const code = ufrag.charCodeAt(i);
      if (code >= 128 || ICE_CHAR_VALUE[code]! < 0) return undefined;
    }
    const expected = Buffer.from(this.#tag(ufrag.slice(0, SIGNED_LENGTH)), "latin1");
    if (!timingSafeEqual(expected, Buffer.from(ufrag.slice(SIGNED_LENGTH), "latin1"))) return undefined;
    return (ICE_CHAR_VALUE[ufrag.charCodeAt(1)]! << 6) | ICE_CHAR_VALUE[ufrag.charCodeAt(2)]!;
  }

  #tag(signed: string): string {
    const mac = createHmac("sha256", this.#key).update(signed, "latin1").digest();
    // 30 bits: the top 6 bits of each of the first five bytes.
    let tag = "";
    for (let i = 0; i < TAG_LENGTH; i++) tag += ICE_CHARS[mac[i]! >> 2];
    return tag;
  }
}
