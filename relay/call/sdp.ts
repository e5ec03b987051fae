// The few facts the relay reads from or rewrites in SDP text.

/** a=setup of the first media section (bundle: they all agree). */
export function answerSetup(sdp: string): string | undefined {
  return /^a=setup:(\w+)/m.exec(sdp)?.[1];
}

/** Direction attribute of the audio m-line, as the remote will read it. */
export function answerDirection(sdp: string): "sendrecv" | "sendonly" | "recvonly" | "inactive" | undefined {
  const audio = /^m=audio[\s\S]*?(?=^m=|(?![\s\S]))/m.exec(sdp)?.[0];
  if (!audio) return undefined;
  if (/^m=audio 0 /.test(audio)) return "inactive";
  return /^a=(sendrecv|sendonly|recvonly|inactive)\s*$/m.exec(audio)?.[1] as
    "sendrecv" | "sendonly" | "recvonly" | "inactive" | undefined;
}

/** Advertises `publicIp` in place of the bound address in candidate lines (1:1 NAT). */
export function rewriteCandidateAddress(sdp: string, boundIp: string, publicIp: string): string {
  return sdp.replace(
    /^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( .*)$/gm,
    (line, head: string, address: string, tail: string) =>
      address === boundIp ? `${head}${publicIp}${tail}` : line,
  );
}

/**
 * Drops `a=end-of-candidates` from an offer that has no UDP candidates. The edge strips
 * candidates the relay must not try (mDNS, private addresses), which can leave none at all, and
 * a client behind a UDP-blocking network offers only `tcptype active` ones, which the relay
 * (passive only) has nothing to pair with; werift then fails ICE at once instead of waiting for
 * the client's checks, which are what give the relay its peer-reflexive candidate. Without the
 * marker it waits, bounded by the connect timeout. An offer with UDP candidates keeps the
 * marker, so werift stops taking new ones as it should.
 */
export function withoutEndOfCandidates(sdp: string): string {
  if (/^a=candidate:\S+ \d+ udp /im.test(sdp)) return sdp;
  return sdp.replace(/^a=end-of-candidates\r?\n/gm, "");
}

/**
 * The offer an ICE restart applies (RFC 8840): the call's offer with the sdpfrag's new
 * credentials and candidates in place of the old ones. Undefined when the sdpfrag lacks
 * a=ice-ufrag or a=ice-pwd. A restart that trickles its candidates sends none in the sdpfrag:
 * the old offer's a=end-of-candidates must not then tell werift there are none to come.
 */
export function restartOffer(offerSdp: string, fragment: string): string | undefined {
  const ufrag = /^a=ice-ufrag:(\S+)\s*$/m.exec(fragment)?.[1];
  const pwd = /^a=ice-pwd:(\S+)\s*$/m.exec(fragment)?.[1];
  if (!ufrag || !pwd) return undefined;
  const candidates = fragment.split(/\r?\n/).filter((l) => l.startsWith("a=candidate:"));
  let offer = offerSdp
    .replace(/^a=ice-ufrag:.*$/gm, `a=ice-ufrag:${ufrag}`)
    .replace(/^a=ice-pwd:.*$/gm, `a=ice-pwd:${pwd}`)
    .replace(/^a=candidate:.*\r?\n/gm, "");
  if (candidates.length > 0) {
    offer = offer.replace(/(^m=audio.*\r?\n)/m, `$1${candidates.map((c) => `${c}\r\n`).join("")}`);
  }
  return withoutEndOfCandidates(offer);
}

/** The ICE part of an answer as an sdpfrag: credentials and candidates, each line once. */
export function iceFragment(answerSdp: string): string {
  const lines = answerSdp
    .split(/\r?\n/)
    .filter(
      (l) => l.startsWith("a=ice-ufrag:") || l.startsWith("a=ice-pwd:") || l.startsWith("a=candidate:"),
    );
  return [...new Set(lines)].join("\r\n") + "\r\n";
}

/**
 * Why an offer cannot share the relay's one UDP port, or undefined when it can. Every media
 * section must be in one BUNDLE group (RFC 9143) and multiplex RTCP (RFC 5761): otherwise werift
 * gives the call a second ICE transport with the same ufrag, and a first packet could not say
 * which one it is for.
 */
export function sharedPortProblem(offerSdp: string): string | undefined {
  const sections = offerSdp.split(/^(?=m=)/m).slice(1);
  const bundle = /^a=group:BUNDLE(?: +(.*?))?\s*$/m.exec(offerSdp)?.[1]?.split(/ +/) ?? [];
  for (const section of sections) {
    if (/^m=\S+ 0 /.test(section)) continue;
    const mid = /^a=mid:(\S+)\s*$/m.exec(section)?.[1];
    if (mid === undefined || !bundle.includes(mid))
      return "The offer must bundle all its media (a=group:BUNDLE naming every a=mid).";
    const rtp = /^m=\S+ \d+ \S*RTP/.test(section);
    if (rtp && !/^a=rtcp-mux\s*$/m.test(section))
      return "The offer must multiplex RTCP (a=rtcp-mux in every audio m-line).";
  }
  return undefined;
}
