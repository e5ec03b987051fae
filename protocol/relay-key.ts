// Each relay's own credential. The edge holds one secret (EARSHOT_RELAY_SECRET) and derives from
// it a key per relay id; a relay holds only its own key (EARSHOT_RELAY_KEY), or the secret and
// derives the same key. Everything between the edge and one relay is signed with that relay's
// key: its heartbeats and events, its tickets, the edge's PATCH and DELETE to it. So a host that
// holds one relay's key can speak only as that relay.
//
//   key(relay_id) = base64url(HMAC-SHA256(secret, "earshot relay key" || relay_id))
//
// The label has a fixed length, so the concatenation is unambiguous.
import { base64url } from "./encoding.ts";
import { hmacSha256 } from "./hmac.ts";

/** Names the relay a signed request comes from, so the edge can pick the key before reading the body. */
export const RELAY_HEADER = "Earshot-Relay";

const LABEL = "earshot relay key";

/** A derived key is 32 bytes as unpadded base64url: 43 characters. */
export const RELAY_KEY_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export async function deriveRelayKey(secret: string, relayId: string): Promise<string> {
  return base64url(await hmacSha256(secret, LABEL + relayId));
}
