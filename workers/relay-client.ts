// The edge's side of the relay HTTP API: POST /calls with a ticket, PATCH and DELETE
// /calls/{id} with a signed request, all with the relay's own key (derived from
// EARSHOT_RELAY_SECRET and its id, protocol/relay-key.ts). Every call has a deadline; results are data, not throws,
// so the CallSession can record exactly how a relay failed.
import {
  CreateCallResponse,
  TICKET_HEADER,
  ticketSubject,
  type CreateCallRequest,
} from "../protocol/relay-api.ts";
import { deriveRelayKey } from "../protocol/relay-key.ts";
import { SIGNATURE_HEADER, signRequest } from "../protocol/signed-request.ts";
import { signTicket } from "../protocol/ticket.ts";

export interface RelayTarget {
  id: string;
  region: string;
  publicUrl: string;
  /** The relay's boot id from its last heartbeat; tickets carry it. */
  bootId: string;
}

export type RelayFailure =
  | { ok: false; kind: "timeout" }
  | { ok: false; kind: "error"; status?: number; code?: string; message: string };

export type RelayResult<T> = { ok: true; value: T } | RelayFailure;

export function relayUrl(relay: RelayTarget, path: string): URL {
  return new URL(relay.publicUrl.replace(/\/+$/, "") + path);
}

async function send(url: URL, init: RequestInit, deadline: AbortSignal): Promise<RelayResult<Response>> {
  try {
    return { ok: true, value: await fetch(url, { ...init, signal: deadline }) };
  } catch (error) {
    if (deadline.aborted) return { ok: false, kind: "timeout" };
    return { ok: false, kind: "error", message: `The relay could not be reached: ${String(error)}` };
  }
}

async function describeFailure(response: Response): Promise<RelayFailure> {
  const text = await response.text().catch(() => "");
  let message = `The relay answered ${response.status}.`;
  let code: string | undefined;
  try {
    const body = JSON.parse(text) as { error?: { message?: unknown; code?: unknown } };
    if (typeof body.error?.message === "string") message += ` ${body.error.message.slice(0, 200)}`;
    if (typeof body.error?.code === "string") code = body.error.code.slice(0, 64);
  } catch {
    // not an envelope; the status says enough
  }
  return { ok: false, kind: "error", status: response.status, code, message };
}

export async function createRelayCall(
  relay: RelayTarget,
  request: CreateCallRequest,
  secret: string,
  timeoutMs: number,
  callDeadlineMs?: number,
): Promise<RelayResult<CreateCallResponse>> {
  const ticket = await signTicket(
    await deriveRelayKey(secret, relay.id),
    {
      callId: request.call_id,
      relayId: relay.id,
      bootId: relay.bootId,
      offerSdp: request.offer_sdp,
      session: ticketSubject(request),
    },
    callDeadlineMs === undefined ? {} : { callDeadline: Math.ceil(callDeadlineMs / 1000) },
  );
  const deadline = AbortSignal.timeout(timeoutMs);
  const sent = await send(
    relayUrl(relay, "/calls"),
    {
      method: "POST",
      headers: { "content-type": "application/json", [TICKET_HEADER]: ticket },
      body: JSON.stringify(request),
    },
    deadline,
  );
  if (!sent.ok) return sent;
  const response = sent.value;
  if (response.status !== 201) return describeFailure(response);
  try {
    const parsed = CreateCallResponse.safeParse(await response.json());
    if (!parsed.success || parsed.data.call_id !== request.call_id) {
      return {
        ok: false,
        kind: "error",
        status: 201,
        message: "The relay's answer is not a CreateCallResponse for this call.",
      };
    }
    return { ok: true, value: parsed.data };
  } catch (error) {
    if (deadline.aborted) return { ok: false, kind: "timeout" };
    return {
      ok: false,
      kind: "error",
      status: 201,
      message: `The relay's answer is not JSON: ${String(error)}`,
    };
  }
}

export async function patchRelayCall(
  relay: RelayTarget,
  callId: string,
  sdpfrag: string,
  secret: string,
  timeoutMs: number,
): Promise<RelayResult<{ status: number; body: string }>> {
  const url = relayUrl(relay, `/calls/${callId}`);
  const sent = await send(
    url,
    {
      method: "PATCH",
      headers: {
        "content-type": "application/trickle-ice-sdpfrag",
        [SIGNATURE_HEADER]: await signRequest(
          await deriveRelayKey(secret, relay.id),
          "PATCH",
          url.pathname,
          sdpfrag,
        ),
      },
      body: sdpfrag,
    },
    AbortSignal.timeout(timeoutMs),
  );
  if (!sent.ok) return sent;
  if (sent.value.status !== 200 && sent.value.status !== 204) return describeFailure(sent.value);
  // Decoded by hand: workerd warns when .text() meets a non-text Content-Type such as sdpfrag.
  const body = new TextDecoder().decode(await sent.value.arrayBuffer());
  return { ok: true, value: { status: sent.value.status, body } };
}

export async function deleteRelayCall(
  relay: RelayTarget,
  callId: string,
  secret: string,
  timeoutMs: number,
): Promise<RelayResult<void>> {
  const url = relayUrl(relay, `/calls/${callId}`);
  const sent = await send(
    url,
    {
      method: "DELETE",
      headers: {
        [SIGNATURE_HEADER]: await signRequest(await deriveRelayKey(secret, relay.id), "DELETE", url.pathname),
      },
    },
    AbortSignal.timeout(timeoutMs),
  );
  if (!sent.ok) return sent;
  // 404: the relay no longer knows the call, which is what DELETE wants.
  if (sent.value.status !== 204 && sent.value.status !== 200 && sent.value.status !== 404) {
    return describeFailure(sent.value);
  }
  await sent.value.body?.cancel();
  return { ok: true, value: undefined };
}
