// CallSession: one Durable Object per call, whose id the call id carries (`rtc_<object id>`, from
// `newUniqueId()`; see object-ids.ts). It owns the call's state machine, its relay, and the alarms
// that end it:
//
//   created → offered → answered → connected → ended | failed
//
// (ended or failed may also follow created, offered or answered). A live call whose relay was
// lost goes back to offered when its client resumes it (POST …/resume) on another relay, which
// is handed the conversation log; the record keeps every relay the call ran on. Every method is idempotent
// and safe to interleave: a request can arrive at any `await`, so each decision is taken and
// written to memory before the first await that follows it. That is what keeps two offers for
// one call from ever reaching two relays.
import { DurableObject } from "cloudflare:workers";
import { sha256Hex } from "../protocol/encoding.ts";
import type {
  CallStats,
  CallUsage,
  EndReason,
  LogItem,
  RelayCallEvent,
  ResumeOf,
} from "../protocol/relay-api.ts";
import type { SessionConfig } from "../protocol/session.ts";
import { assertNever } from "../protocol/assert-never.ts";
import { edgeConfig } from "./config.ts";
import { ApiError, type ApiErrorData } from "./errors.ts";
import { log } from "./log.ts";
import { callIndex, secretLedger } from "./object-ids.ts";
import { emptyLog, mergeLog, type StoredLog } from "./conversation-log.ts";
import type { SignatureNonce } from "./relay-registry.ts";
import { SeenNonces } from "./seen-nonces.ts";
import { createRelayCall, deleteRelayCall, patchRelayCall, type RelayTarget } from "./relay-client.ts";
import { deriveRelayKey } from "../protocol/relay-key.ts";
import { signSidebandTicket } from "../protocol/ticket.ts";
import { ServerTiming, type TimingParts } from "./server-timing.ts";

export type CallState = "created" | "offered" | "answered" | "connected" | "ended" | "failed";

/**
 * Who may read, change or end the call: the secret that started it, or an API key of its project
 * (the key that placed it, or minted the secret that did; any key for a call with no project).
 */
export type CallOwner = { kind: "client_secret"; secretId: string } | { kind: "api_key"; keyId: string };

/** Where a sideband attaches: the call's relay, and a single-use ticket for it. */
export interface SidebandRoute {
  relay: RelayTarget;
  ticket: string;
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: ApiErrorData };

export type CallStep =
  | "created"
  | "offered"
  | "answered"
  | "connected"
  | "first_audio"
  | "ended"
  | "last_relay_report"
  | "resumed";

/** The call as GET /v1/realtime/calls/{id} shows it. Times are epoch milliseconds. */
export interface CallView {
  id: string;
  object: "realtime.call";
  state: CallState;
  relay: { id: string; region: string };
  /** Every relay the call ran on, first to current: more than one if it was resumed (absent from older records). */
  relays?: { id: string; region: string }[];
  timestamps: Partial<Record<CallStep, number>>;
  end_reason: EndReason | null;
  end_message: string | null;
  stats: CallStats | null;
  /** What the call used, as its relay counted at the end; null until then. */
  usage: CallUsage | null;
  /** Where the call's setup went, in ms; each null until known. */
  setup: CallSetup;
}

export interface CallSetup {
  /** The edge's wait for the relay's SDP answer (every relay tried). */
  relay_answer_ms: number | null;
  /** From the relay taking the offer to ICE and DTLS connected, as the relay measured it. */
  relay_connect_ms: number | null;
}

/** The call's conversation log, as GET /v1/realtime/calls/{id}/log shows it. */
export interface CallLogView extends StoredLog {
  object: "realtime.call.log";
  call_id: string;
}

export interface StartCall {
  callId: string;
  owner: CallOwner;
  /** The id of the API key whose project the call is in (auth.ts apiKeyId); none: any key's. */
  project?: string | undefined;
  /** The relays to try, best first: the next is tried when one is full, draining or unreachable. */
  relays: RelayTarget[];
  offerSdp: string;
  session: SessionConfig;
}

/** The relay's answer, and where the time went inside the object (for Server-Timing). */
export interface StartedCall {
  answerSdp: string;
  timing: TimingParts;
}

interface CallRecord {
  callId: string;
  state: CallState;
  owner: CallOwner;
  /** Absent from calls placed before projects, and from secrets minted before them. */
  project?: string;
  relay: RelayTarget;
  /** Relays the call ran on before this one (it was resumed after losing them), oldest first. */
  previousRelays?: RelayTarget[];
  /** The session the call was placed with: a resumed call's new relay runs it too. */
  session?: SessionConfig;
  offerSha256: string | undefined;
  answerSdp: string | undefined;
  timestamps: Partial<Record<CallStep, number>>;
  endReason: EndReason | undefined;
  endMessage: string | undefined;
  stats: CallStats | undefined;
  usage?: CallUsage;
  /** The relay has not confirmed that it dropped the ended call: retried from the alarm. */
  relayDrop?: { attempts: number; nextAtMs: number };
  /** When the relay's heartbeat stopped listing the call while it was live here (epoch ms). */
  relayGoneAt?: number;
  setup?: Partial<CallSetup>;
}

/**
 * How long a call the relay stopped listing may wait for the relay's own `ended` (which carries
 * the real reason) before the edge ends it as relay_lost.
 */
const RELAY_GONE_GRACE_MS = 5000;

/** Retries of a DELETE the relay did not confirm: 1 s doubling to 30 s. */
const DROP_RETRY_BASE_MS = 1000;
const DROP_RETRY_MAX_MS = 30_000;
/**
 * Past the call's deadline (plus this) the relay has ended it by itself (the ticket carries the
 * deadline), so a relay that still cannot be reached is not asked again.
 */
const DROP_RETRY_AFTER_DEADLINE_MS = 60_000;

const NEXT: Record<CallState, readonly CallState[]> = {
  created: ["offered", "ended", "failed"],
  offered: ["answered", "ended", "failed"],
  // Back to offered: resumed on another relay after losing its own.
  answered: ["connected", "offered", "ended", "failed"],
  connected: ["offered", "ended", "failed"],
  ended: [],
  failed: [],
};

/** Reasons that end a call normally; every other reason means it failed. */
const NORMAL_ENDS: ReadonlySet<EndReason> = new Set([
  "hangup",
  "client_hangup",
  "max_duration",
  "secret_expired",
]);

/** What a client is told to wait when every relay was full: about one heartbeat. */
const RELAY_FULL_RETRY_AFTER_SECONDS = 5;

const isTerminal = (state: CallState) => state === "ended" || state === "failed";

const fail = <T>(error: ApiError): Outcome<T> => ({ ok: false, error: error.toData() });
const notFound = <T>(): Outcome<T> => fail(new ApiError(404, "call_not_found", "No such call."));

export class CallSession extends DurableObject<Env> {
  #call: CallRecord | undefined;
  /** The offer being forwarded right now, so a repeat of it joins instead of sending again. */
  #pending: { offerSdp: string; relayId: string; result: Promise<Outcome<StartedCall>> } | undefined;
  /** Signatures of relay events already applied here: a replayed request is refused. */
  #nonces!: SeenNonces;
  /** The conversation's items, as the relay reports them (stored under "log"). */
  #log: StoredLog | undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => {
      this.#call = ctx.storage.kv.get<CallRecord>("call");
      this.#log = ctx.storage.kv.get<StoredLog>("log");
      this.#nonces = new SeenNonces(ctx.storage);
    });
  }

  get #config() {
    return edgeConfig(this.env);
  }

  /**
   * Records the call and forwards its offer to its relay; resolves to the SDP answer. A repeat
   * of the same offer for the same relay gets the same answer; anything else is a 409.
   */
  async start(init: StartCall): Promise<Outcome<StartedCall>> {
    const call = this.#call;
    if (!call) {
      this.#call = {
        callId: init.callId,
        state: "created",
        owner: init.owner,
        ...(init.project === undefined ? {} : { project: init.project }),
        relay: init.relays[0]!,
        session: init.session,
        offerSha256: undefined,
        answerSdp: undefined,
        timestamps: { created: Date.now() },
        endReason: undefined,
        endMessage: undefined,
        stats: undefined,
      };
      this.#save();
      this.#index(this.#call);
      const result = this.#forward(this.#call, init);
      this.#pending = { offerSdp: init.offerSdp, relayId: init.relays[0]!.id, result };
      return result;
    }
    const pending = this.#pending;
    if (pending && pending.offerSdp === init.offerSdp && pending.relayId === init.relays[0]?.id)
      return pending.result;
    if (
      (call.state === "answered" || call.state === "connected") &&
      call.answerSdp !== undefined &&
      init.relays.some((relay) => relay.id === call.relay.id) &&
      call.offerSha256 === (await sha256Hex(init.offerSdp))
    ) {
      return { ok: true, value: { answerSdp: call.answerSdp, timing: [] } };
    }
    return fail(new ApiError(409, "call_exists", `The call already has an offer and is ${call.state}.`));
  }

  /**
   * The client lost the call's relay and offers again: the call moves to the best of `relays`
   * that is not its current one, which is handed the session and the conversation log. The
   * old relay is told to drop the call (it may still be alive: the client may only have lost
   * its way to it). With no other relay, the call ends (relay_lost) and the client is told why.
   */
  async resume(
    actor: CallOwner,
    init: { offerSdp: string; relays: RelayTarget[] },
  ): Promise<Outcome<StartedCall>> {
    const call = this.#call;
    if (!call || !mayAccess(call, actor)) return notFound();
    if (isTerminal(call.state)) return callEnded(call, "place a new one.");
    if (this.#pending) {
      if (this.#pending.offerSdp === init.offerSdp) return this.#pending.result;
      return fail(
        new ApiError(409, "call_busy", "The call is being offered to a relay; retry shortly.", {
          headers: { "Retry-After": "1" },
        }),
      );
    }
    if (call.state !== "answered" && call.state !== "connected") {
      return fail(
        new ApiError(409, "call_not_active", `The call is ${call.state}; only a live call resumes.`),
      );
    }
    const lost = call.relay;
    const others = init.relays.filter((relay) => relay.id !== lost.id);
    if (others.length === 0) {
      this.#end(
        call,
        "relay_lost",
        "The call's relay was lost and no other relay was available to resume it.",
      );
      this.#tellRelayToDrop(call);
      return fail(
        new ApiError(
          503,
          "no_relay_available",
          "The call's relay was lost and no other relay is available; the call has ended.",
        ),
      );
    }
    log.warn("call's relay lost: resuming on another", {
      call_id: call.callId,
      from: lost.id,
      to: others[0]!.id,
    });
    // The old relay lets go of the call if it is alive (the client has left it): one try, not
    // the retried drop of an ended call (that would go on after the call moved). Its late
    // events are refused: they come from a relay that is no longer the call's.
    const config = this.#config;
    this.ctx.waitUntil(
      deleteRelayCall(lost, call.callId, config.relaySecret, config.relayTimeoutMs).then(
        () => undefined,
        () => undefined,
      ),
    );
    call.previousRelays = [...(call.previousRelays ?? []), lost];
    call.relayGoneAt = undefined;
    call.answerSdp = undefined;
    call.timestamps.resumed = Date.now();
    const resume: ResumeOf = { previous_relay_id: lost.id, conversation: this.#log?.items ?? [] };
    const result = this.#forward(
      call,
      { offerSdp: init.offerSdp, relays: others, session: call.session ?? {} },
      resume,
    );
    this.#pending = { offerSdp: init.offerSdp, relayId: others[0]!.id, result };
    return result;
  }

  async #forward(
    call: CallRecord,
    init: Pick<StartCall, "offerSdp" | "relays" | "session">,
    resume?: ResumeOf,
  ): Promise<Outcome<StartedCall>> {
    const timing = new ServerTiming();
    try {
      this.#transition(call, "offered");
      this.#save();
      this.#schedule();
      // Only an answered call compares offers (to recognise a repeat), so the hash is worked
      // out while the relay answers.
      const offerSha256 = sha256Hex(init.offerSdp);
      const config = this.#config;
      const refusals: string[] = [];
      for (const relay of init.relays) {
        call.relay = relay;
        const result = await timing.time("relay", () =>
          createRelayCall(
            relay,
            {
              call_id: call.callId,
              offer_sdp: init.offerSdp,
              session: init.session,
              ...(resume ? { resume } : {}),
            },
            config.relaySecret,
            config.relayTimeoutMs,
            this.#deadlineMs(call),
          ),
        );
        call.offerSha256 = await offerSha256;
        if (call.state !== "offered") {
          // Hung up while the relay was answering: the relay must not keep the call.
          if (result.ok) this.#tellRelayToDrop(call);
          return fail(
            new ApiError(409, "call_ended", `The call was ${call.state} before the relay answered.`),
          );
        }
        if (result.ok) {
          call.setup = {
            ...call.setup,
            relay_answer_ms: Math.round(
              timing.parts.reduce((sum, [name, ms]) => (name === "relay" ? sum + ms : sum), 0),
            ),
          };
          call.answerSdp = result.value.answer_sdp;
          this.#transition(call, "answered");
          this.#save();
          this.#schedule();
          return { ok: true, value: { answerSdp: call.answerSdp, timing: timing.parts } };
        }
        if (result.kind === "timeout") {
          this.#end(call, "relay_timeout", `The relay did not answer within ${config.relayTimeoutMs} ms.`);
          // It may still create the call after we gave up.
          this.#tellRelayToDrop(call);
          return fail(
            new ApiError(504, "relay_timeout", "The media relay did not answer in time; try again."),
          );
        }
        log.warn("relay refused an offer", {
          call_id: call.callId,
          relay_id: relay.id,
          status: result.status ?? null,
          code: result.code ?? null,
        });
        // Full, draining, out of reach, or restarted since its last heartbeat (the ticket was
        // for its previous boot): another relay can take the call.
        if (
          result.status === undefined ||
          result.status === 503 ||
          (result.status === 403 && result.code === "ticket_stale_boot")
        ) {
          refusals.push(`${relay.id}: ${result.code ?? result.message}`);
          continue;
        }
        if (result.status === 400 && result.code === "invalid_offer") {
          this.#end(call, "relay_error", result.message);
          return fail(
            new ApiError(400, "invalid_offer", `The SDP offer cannot be answered: ${result.message}`, {
              param: "sdp",
            }),
          );
        }
        this.#end(call, "relay_error", result.message);
        return fail(new ApiError(502, "relay_error", "The media relay could not take the call; try again."));
      }
      if (resume) {
        this.#end(
          call,
          "relay_lost",
          `The call's relay was lost and no other relay could take it: ${refusals.join("; ")}`,
        );
        return fail(
          new ApiError(
            503,
            "no_relay_available",
            "The call's relay was lost and no other relay could take it; the call has ended.",
          ),
        );
      }
      this.#end(call, "relay_full", refusals.join("; "));
      return fail(
        new ApiError(503, "no_relay_available", "Every media relay is full right now; try again shortly.", {
          headers: { "Retry-After": String(RELAY_FULL_RETRY_AFTER_SECONDS) },
        }),
      );
    } finally {
      this.#pending = undefined;
    }
  }

  /** The call's public view, and who owns it; undefined when there is no such call. */
  inspect(actor: CallOwner): Outcome<CallView> {
    const call = this.#call;
    if (!call || !mayAccess(call, actor)) return notFound();
    return { ok: true, value: view(call) };
  }

  /** The call's conversation log, for whoever may read the call. */
  conversationLog(actor: CallOwner): Outcome<CallLogView> {
    const call = this.#call;
    if (!call || !mayAccess(call, actor)) return notFound();
    return {
      ok: true,
      value: { object: "realtime.call.log", call_id: call.callId, ...(this.#log ?? emptyLog()) },
    };
  }

  /**
   * A ticket for one sideband on the call's relay (the edge passes the WebSocket upgrade on with
   * it). Refused for a call another project owns (404, as if there were none), for an ended one
   * (410), and before any relay has answered for it (409).
   */
  async sideband(actor: CallOwner & { kind: "api_key" }): Promise<Outcome<SidebandRoute>> {
    const call = this.#call;
    if (!call || !mayAccess(call, actor)) return notFound();
    if (isTerminal(call.state)) {
      return callEnded(call, "there is nothing to attach to.", { param: "call_id" });
    }
    if (call.state !== "answered" && call.state !== "connected") {
      return fail(
        new ApiError(409, "call_not_ready", "The call has no relay yet; attach once its offer is answered.", {
          param: "call_id",
          headers: { "Retry-After": "1" },
        }),
      );
    }
    const relay = call.relay;
    const ticket = await signSidebandTicket(await deriveRelayKey(this.#config.relaySecret, relay.id), {
      callId: call.callId,
      relayId: relay.id,
      bootId: relay.bootId,
      keyId: actor.keyId,
    });
    return { ok: true, value: { relay, ticket } };
  }

  /** ICE restart or trickle on the call's own relay; the relay's sdpfrag comes back. */
  async updateIce(actor: CallOwner, sdpfrag: string): Promise<Outcome<{ status: number; body: string }>> {
    const call = this.#call;
    if (!call || !mayAccess(call, actor)) return notFound();
    if (call.state !== "answered" && call.state !== "connected") {
      return fail(
        new ApiError(
          409,
          "call_not_active",
          `The call is ${call.state}; ICE can only change on a live call.`,
        ),
      );
    }
    const config = this.#config;
    const result = await patchRelayCall(
      call.relay,
      call.callId,
      sdpfrag,
      config.relaySecret,
      config.relayTimeoutMs,
    );
    if (result.ok) return { ok: true, value: result.value };
    if (result.kind === "timeout")
      return fail(new ApiError(504, "relay_timeout", "The media relay did not answer in time."));
    log.warn("relay refused an ICE update", {
      call_id: call.callId,
      relay_id: call.relay.id,
      status: result.status,
    });
    return fail(new ApiError(502, "relay_error", "The media relay could not update ICE."));
  }

  /** Ends the call ("hangup") and tells its relay. Ending an ended call changes nothing. */
  async hangup(actor: CallOwner): Promise<Outcome<CallView>> {
    const call = this.#call;
    if (!call || !mayAccess(call, actor)) return notFound();
    if (isTerminal(call.state)) {
      // Ended here, but its relay never confirmed: ask it again now.
      if (call.relayDrop) await this.#dropOnRelay(call);
      return { ok: true, value: view(call) };
    }
    const hadRelayCall = call.state !== "created";
    this.#end(call, "hangup");
    if (hadRelayCall) await this.#dropOnRelay(call);
    return { ok: true, value: view(call) };
  }

  /**
   * The call's relay no longer lists the call in its heartbeat. If it is still live here it ended
   * there unseen (its `ended` was lost, or the relay restarted): the alarm ends it as relay_lost
   * unless the relay's own `ended` arrives within RELAY_GONE_GRACE_MS.
   */
  relayNoLongerHas(relayId: string): void {
    const call = this.#call;
    if (!call || call.relay.id !== relayId || call.relayGoneAt !== undefined) return;
    if (call.state !== "answered" && call.state !== "connected") return;
    call.relayGoneAt = Date.now();
    this.#save();
    this.#schedule();
  }

  /**
   * A signed, validated event from the call's relay. The same event sent again (a retry, under a
   * new signature) is harmless; the same signature again is refused.
   */
  relayEvent(event: RelayCallEvent, signature: SignatureNonce): Outcome<CallView> {
    const refused = this.#checkRelay(event.relay_id, signature);
    if (refused) return refused;
    return this.#applyRelayEvent(this.#call!, event);
  }

  /** Refuses events for no call, from another relay, or under a signature seen before. */
  #checkRelay(relayId: string, signature: SignatureNonce): Outcome<never> | undefined {
    const call = this.#call;
    if (!call) return notFound();
    if (relayId !== call.relay.id) {
      return fail(new ApiError(403, "wrong_relay", "This call belongs to another relay."));
    }
    if (!this.#nonces.claim(signature.nonce, signature.expires)) {
      return fail(new ApiError(401, "signature_replayed", "This signature has been used already."));
    }
    return undefined;
  }

  #applyRelayEvent(call: CallRecord, event: RelayCallEvent): Outcome<CallView> {
    if (event.type === "log") {
      // The last items may come in the batch that ends the call, or just after an edge hangup.
      this.#appendLog(event.items);
      return { ok: true, value: view(call) };
    }
    if (isTerminal(call.state)) {
      // The relay confirming the end is what we want to hear. Anything else means the relay
      // still runs a call the edge has ended (it could not be told, or its reports were cut
      // off): 410 tells it to end the call too, so the two records converge.
      if (event.type === "ended") {
        // Ended here first (a hangup): the relay's report still brings what the call used.
        if (call.relayDrop || (event.usage && !call.usage)) {
          call.relayDrop = undefined;
          if (event.usage) call.usage ??= event.usage;
          this.#save();
          this.#index(call);
        }
        return { ok: true, value: view(call) };
      }
      return fail(
        new ApiError(410, "call_ended", `The call is ${call.state} (${call.endReason ?? "ended"}); end it.`),
      );
    }
    const now = Date.now();
    call.timestamps.last_relay_report = now;
    switch (event.type) {
      case "connected":
        if (call.state !== "connected") {
          if (!NEXT[call.state].includes("connected")) {
            this.#save();
            return fail(
              new ApiError(409, "illegal_transition", `A ${call.state} call cannot become connected.`),
            );
          }
          this.#transition(call, "connected");
          if (event.connect_ms !== undefined)
            call.setup = { ...call.setup, relay_connect_ms: event.connect_ms };
          this.#settleSecret(call);
          this.#index(call);
        }
        break;
      case "first_audio":
        call.timestamps.first_audio ??= now;
        break;
      case "session":
        call.session = event.session;
        break;
      case "stats":
        call.stats = event.stats;
        break;
      case "ended":
        if (event.usage) call.usage = event.usage;
        this.#end(call, event.reason, event.message);
        return { ok: true, value: view(call) };
      default:
        assertNever(event, "relay event");
    }
    this.#save();
    this.#schedule();
    return { ok: true, value: view(call) };
  }

  /**
   * Several events of this call, in the order the relay sent them (a batch from
   * `POST /internal/relays/{id}/events`): one outcome each. One call of the object instead of
   * one per event, and nothing interleaves between them.
   */
  relayEvents(events: RelayCallEvent[], signature: SignatureNonce): Outcome<null>[] {
    // The batch's signature is claimed once here, for all of this call's events in it (the route
    // passes only events whose relay_id is the signer's).
    const refused = this.#checkRelay(events[0]!.relay_id, signature);
    return events.map((event) => {
      const outcome = refused ?? this.#applyRelayEvent(this.#call!, event);
      return outcome.ok ? { ok: true, value: null } : outcome;
    });
  }

  /** Ends calls that never connected, whose relay went silent, or that ran too long; later, forgets them. */
  override async alarm(): Promise<void> {
    const call = this.#call;
    if (!call) return;
    const config = this.#config;
    const now = Date.now();
    const created = call.timestamps.created ?? now;
    if (isTerminal(call.state)) {
      if (call.relayDrop && now >= call.relayDrop.nextAtMs) await this.#dropOnRelay(call);
      const ended = call.timestamps.ended ?? now;
      if (now >= ended + config.callRecordDays * 86_400_000) {
        this.#call = undefined;
        this.#log = undefined;
        await this.ctx.storage.deleteAll();
        return;
      }
      if (now >= ended + config.callRetentionSeconds * 1000 && call.answerSdp !== undefined) {
        // The live call's details are of no use now; the record and the log stay.
        call.answerSdp = undefined;
        call.offerSha256 = undefined;
        call.relayDrop = undefined;
        this.#save();
        this.#nonces.clear();
        // Index writes are not awaited; this one makes a listing that missed the end catch up.
        this.#index(call);
      }
      this.#schedule();
      return;
    }
    let reason: EndReason | undefined;
    let message: string | undefined;
    if (call.relayGoneAt !== undefined && now >= call.relayGoneAt + RELAY_GONE_GRACE_MS) {
      reason = "relay_lost";
      message = "The relay no longer has the call.";
    } else if (
      call.state !== "connected" &&
      now >= (call.timestamps.resumed ?? created) + config.connectTimeoutSeconds * 1000
    ) {
      reason = "never_connected";
    } else if (
      call.state === "connected" &&
      now >= (call.timestamps.last_relay_report ?? created) + config.relaySilenceSeconds * 1000
    ) {
      reason = "relay_lost";
    } else if (now >= created + config.maxCallSeconds * 1000) {
      reason = "max_duration";
    }
    if (!reason) {
      this.#schedule();
      return;
    }
    const hadRelayCall = call.state !== "created";
    this.#end(call, reason, message);
    if (hadRelayCall) await this.#dropOnRelay(call);
  }

  #transition(call: CallRecord, to: CallState): void {
    if (!NEXT[call.state].includes(to)) throw new Error(`illegal transition ${call.state} → ${to}`);
    call.state = to;
    if (to !== "failed") call.timestamps[to] = Date.now();
  }

  #end(call: CallRecord, reason: EndReason, message?: string): void {
    const answeredOnly = call.state === "answered";
    this.#transition(call, NORMAL_ENDS.has(reason) ? "ended" : "failed");
    // An answered call that ends unconnected frees its slot here; one that never got an answer
    // is settled (or refunded) by the route that placed it, which knows how it failed.
    if (answeredOnly) this.#settleSecret(call);
    call.timestamps.ended = Date.now();
    call.endReason = reason;
    call.endMessage = message?.slice(0, 512);
    this.#save();
    this.#schedule();
    this.#index(call);
  }

  #appendLog(items: readonly LogItem[]): void {
    this.#log = mergeLog(this.#log ?? emptyLog(), items);
    this.ctx.storage.kv.put("log", this.#log);
  }

  /**
   * The call's record in its project's index (GET /admin/calls). Not awaited: a lost write only
   * leaves the listing a state behind, and the next change (the end) writes it again.
   */
  #index(call: CallRecord): void {
    if (call.project === undefined) return;
    const record = view(call);
    this.ctx.waitUntil(
      callIndex(this.env, call.project)
        .put(record)
        .catch((error: unknown) =>
          log.warn("could not index a call", {
            call_id: call.callId,
            state: call.state,
            error: String(error),
          }),
        ),
    );
  }

  #save(): void {
    if (this.#call) this.ctx.storage.kv.put("call", this.#call);
  }

  /**
   * One alarm for whichever deadline comes first; alarms may fire early or twice, so `alarm`
   * re-checks. Not awaited: alarm writes follow the rules of put(), so the output gate holds
   * everything this object sends (an RPC answer, the offer to the relay) until the write is
   * durable, and a failed write resets the object and drops those messages. No one can see a
   * state whose alarm was lost; awaiting only added a point where requests interleave.
   * https://developers.cloudflare.com/durable-objects/api/alarms/ ("follow the same rules as
   * other storage operations"), …/api/sqlite-storage-api/#setalarm (put()'s options) and
   * …/api/legacy-kv-storage-api/#put (allowUnconfirmed: the output gate).
   */
  #schedule(): void {
    const call = this.#call;
    if (!call) return;
    const config = this.#config;
    const created = call.timestamps.created ?? Date.now();
    const maxEnd = created + config.maxCallSeconds * 1000;
    let at: number;
    switch (call.state) {
      case "created":
      case "offered":
      case "answered":
        at = Math.min((call.timestamps.resumed ?? created) + config.connectTimeoutSeconds * 1000, maxEnd);
        break;
      case "connected":
        at = Math.min(
          (call.timestamps.last_relay_report ?? created) + config.relaySilenceSeconds * 1000,
          maxEnd,
        );
        break;
      case "ended":
      case "failed": {
        const ended = call.timestamps.ended ?? Date.now();
        const forget = ended + config.callRecordDays * 86_400_000;
        at =
          call.answerSdp === undefined
            ? forget
            : Math.min(forget, ended + config.callRetentionSeconds * 1000);
        if (call.relayDrop) at = Math.min(at, call.relayDrop.nextAtMs);
        break;
      }
      default:
        assertNever(call.state, "call state");
    }
    if (call.relayGoneAt !== undefined && !isTerminal(call.state))
      at = Math.min(at, call.relayGoneAt + RELAY_GONE_GRACE_MS);
    void this.ctx.storage.setAlarm(at);
  }

  /** When the call must end at the latest, epoch ms (its ticket tells the relay too). */
  #deadlineMs(call: CallRecord): number {
    return (call.timestamps.created ?? Date.now()) + this.#config.maxCallSeconds * 1000;
  }

  /**
   * Tells the relay to drop the ended call, until it confirms: a failed DELETE is retried from
   * the alarm with backoff, up to a minute past the call's deadline, by which time the relay
   * has ended the call by itself.
   */
  async #dropOnRelay(call: CallRecord): Promise<void> {
    const config = this.#config;
    const result = await deleteRelayCall(call.relay, call.callId, config.relaySecret, config.relayTimeoutMs);
    if (result.ok) {
      if (call.relayDrop) {
        call.relayDrop = undefined;
        this.#save();
        this.#schedule();
      }
      return;
    }
    const attempts = (call.relayDrop?.attempts ?? 0) + 1;
    const nextAtMs = Date.now() + Math.min(DROP_RETRY_MAX_MS, DROP_RETRY_BASE_MS * 2 ** (attempts - 1));
    const giveUp = nextAtMs > this.#deadlineMs(call) + DROP_RETRY_AFTER_DEADLINE_MS;
    if (attempts === 1 || giveUp) {
      log.warn(giveUp ? "relay never confirmed dropping an ended call" : "relay did not drop an ended call", {
        call_id: call.callId,
        relay_id: call.relay.id,
        failure: result.kind,
        attempts,
      });
    }
    call.relayDrop = giveUp ? undefined : { attempts, nextAtMs };
    this.#save();
    this.#schedule();
  }

  /** The call no longer holds one of its client secret's unconnected slots. */
  #settleSecret(call: CallRecord): void {
    if (call.owner.kind !== "client_secret") return;
    const ledger = secretLedger(this.env, call.owner.secretId);
    if (ledger) this.ctx.waitUntil(ledger.callSettled(call.callId));
  }

  #tellRelayToDrop(call: CallRecord): void {
    this.ctx.waitUntil(this.#dropOnRelay(call));
  }
}

/** 410 for a call that has ended: how it ended, and what the caller may do instead. */
function callEnded<T>(call: CallRecord, instead: string, options?: { param: string }): Outcome<T> {
  return fail(
    new ApiError(
      410,
      "call_ended",
      `The call has ended (${call.endReason ?? call.state}); ${instead}`,
      options,
    ),
  );
}

function mayAccess(call: CallRecord, actor: CallOwner): boolean {
  if (actor.kind === "api_key") return call.project === undefined || call.project === actor.keyId;
  return call.owner.kind === "client_secret" && call.owner.secretId === actor.secretId;
}

function view(call: CallRecord): CallView {
  return {
    id: call.callId,
    object: "realtime.call",
    state: call.state,
    relay: { id: call.relay.id, region: call.relay.region },
    relays: [...(call.previousRelays ?? []), call.relay].map((relay) => ({
      id: relay.id,
      region: relay.region,
    })),
    timestamps: { ...call.timestamps },
    end_reason: call.endReason ?? null,
    end_message: call.endMessage ?? null,
    stats: call.stats ?? null,
    usage: call.usage ?? null,
    setup: {
      relay_answer_ms: call.setup?.relay_answer_ms ?? null,
      relay_connect_ms: call.setup?.relay_connect_ms ?? null,
    },
  };
}
