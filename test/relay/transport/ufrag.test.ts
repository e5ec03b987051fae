// The relay's ICE ufrags: RFC 8839 ice-chars, 16 long, naming the owning process, and a tag under
// the relay secret that any change to the ufrag or the key breaks.
import { randomBytes } from "node:crypto";
import { Message } from "werift";
import { describe, expect, it } from "vitest";
import { localUfrag } from "../../../relay/transport/stun-username.ts";
import { MAX_PROCESS_INDEX, UfragMint, ufragKey } from "../../../relay/transport/ufrag.ts";

const ICE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const key = ufragKey("a relay secret of the deployment");

describe("UfragMint", () => {
  it("mints 16 ice-chars that name their process, all different", () => {
    for (const index of [0, 1, 63, 64, 2000, MAX_PROCESS_INDEX]) {
      const mint = new UfragMint(key, index);
      const ufrags = new Set(Array.from({ length: 200 }, () => mint.mint()));
      expect(ufrags.size).toBe(200);
      for (const ufrag of ufrags) {
        expect(ufrag).toMatch(/^[A-Za-z0-9+/]{16}$/);
        expect(mint.owner(ufrag)).toBe(index);
      }
    }
  });

  it("refuses a process index past the two characters that carry it", () => {
    expect(() => new UfragMint(key, MAX_PROCESS_INDEX + 1)).toThrow(/process index/);
    expect(() => new UfragMint(key, -1)).toThrow(/process index/);
  });

  it("refuses a ufrag with any one character changed, of another key, or of the wrong shape", () => {
    const mint = new UfragMint(key, 7);
    const ufrag = mint.mint();
    for (let i = 0; i < ufrag.length; i++) {
      for (const c of ICE_CHARS) {
        if (c === ufrag[i]) continue;
        const changed = ufrag.slice(0, i) + c + ufrag.slice(i + 1);
        // The version character is checked first; the others are covered by the 30-bit tag.
        expect(mint.owner(changed), `${changed} (position ${i})`).toBeUndefined();
      }
    }
    expect(new UfragMint(ufragKey("another deployment's secret"), 7).owner(ufrag)).toBeUndefined();
    expect(mint.owner(ufrag.slice(0, 15))).toBeUndefined();
    expect(mint.owner(ufrag + "A")).toBeUndefined();
    expect(mint.owner("é".repeat(16))).toBeUndefined();
    expect(mint.owner("")).toBeUndefined();
  });
});

function bindingRequest(username: string | undefined, method = 0x001, messageClass = 0x000): Buffer {
  const m = new Message(method, messageClass);
  if (username !== undefined) m.setAttribute("USERNAME", username);
  m.setAttribute("PRIORITY", 1_853_766_911);
  m.addMessageIntegrity(Buffer.from("x".repeat(22)));
  m.addFingerprint();
  return Buffer.from(m.bytes);
}

describe("localUfrag", () => {
  it("reads the receiver's ufrag of a Binding request, wherever USERNAME sits", () => {
    expect(localUfrag(bindingRequest("relayUfrag:client"))).toBe("relayUfrag");
    const m = new Message(0x001, 0x000);
    m.setAttribute("PRIORITY", 1);
    m.setAttribute("ICE-CONTROLLING", 5n);
    m.setAttribute("USERNAME", "abc:defg");
    expect(localUfrag(Buffer.from(m.bytes))).toBe("abc");
  });

  it("finds nothing in responses, other methods, non-STUN, or USERNAMEs without a ufrag", () => {
    expect(localUfrag(bindingRequest("a:b", 0x001, 0x100))).toBeUndefined(); // success response
    expect(localUfrag(bindingRequest("a:b", 0x003))).toBeUndefined(); // TURN Allocate
    expect(localUfrag(bindingRequest(undefined))).toBeUndefined();
    expect(localUfrag(bindingRequest("nocolon"))).toBeUndefined();
    expect(localUfrag(bindingRequest(":client"))).toBeUndefined();
    expect(localUfrag(Buffer.from([0x16, 0xfe, 0xfd, ...randomBytes(40)]))).toBeUndefined(); // DTLS
    expect(localUfrag(Buffer.alloc(0))).toBeUndefined();
  });

  it("never reads past the datagram or the STUN length, however it is cut or lies", () => {
    const whole = bindingRequest("relayUfrag:client");
    for (let cut = 0; cut < whole.length; cut++) {
      const head = whole.subarray(0, cut);
      const ufrag = localUfrag(head);
      // A cut inside USERNAME finds nothing; one after it still names the ufrag.
      expect(ufrag === undefined || ufrag === "relayUfrag").toBe(true);
      if (cut < 20 + 4 + "relayUfrag:client".length) expect(ufrag).toBeUndefined();
    }
    const lying = Buffer.from(whole);
    lying.writeUInt16BE(0xfff0, 22); // USERNAME claims 65520 bytes
    expect(localUfrag(lying)).toBeUndefined();
    for (let i = 0; i < 2000; i++) {
      const noise = randomBytes(20 + (i % 100));
      noise.writeUInt16BE(0x0001, 0);
      noise.writeUInt32BE(0x2112a442, 4);
      expect(() => localUfrag(noise)).not.toThrow();
    }
  });
});
