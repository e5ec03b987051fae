// Checks a client's SDP offer before the edge does any other work with it, and strips ICE
// candidates the relay must never try: mDNS `.local` names it cannot resolve, and private,
// loopback or link-local addresses that would point the relay at its own network.
import { MAX_OFFER_BYTES } from "../protocol/relay-api.ts";
import { ApiError } from "./errors.ts";

/** More candidates than this in one offer is refused; a browser gathers a handful. */
export const MAX_CANDIDATES = 32;
const MAX_LINE_LENGTH = 4096;

export { MAX_OFFER_BYTES };

const invalidOffer = (message: string) => new ApiError(400, "invalid_offer", message, { param: "sdp" });

export interface CheckedOffer {
  /** The offer as it is forwarded: CRLF line ends, unsafe candidates removed. */
  sdp: string;
  candidates: number;
  strippedCandidates: number;
}

export function checkOffer(text: string): CheckedOffer {
  if (text.length === 0) throw invalidOffer("The SDP offer is empty.");
  const lines = text.split(/\r?\n/);
  if (lines.at(-1) === "") lines.pop();
  if (lines[0] !== "v=0") throw invalidOffer("The body is not an SDP offer: it must start with v=0.");

  let audio = 0;
  let application = 0;
  let fingerprint = false;
  let ufrag = false;
  let pwd = false;
  let candidates = 0;
  let stripped = 0;
  const kept: string[] = [];

  for (const line of lines) {
    if (line.length > MAX_LINE_LENGTH) throw invalidOffer("An SDP line is too long.");
    if (!/^[a-z]=/.test(line)) {
      throw invalidOffer("The SDP offer has a line that is not type=value.");
    }
    // eslint-disable-next-line no-control-regex
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(line)) throw invalidOffer("The SDP offer has control characters.");
    if (line.startsWith("m=")) {
      const media = line.slice(2).split(" ")[0];
      if (media === "audio") audio++;
      else if (media === "application") application++;
      else
        throw invalidOffer(
          `The SDP offer has a ${media} m-line; only audio and a data channel are supported.`,
        );
    } else if (line.startsWith("a=fingerprint:")) {
      if (!/^a=fingerprint:[A-Za-z0-9-]+ [0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+$/.test(line)) {
        throw invalidOffer("The SDP offer has a malformed fingerprint.");
      }
      fingerprint = true;
    } else if (line.startsWith("a=ice-ufrag:")) {
      ufrag = line.length > "a=ice-ufrag:".length;
    } else if (line.startsWith("a=ice-pwd:")) {
      pwd = line.length > "a=ice-pwd:".length;
    } else if (line.startsWith("a=candidate:")) {
      candidates++;
      if (candidates > MAX_CANDIDATES)
        throw invalidOffer(`The SDP offer has more than ${MAX_CANDIDATES} ICE candidates.`);
      if (!isForwardableCandidate(line)) {
        stripped++;
        continue;
      }
    }
    kept.push(line);
  }

  if (audio !== 1) throw invalidOffer(`The SDP offer must have exactly one audio m-line, not ${audio}.`);
  if (application > 1)
    throw invalidOffer("The SDP offer may have at most one application (data channel) m-line.");
  if (!fingerprint) throw invalidOffer("The SDP offer has no DTLS fingerprint.");
  if (!ufrag || !pwd) throw invalidOffer("The SDP offer has no ice-ufrag and ice-pwd.");
  return { sdp: kept.join("\r\n") + "\r\n", candidates, strippedCandidates: stripped };
}

/**
 * Checks a trickle-ICE / ICE-restart fragment (RFC 8840) the same way: bounded, text, only
 * a= lines and m=/mid lines, with unsafe candidates removed.
 */
export function checkSdpFragment(text: string): string {
  const lines = text.split(/\r?\n/);
  if (lines.at(-1) === "") lines.pop();
  if (lines.length === 0) throw new ApiError(400, "invalid_sdpfrag", "The SDP fragment is empty.");
  let candidates = 0;
  const kept: string[] = [];
  for (const line of lines) {
    // eslint-disable-next-line no-control-regex
    if (line.length > MAX_LINE_LENGTH || !/^[am]=/.test(line) || /[\x00-\x08\x0a-\x1f\x7f]/.test(line)) {
      throw new ApiError(400, "invalid_sdpfrag", "The body is not an SDP fragment.");
    }
    if (line.startsWith("a=candidate:")) {
      if (++candidates > MAX_CANDIDATES) {
        throw new ApiError(
          400,
          "invalid_sdpfrag",
          `The SDP fragment has more than ${MAX_CANDIDATES} candidates.`,
        );
      }
      if (!isForwardableCandidate(line)) continue;
    }
    kept.push(line);
  }
  return kept.join("\r\n") + "\r\n";
}

/** `a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> …` */
export function isForwardableCandidate(line: string): boolean {
  const fields = line.slice("a=candidate:".length).split(" ");
  const address = fields[4];
  if (!address || fields.length < 8 || fields[6] !== "typ") return false;
  if (address.toLowerCase().endsWith(".local")) return false;
  if (address.includes(":")) return isPublicIpv6(address);
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(address)) return isPublicIpv4(address);
  // A hostname other than mDNS: the relay does not resolve names.
  return false;
}

function isPublicIpv4(address: string): boolean {
  const [a, b] = address.split(".").map(Number) as [number, number, number, number];
  if (address.split(".").some((part) => Number(part) > 255)) return false;
  return !(
    a === 0 ||
    a === 10 ||
    a === 127 ||
    (a === 100 && b >= 64 && b <= 127) || // carrier-grade NAT
    (a === 169 && b === 254) ||
    (a === 172 && b >= 16 && b <= 31) ||
    (a === 192 && b === 168) ||
    a >= 224 // multicast and reserved
  );
}

function isPublicIpv6(address: string): boolean {
  const lower = address.toLowerCase().replace(/^\[|\]$/g, "");
  if (lower === "::" || lower === "::1") return false;
  if (lower.startsWith("::ffff:")) return isPublicIpv4(lower.slice(7));
  const first = parseInt(lower.split(":")[0] || "0", 16);
  if ((first & 0xfe00) === 0xfc00) return false; // unique local fc00::/7
  if ((first & 0xffc0) === 0xfe80) return false; // link-local fe80::/10
  if ((first & 0xff00) === 0xff00) return false; // multicast
  return true;
}
