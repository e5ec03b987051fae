// Arrange helpers for the relay tests: a bridge that records the call's side of the seam, and
// a call placed on an in-process relay (started by test/support/relays.ts) with it.
import type { CallBridge, CallBridgeFactory, CallContext } from "../../relay/bridge.ts";
import type { Call } from "../../relay/call/call.ts";
import { concat, FRAME } from "../support/audio.ts";
import { waitFor } from "../support/loopback.ts";
import { TestPeer, type PeerOptions } from "../support/peer.ts";
import type { UsedRelay } from "../support/relays.ts";

/** Records uplink frames (copied) and exposes the call context. */
export class RecordingBridge implements CallBridge {
  static instances: RecordingBridge[] = [];
  readonly frames: Int16Array[] = [];
  readonly messages: string[] = [];
  readonly playout: string[] = [];
  channelOpened = false;
  closed = 0;
  readonly ctx: CallContext;

  constructor(ctx: CallContext) {
    this.ctx = ctx;
    RecordingBridge.instances.push(this);
  }

  static factory: CallBridgeFactory = (ctx) => new RecordingBridge(ctx);

  /** The bridge of the call with this id. */
  static of(callId: string): RecordingBridge {
    return RecordingBridge.instances.find((b) => b.ctx.callId === callId)!;
  }

  onUplinkFrame(pcm: Int16Array): void {
    if (pcm.length !== FRAME) throw new Error(`frame of ${pcm.length} samples`);
    this.frames.push(pcm.slice());
  }
  onClientMessage(text: string): void {
    this.messages.push(text);
  }
  onChannelOpen(): void {
    this.channelOpened = true;
  }
  onPlayoutStarted(itemId: string): void {
    this.playout.push(`started:${itemId}`);
  }
  onPlayoutStopped(itemId: string): void {
    this.playout.push(`stopped:${itemId}`);
  }
  close(): void {
    this.closed++;
  }
  pcm(): Int16Array {
    return concat(this.frames);
  }
}

/**
 * Places a TestPeer's call on an in-process relay started with RecordingBridge.factory and
 * waits until both ends are connected; the peer is closed after the test.
 */
export async function connectRecorded(
  relay: UsedRelay,
  peer: PeerOptions = {},
): Promise<{ client: TestPeer; call: Call; bridge: RecordingBridge }> {
  const client = relay.track(new TestPeer(peer));
  const response = await client.call(relay.url);
  if (response.status !== 201) throw new Error(`call refused: ${response.status} ${await response.text()}`);
  await client.connected();
  const call = relay.calls.get(client.callId)!;
  await waitFor(() => call.state === "connected", 5000, "relay connected");
  return { client, call, bridge: RecordingBridge.of(client.callId) };
}
