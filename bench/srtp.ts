// werift's per-packet SRTP and RTP cost, both profiles: protect (serialize + encrypt) and
// unprotect (decrypt + parse) a 100-byte Opus-sized payload. Compare with and without the
// patches (patches/README.md). Usage: npx node bench/srtp.ts [packets]
import { performance } from "node:perf_hooks";
import {
  ProtectionProfileAeadAes128Gcm,
  ProtectionProfileAes128CmHmacSha1_80,
  RtpHeader,
  SrtpSession,
} from "werift";

const packets = Number(process.argv[2] ?? 20_000);
const keys = {
  localMasterKey: Buffer.alloc(16, 1),
  localMasterSalt: Buffer.alloc(12, 2),
  remoteMasterKey: Buffer.alloc(16, 1),
  remoteMasterSalt: Buffer.alloc(12, 2),
};
const payload = Buffer.alloc(100, 7);
for (const [name, profile] of [
  ["AEAD_AES_128_GCM", ProtectionProfileAeadAes128Gcm],
  ["AES128_CM_HMAC_SHA1_80", ProtectionProfileAes128CmHmacSha1_80],
] as const) {
  const tx = new SrtpSession({ keys, profile });
  const rx = new SrtpSession({ keys, profile });
  const protectedPackets: Buffer[] = [];
  let t = performance.now();
  for (let i = 0; i < packets; i++) {
    const header = new RtpHeader({
      sequenceNumber: i & 0xffff,
      timestamp: i * 960,
      ssrc: 1234,
      payloadType: 111,
    });
    protectedPackets.push(tx.encrypt(payload, header));
  }
  const encryptUs = ((performance.now() - t) * 1000) / packets;
  t = performance.now();
  for (const p of protectedPackets) rx.decrypt(p);
  const decryptUs = ((performance.now() - t) * 1000) / packets;
  t = performance.now();
  for (const p of protectedPackets) RtpHeader.deSerialize(p);
  const parseUs = ((performance.now() - t) * 1000) / packets;
  process.stdout.write(
    `${name}: protect ${encryptUs.toFixed(1)} µs, unprotect ${decryptUs.toFixed(1)} µs, RTP header parse ${parseUs.toFixed(2)} µs per packet\n`,
  );
}
