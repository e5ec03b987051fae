// The werift PeerConnection config every relay call uses, from the relay config. Kept apart
// from the call so the media network settings are in one place (pion's SettingEngine idea).
import { RTCRtpCodecParameters, type PeerConfig } from "werift";
import type { TcpMux } from "../transport/tcp-mux.ts";
import type { UdpMux } from "../transport/udp-mux.ts";
import type { UfragMint } from "../transport/ufrag.ts";

export interface MediaNetwork {
  /** Local IPv4 the media sockets bind to. */
  mediaIp: string;
  /** Address advertised in candidates instead of mediaIp (1:1 NAT, containers). */
  publicIp: string | undefined;
  /** Per-call sockets from this range: the fallback when there is no shared port. */
  udpPorts: [number, number];
  /** The process's shared UDP port (RELAY_UDP_PORT) and the ufrags that route to it. */
  sharedPort?: { mux: UdpMux; ufrags: UfragMint } | undefined;
  /** ICE-TCP (RELAY_TCP_PORT): the passive candidate's port and the ufrags that route to it. */
  iceTcp?: { mux: TcpMux; ufrags: UfragMint } | undefined;
  iceLite: boolean;
}

/** Opus first; PCMU and PCMA for clients that offer nothing else (RFC 7874 requires both). */
export const AUDIO_CODECS = [
  new RTCRtpCodecParameters({
    mimeType: "audio/opus",
    clockRate: 48_000,
    channels: 2,
    payloadType: 111,
    parameters: "minptime=10;useinbandfec=1",
  }),
  new RTCRtpCodecParameters({ mimeType: "audio/PCMU", clockRate: 8000, channels: 1, payloadType: 0 }),
  new RTCRtpCodecParameters({ mimeType: "audio/PCMA", clockRate: 8000, channels: 1, payloadType: 8 }),
];

/**
 * RFC 2198 redundancy over the Opus above (`111/111`: each block is Opus), put first in the
 * answer when the client offers it: Chrome sends RED only when it is the answer's first codec.
 * werift maps the PTs to the client's own if they differ.
 */
export const RED_CODEC = new RTCRtpCodecParameters({
  mimeType: "audio/red",
  clockRate: 48_000,
  channels: 2,
  payloadType: 63,
  parameters: "111/111",
});

/** Remote ICE candidates kept per call, signalled (offer, PATCH) or peer-reflexive. */
export const MAX_REMOTE_CANDIDATES = 32;

/** Largest data channel message the relay accepts (and advertises in its SDP). */
export const MAX_CLIENT_MESSAGE_BYTES = 256 * 1024;

/** `red`: answer `audio/red` (before Opus) when the client offers it. */
export function peerConfig(network: MediaNetwork, red = false): Partial<PeerConfig> {
  return {
    codecs: { audio: red ? [RED_CODEC, ...AUDIO_CODECS] : AUDIO_CODECS, video: [] },
    // werift defaults to a public STUN server; the relay has nothing to discover.
    iceServers: [],
    iceUseIpv4: true,
    iceUseIpv6: false,
    iceUseTcp: network.iceTcp !== undefined,
    iceLite: network.iceLite,
    iceInterfaceAddresses: { udp4: network.mediaIp },
    iceAdditionalHostAddresses: [network.mediaIp],
    icePortRange: network.udpPorts,
    ...(network.sharedPort && {
      iceUdpMux: network.sharedPort.mux,
      iceLocalUsername: () => network.sharedPort!.ufrags.mint(),
    }),
    ...(network.iceTcp && {
      // Passive only (RFC 6544 §4.5): the relay accepts on RELAY_TCP_PORT and never dials a
      // client's address (werift patches 035, 036).
      iceTcpPassive: true,
      iceTcpActive: false,
      iceTcpMux: network.iceTcp.mux,
      iceLocalUsername: () => network.iceTcp!.ufrags.mint(),
    }),
    // Hostile-input limits (patched werift, see patches/README.md): a client can't make the relay
    // hold or check more candidates than this, and `.local` names are not resolved (a relay has
    // no link-local peers; a browser's real address arrives as a peer-reflexive candidate).
    iceMaxRemoteCandidates: MAX_REMOTE_CANDIDATES,
    iceResolveMdns: false,
    bundlePolicy: "max-bundle",
    rtcpMuxPolicy: "require",
    maxMessageSize: MAX_CLIENT_MESSAGE_BYTES,
  };
}
