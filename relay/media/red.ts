// RFC 2198 redundant audio (`audio/red`), as Chrome sends it for Opus: one RTP payload carries
// the current frame (the primary block, last) and copies of the frames before it (redundant
// blocks, oldest first), each with its own payload type and its distance back in RTP timestamp
// units. A receiver that lost an earlier packet takes its frame from a later packet's
// redundancy, before in-band FEC or concealment are needed; a burst of losses shorter than the
// redundancy costs nothing.
//
// The header is client input: every length and payload type is checked here, and a payload that
// does not parse is refused whole rather than decoded in part. Parsing allocates nothing: the
// blocks' positions go into a reused RedBlocks.

/**
 * Most blocks one payload may carry, primary included. Chrome sends 1 + its redundancy distance
 * (1 by default, 2 at most in its field trials); RFC 2198 sets no bound.
 */
export const MAX_RED_BLOCKS = 8;
/** A redundant block header is 4 bytes, the primary's 1 (RFC 2198 §3). */
const REDUNDANT_HEADER_BYTES = 4;
/** RFC 2198's 14-bit timestamp offset and 10-bit block length. */
export const MAX_RED_TIMESTAMP_OFFSET = 0x3fff;
export const MAX_RED_BLOCK_LENGTH = 0x3ff;

/** Why a RED payload was refused; one per kind, so a call logs each kind once. */
export type RedProblem = "empty" | "too many blocks" | "header past the end" | "block past the end";

/** The blocks of one parsed RED payload, oldest first; the last is the primary. Reused. */
export class RedBlocks {
  count = 0;
  readonly payloadTypes = new Uint8Array(MAX_RED_BLOCKS);
  /** How far before the packet's own RTP timestamp each block's frame starts (0 for the primary). */
  readonly timestampOffsets = new Uint16Array(MAX_RED_BLOCKS);
  readonly starts = new Uint32Array(MAX_RED_BLOCKS);
  readonly ends = new Uint32Array(MAX_RED_BLOCKS);
}

/**
 * Reads the block headers of `payload` into `out`. Returns undefined when every block lies
 * within the payload, else what is wrong (and `out.count` is 0). It does not judge payload types
 * or offsets: a block the receiver cannot use is for the receiver to skip (RFC 2198 §5).
 */
export function parseRed(payload: Uint8Array, out: RedBlocks): RedProblem | undefined {
  out.count = 0;
  if (payload.length === 0) return "empty";
  let offset = 0;
  let count = 0;
  // Headers: F=1 (4 bytes: PT, 14-bit offset, 10-bit length) until F=0 (1 byte: PT).
  for (;;) {
    if (offset >= payload.length) return "header past the end";
    if (count === MAX_RED_BLOCKS) return "too many blocks";
    const first = payload[offset]!;
    out.payloadTypes[count] = first & 0x7f;
    if ((first & 0x80) === 0) {
      out.timestampOffsets[count] = 0;
      count++;
      offset++;
      break;
    }
    if (offset + REDUNDANT_HEADER_BYTES > payload.length) return "header past the end";
    const b1 = payload[offset + 1]!;
    const b2 = payload[offset + 2]!;
    const b3 = payload[offset + 3]!;
    out.timestampOffsets[count] = (b1 << 6) | (b2 >> 2);
    out.ends[count] = ((b2 & 0x03) << 8) | b3; // the length, for now
    count++;
    offset += REDUNDANT_HEADER_BYTES;
  }
  // Data: the redundant blocks by their lengths, the primary takes the rest.
  for (let i = 0; i < count - 1; i++) {
    const length = out.ends[i]!;
    if (offset + length > payload.length) return "block past the end";
    out.starts[i] = offset;
    out.ends[i] = offset + length;
    offset += length;
  }
  out.starts[count - 1] = offset;
  out.ends[count - 1] = payload.length;
  out.count = count;
  return undefined;
}

export interface RedBlock {
  payloadType: number;
  /** RTP timestamp units before the packet's timestamp; 0 for the primary (the last block). */
  timestampOffset: number;
  data: Uint8Array;
}

/**
 * Builds a RED payload from blocks, oldest first, the primary last: what a sender puts in the
 * packet. Off the relay's media path (werift's RTCRtpSender packetises the downlink); for test
 * clients, the bench and hostile-input tests, which may pass values past the limits.
 */
export function buildRed(blocks: readonly RedBlock[]): Uint8Array {
  let size = 0;
  for (let i = 0; i < blocks.length; i++) {
    size += (i < blocks.length - 1 ? REDUNDANT_HEADER_BYTES : 1) + blocks[i]!.data.length;
  }
  const out = new Uint8Array(size);
  let offset = 0;
  blocks.forEach((block, i) => {
    if (i === blocks.length - 1) {
      out[offset++] = block.payloadType & 0x7f;
      return;
    }
    const offsetBits = block.timestampOffset & MAX_RED_TIMESTAMP_OFFSET;
    const length = block.data.length & MAX_RED_BLOCK_LENGTH;
    out[offset] = 0x80 | (block.payloadType & 0x7f);
    out[offset + 1] = offsetBits >> 6;
    out[offset + 2] = ((offsetBits & 0x3f) << 2) | (length >> 8);
    out[offset + 3] = length & 0xff;
    offset += REDUNDANT_HEADER_BYTES;
  });
  for (const block of blocks) {
    out.set(block.data, offset);
    offset += block.data.length;
  }
  return out;
}
