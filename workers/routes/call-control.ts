// POST /v1/realtime/calls/{id}/accept | reject | refer: OpenAI's call control for incoming SIP
// calls. Every Earshot call today is a WebRTC call, which its offer already answered, so these
// answer as OpenAI does for a WebRTC call: the request is checked as OpenAI checks it (so a
// malformed one fails here the same way), then refused, naming the call as not a SIP call.
// `hangup` works for both kinds and lives with the call resource (calls.ts).
import type { IRequest } from "itty-router";
import { z } from "zod";
import { SessionConfig } from "../../protocol/session.ts";
import { requireApiKey } from "../auth.ts";
import { readJson } from "../body.ts";
import { edgeConfig } from "../config.ts";
import { badRequest, zodBadRequest } from "../errors.ts";
import { limitApiKey } from "../rate-limiter.ts";
import { MAX_SESSION_BYTES } from "../session-config.ts";
import { resolveCall, unwrap } from "./calls.ts";

export type CallVerb = "accept" | "reject" | "refer";

const MAX_BODY_BYTES = MAX_SESSION_BYTES + 4096;

/** `accept`'s body is a session config whose `type` is required (openai-node CallAcceptParams). */
const AcceptBody = z.looseObject({ type: z.unknown().optional() });
/** `reject {status_code?}`: a SIP final response; OpenAI sends 603 (Decline) without one. */
const RejectBody = z.strictObject({ status_code: z.int().min(300).max(699).optional() });
/** `refer {target_uri}`: where the SIP REFER points, a `tel:` or `sip:` URI. */
const ReferBody = z.strictObject({
  target_uri: z
    .string()
    .max(512)
    .regex(/^(tel:\+?[0-9*#(). -]{1,64}|sips?:[^\s]{1,500})$/, "must be a tel: or sip: URI"),
});

export function callControl(verb: CallVerb) {
  return async (request: IRequest, env: Env): Promise<Response> => {
    const config = edgeConfig(env);
    const caller = await requireApiKey(config, request);
    await limitApiKey(env, config, caller.keyId);
    await checkBody(verb, request);
    const { stub, actor } = await resolveCall(request, env);
    // 404 for no such call, or another project's.
    const call = unwrap(await stub.inspect(actor));
    throw badRequest(
      "call_not_sip",
      `Call ${call.id} is a WebRTC call; ${verb} applies only to incoming SIP calls. ` +
        "End a WebRTC call with POST /v1/realtime/calls/{call_id}/hangup.",
      "call_id",
    );
  };
}

async function checkBody(verb: CallVerb, request: Request): Promise<void> {
  switch (verb) {
    case "accept": {
      const body = await readJson(request, AcceptBody, MAX_BODY_BYTES);
      if (body.type === undefined)
        throw badRequest("missing_required_parameter", "Missing required parameter: 'type'.", "type");
      if (body.type !== "realtime") {
        throw badRequest(
          "invalid_value",
          `Invalid value: '${String(body.type).slice(0, 64)}'. Supported values are: 'realtime'.`,
          "type",
        );
      }
      const session = SessionConfig.safeParse(body);
      if (!session.success) throw zodBadRequest(session.error, body);
      return;
    }
    case "reject":
      await readJson(request, RejectBody, 1024, { ifEmpty: {} });
      return;
    case "refer": {
      const body = await readJson(request, z.looseObject({ target_uri: z.unknown().optional() }), 4096);
      if (body.target_uri === undefined)
        throw badRequest(
          "missing_required_parameter",
          "Missing required parameter: 'target_uri'.",
          "target_uri",
        );
      const refer = ReferBody.safeParse(body);
      if (!refer.success) throw zodBadRequest(refer.error, body);
      return;
    }
  }
}
