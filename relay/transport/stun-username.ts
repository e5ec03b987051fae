// The one fact the shared port reads from a datagram it cannot route by address: the local ufrag
// in the USERNAME of a STUN Binding request (RFC 8489 §5, §14.3; RFC 8445 §7.2.2: USERNAME is
// "<receiver's ufrag>:<sender's ufrag>"). A walk over the attribute headers, no full parse: this
// runs on every packet from an unknown address, which is also what a flood sends.

const BINDING_REQUEST = 0x0001;
const BINDING_SUCCESS = 0x0101;
const MAGIC_COOKIE = 0x2112a442;
const HEADER_BYTES = 20;
const USERNAME = 0x0006;
/** RFC 8489 §14.3: USERNAME is under 513 bytes. */
const MAX_USERNAME_BYTES = 512;
const COLON = 0x3a;

/** The receiver's ufrag of a STUN Binding request, or undefined for anything else. */
export function localUfrag(datagram: Uint8Array): string | undefined {
  if (datagram.length < HEADER_BYTES) return undefined;
  const view = new DataView(datagram.buffer, datagram.byteOffset, datagram.byteLength);
  if (view.getUint16(0) !== BINDING_REQUEST || view.getUint32(4) !== MAGIC_COOKIE) return undefined;
  const end = Math.min(datagram.length, HEADER_BYTES + view.getUint16(2));
  for (let at = HEADER_BYTES; at + 4 <= end;) {
    const type = view.getUint16(at);
    const length = view.getUint16(at + 2);
    const value = at + 4;
    if (value + length > end) return undefined;
    if (type === USERNAME) {
      if (length > MAX_USERNAME_BYTES) return undefined;
      const colon = datagram.indexOf(COLON, value);
      if (colon <= value || colon >= value + length) return undefined;
      return Buffer.from(datagram.buffer, datagram.byteOffset + value, colon - value).toString("latin1");
    }
    at = value + length + ((4 - (length % 4)) % 4);
  }
  return undefined;
}

/**
 * Whether a datagram is a STUN Binding success response. werift sends one only to a check whose
 * MESSAGE-INTEGRITY it verified (patch 009), so one going out proves its destination spoke with
 * the call's credentials.
 */
export function isBindingSuccess(datagram: Uint8Array): boolean {
  if (datagram.length < HEADER_BYTES) return false;
  const view = new DataView(datagram.buffer, datagram.byteOffset, datagram.byteLength);
  return view.getUint16(0) === BINDING_SUCCESS && view.getUint32(4) === MAGIC_COOKIE;
}
