// What an Opus packet's header says without decoding it (RFC 6716 §3.1). Only one question is
// asked on the media path: does the packet carry in-band FEC (SILK LBRR) for the one before it?
// libopus asked to decode FEC from a packet without any quietly runs concealment instead, so
// without this check every concealed frame would pass for a recovered one.

/** SILK frames per Opus frame of each duration (10/20/40/60 ms), by the TOC's config % 4. */
const SILK_FRAMES = [1, 1, 2, 3];

/**
 * True if the first frame of this mono Opus packet has its LBRR (FEC) flag set: only SILK-only
 * and hybrid packets (TOC config < 16) can. The flag is the bit after the VAD flags at the start
 * of the frame, coded with probability ½ so it sits in the first byte as is (WebRTC's
 * WebRtcOpus_PacketHasFec reads it the same way).
 */
export function opusPacketHasFec(packet: Uint8Array): boolean {
  if (packet.length < 2) return false;
  const toc = packet[0]!;
  const config = toc >> 3;
  if (config >= 16) return false; // CELT-only: no LBRR
  const silkFrames = config < 12 ? SILK_FRAMES[config & 3]! : 1; // hybrid: 10 or 20 ms
  let offset = 1;
  switch (toc & 3) {
    case 0: // one frame
    case 1: // two frames of equal size
      break;
    case 2: {
      // two frames, the first's length coded in one or two bytes
      const first = packet[1]!;
      offset = first < 252 ? 2 : 3;
      break;
    }
    case 3: {
      // a frame count byte, optional padding length, then (VBR) frame lengths
      if (packet.length < 3) return false;
      const countByte = packet[1]!;
      offset = 2;
      if (countByte & 0x40) {
        while (offset < packet.length && packet[offset] === 255) offset++;
        offset++;
      }
      if (countByte & 0x80) {
        const lengthByte = packet[offset];
        if (lengthByte === undefined) return false;
        offset += lengthByte < 252 ? 1 : 2;
      }
      break;
    }
  }
  const first = packet[offset];
  if (first === undefined) return false;
  return (first & (0x80 >> silkFrames)) !== 0;
}
