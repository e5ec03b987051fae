// NAT rebinding: a client's public address changes mid-call (its NAT gives the flow a new port)
// and the call keeps going after a fresh consent check from the new address (werift patch 031).
// The NAT is a small UDP proxy in this process between a werift client and the relay's shared
// port; the client's offer carries no candidates, so the relay knows the client only as the
// NAT's outside address (peer-reflexive), as with a browser behind a NAT. Until the relay has
// verified the new address, media from it is dropped. In the step-1 mode (one relay process, an
// in-process relay whose bridge records what it hears) and behind the host's dispatcher
// (RELAY_PROCESSES=2, real processes and the echoing built-in agent).
import { createSocket, type Socket } from "node:dgram";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CreateCallResponse } from "../../../protocol/relay-api.ts";
import { dominantFrequency, goertzel, rms, sine } from "../../support/audio.ts";
import { EventClient } from "../../faults/fixtures.ts";
import { waitFor, waitUntil } from "../../support/loopback.ts";
import { TestPeer } from "../../support/peer.ts";
import { bootIdOf, postCall, ticketFor } from "../../support/relay-api.ts";
import { useRelay, type RelayProcess } from "../../support/relays.ts";
import { HOST_RELAYS_START_MS, startHostRelays, type HostRelays } from "./host-relays.ts";
import { RecordingBridge } from "../fixtures.ts";

const HOST = "127.0.0.1";
const STUN_BINDING_SUCCESS = 0x0101;

const bind = async (socket: Socket) => {
  await new Promise<void>((resolve) => socket.bind(0, HOST, resolve));
  return socket;
};

/**
 * A NAT for one client: the client talks to `inside`; the relay sees the flow come from the
 * current outside socket. `rebind()` moves the flow to a new outside port, as a NAT whose mapping
 * expired does. `holdStun` drops STUN both ways (media still passes), to keep the relay from
 * verifying the new address for as long as a test needs.
 */
class Nat {
  inside!: Socket;
  outside!: Socket;
  #client: [string, number] | undefined;
  holdStun = false;
  /** Binding success responses the client sent the relay from the current outside port. */
  responsesToRelay = 0;

  readonly relayPort: number;

  private constructor(relayPort: number) {
    this.relayPort = relayPort;
  }

  static async open(relayPort: number): Promise<Nat> {
    const nat = new Nat(relayPort);
    nat.inside = await bind(createSocket("udp4"));
    nat.inside.on("message", (data, from) => {
      nat.#client = [from.address, from.port];
      if (isStun(data)) {
        if (nat.holdStun) return;
        if (data.readUInt16BE(0) === STUN_BINDING_SUCCESS) nat.responsesToRelay++;
      }
      nat.outside.send(data, nat.relayPort, HOST);
    });
    await nat.rebind();
    return nat;
  }

  get insidePort(): number {
    return this.inside.address().port;
  }

  get outsidePort(): number {
    return this.outside.address().port;
  }

  async rebind(): Promise<void> {
    const old = this.outside;
    const outside = await bind(createSocket("udp4"));
    outside.on("message", (data) => {
      if (this.holdStun && isStun(data)) return;
      if (this.#client) this.inside.send(data, this.#client[1], this.#client[0]);
    });
    this.outside = outside;
    this.responsesToRelay = 0;
    old?.close();
  }

  close(): void {
    this.inside.close();
    this.outside.close();
  }
}

/** RFC 7983: a first byte of 0-3 is STUN. */
const isStun = (data: Buffer) => data.length >= 20 && data[0]! < 4;

/** Places `client`'s call through `nat`: the offer without candidates, the answer pointed at the NAT. */
async function callThrough(nat: Nat, client: TestPeer, url: string, relayId?: string): Promise<void> {
  const offer = (await client.offer()).replace(/^a=(candidate|end-of-candidates).*\r\n/gm, "");
  const ticket = await ticketFor(client.callId, offer, {}, { bootId: await bootIdOf(url), relayId });
  const response = await postCall(url, { call_id: client.callId, offer_sdp: offer, session: {} }, ticket);
  expect(response.status, await response.clone().text()).toBe(201);
  const { answer_sdp } = (await response.json()) as CreateCallResponse;
  await client.applyAnswer(
    answer_sdp.replace(
      new RegExp(
        `^(a=candidate:\\S+ 1 udp \\d+ ${HOST.replaceAll(".", "\\.")}) ${nat.relayPort} typ host`,
        "gm",
      ),
      `$1 ${nat.insidePort} typ host`,
    ),
  );
  await client.connected();
}

/** Sends `hz` up for `ms`, in time. */
const say = (client: TestPeer, hz: number, ms: number) =>
  client.sendPackets(client.encodeFrames(sine(hz, ms, 8000)));

describe("NAT rebinding on the shared port, one relay process (step-1 mux)", { timeout: 30_000 }, () => {
  const relay = useRelay({ bridgeFactory: RecordingBridge.factory, env: { RELAY_UDP_PORT: "0" } });

  it("moves the call to the new address after a consent check from it, and drops media from it before", async () => {
    const nat = await Nat.open(relay.udpMux!.port);
    try {
      const client = relay.track(new TestPeer());
      await callThrough(nat, client, relay.url);
      const bridge = RecordingBridge.of(client.callId);
      await waitFor(() => relay.calls.get(client.callId)?.state === "connected", 5000, "relay connected");
      // Audio both ways through the first mapping.
      await say(client, 400, 600);
      await waitFor(() => bridge.frames.length >= 25, 5000, "uplink through the first mapping");

      // The NAT moves the flow; no STUN gets through yet, so the new address stays unverified.
      nat.holdStun = true;
      await nat.rebind();
      const unverifiedFrom = bridge.frames.length;
      const unroutable = relay.udpMux!.stats.unroutable;
      await say(client, 900, 1000);
      expect(relay.udpMux!.stats.unroutable).toBeGreaterThan(unroutable + 25);
      // Nothing reached the bridge, or only concealment: never the tone.
      const duringHold = bridge.pcm().subarray(unverifiedFrom * 480);
      if (duringHold.length > 0) expect(goertzel(duringHold, 900)).toBeLessThan(200);

      // The client's next consent check (werift: every 4-6 s) comes from the new address.
      nat.holdStun = false;
      await waitFor(() => nat.responsesToRelay > 0, 8000, "the relay's check of the new address answered");
      await new Promise((r) => setTimeout(r, 50));
      const heardFrom = bridge.frames.length;
      await say(client, 1100, 1000);
      await waitFor(() => bridge.frames.length >= heardFrom + 40, 5000, "uplink through the new mapping");
      const heard = bridge.pcm().subarray(heardFrom * 480 + 4800);
      expect(Math.abs(dominantFrequency(heard) - 1100)).toBeLessThanOrEqual(10);
      // Downlink goes to the new address (the old outside socket is closed).
      const playedFrom = client.received.length;
      bridge.ctx.downlink.push("item_after_rebinding", 0, sine(700, 1000, 8000));
      await waitFor(
        () => client.received.length >= playedFrom + 40,
        5000,
        "downlink through the new mapping",
      );
      const played = client.decodeReceived(playedFrom).subarray(2400);
      expect(Math.abs(dominantFrequency(played) - 700)).toBeLessThanOrEqual(10);
      // Two addresses are bound to the call now, the old and the new.
      expect(relay.udpMux!.stats.addresses).toBe(2);
    } finally {
      nat.close();
    }
  });
});

describe(
  "NAT rebinding on the host's port behind the dispatcher (RELAY_PROCESSES=2)",
  { timeout: 40_000 },
  () => {
    let host: RelayProcess;
    let udpPort: number;
    let url: HostRelays["url"];
    let relayId: HostRelays["relayId"];

    beforeAll(async () => {
      ({ host, udpPort, url, relayId } = await startHostRelays());
    }, HOST_RELAYS_START_MS);

    afterAll(() => host?.stop("SIGTERM"));

    /** The first loud stretch heard from packet `from` on: its pitch and length. */
    const reply = (client: TestPeer, from: number) => {
      const pcm = client.decodeReceived(from);
      let start = 0;
      while (start + 480 < pcm.length && rms(pcm.subarray(start, start + 480)) < 1000) start += 480;
      let end = start;
      while (end + 480 <= pcm.length && rms(pcm.subarray(end, end + 480)) >= 1000) end += 480;
      return {
        hz: end > start ? dominantFrequency(pcm.subarray(start, end)) : 0,
        ms: ((end - start) / 480) * 20,
      };
    };

    it("moves the call to the new address after a consent check from it, and drops media from it before", async () => {
      const nat = await Nat.open(udpPort);
      const client = new EventClient();
      try {
        await callThrough(nat, client, url(2), relayId(2));
        await client.channelOpen();
        await client.waitEvent("session.created");
        nat.holdStun = true;
        await nat.rebind();
        // Unverified: the relay must not hear this (the echoing agent would play it back).
        const holdFrom = client.received.length;
        await client.sendPackets(
          client.encodeFrames(new Int16Array([...sine(900, 800, 8000), ...new Int16Array(24_000)])),
        );
        nat.holdStun = false;
        await waitFor(() => nat.responsesToRelay > 0, 8000, "the relay's check of the new address answered");
        expect(reply(client, holdFrom).ms).toBe(0);
        await new Promise((r) => setTimeout(r, 50));
        const from = client.received.length;
        await client.sendPackets(
          client.encodeFrames(new Int16Array([...sine(1100, 800, 8000), ...new Int16Array(24_000)])),
        );
        await waitUntil(
          "the echo through the new mapping",
          async () => reply(client, from).ms >= 400 || undefined,
          10_000,
        );
        expect(Math.abs(reply(client, from).hz - 1100)).toBeLessThanOrEqual(15);
      } finally {
        await client.close();
        nat.close();
      }
    });
  },
);
