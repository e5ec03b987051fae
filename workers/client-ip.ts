// Which per-IP bucket a request counts against. On Cloudflare, CF-Connecting-IP is the client's
// address as Cloudflare saw it: Cloudflare sets it, whatever the client sent. Off Cloudflare
// (`wrangler dev`, the tests; EARSHOT_DEV=1 is the code's sign of that, as for the geo header) it
// is whatever the client sent: miniflare fills in the socket's address only when the header is
// missing, so the Worker cannot tell the two apart, and rotating the header escaped the limit.
// There every request counts against one local bucket.
import type { EdgeConfig } from "./config.ts";

const LOCAL_BUCKET = "ip:local";

export function ipBucket(config: EdgeConfig, request: Request): string {
  if (config.dev) return LOCAL_BUCKET;
  const address = request.headers.get("cf-connecting-ip")?.trim().toLowerCase();
  if (!address) return "ip:unknown";
  return `ip:${address.includes(":") ? (ipv6Bucket(address) ?? address) : address}`;
}

/**
 * An IPv6 client's /64 (`2001:db8:1:2::/64`): one subscriber is usually given at least a whole
 * /64, so counting each address would give them 2^64 buckets. An IPv4-mapped address is its IPv4
 * address. Undefined for text that is not an IPv6 address.
 */
export function ipv6Bucket(address: string): string | undefined {
  const words = ipv6Words(address.split("%")[0]!);
  if (!words) return undefined;
  if (words.slice(0, 5).every((word) => word === 0) && words[5] === 0xffff) {
    return [words[6]! >> 8, words[6]! & 0xff, words[7]! >> 8, words[7]! & 0xff].join(".");
  }
  return `${words
    .slice(0, 4)
    .map((word) => word.toString(16))
    .join(":")}::/64`;
}

/** The eight 16-bit words of an IPv6 address in text form (RFC 4291 section 2.2). */
function ipv6Words(text: string): number[] | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groupsOf = (part: string) => (part === "" ? [] : part.split(":"));
  const head = groupsOf(halves[0]!);
  const tail = halves.length === 2 ? groupsOf(halves[1]!) : [];
  // A dotted IPv4 address may end the text, standing for the last two words.
  const last = tail.length > 0 ? tail : head;
  const dotted = last.at(-1)?.includes(".") ? last.pop()!.split(".") : undefined;
  if (dotted) {
    if (
      dotted.length !== 4 ||
      !dotted.every((part) => /^(0|[1-9]\d{0,2})$/.test(part) && Number(part) < 256)
    ) {
      return undefined;
    }
    const [a, b, c, d] = dotted.map(Number) as [number, number, number, number];
    last.push(((a << 8) | b).toString(16), ((c << 8) | d).toString(16));
  }
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  if (!groups.every((group) => /^[0-9a-f]{1,4}$/.test(group))) return undefined;
  return groups.map((group) => parseInt(group, 16));
}
