// What is kept of calls: GET /v1/realtime/calls/{id}/log (the conversation's items) and
// GET /admin/calls (the API key's project's call records, newest first, paged with a cursor).
import type { IRequest } from "itty-router";
import { requireApiKey } from "../auth.ts";
import { MAX_PAGE_SIZE, type CallPage } from "../call-index.ts";
import { edgeConfig } from "../config.ts";
import { badRequest } from "../errors.ts";
import { callIndex } from "../object-ids.ts";
import { limitApiKey } from "../rate-limiter.ts";
import { resolveCall, unwrap } from "./calls.ts";

/** Records in a page of GET /admin/calls when `limit` is not given. */
export const DEFAULT_PAGE_SIZE = 20;
const NO_STORE = { "Cache-Control": "no-store" };

export async function getCallLog(request: IRequest, env: Env): Promise<Response> {
  const { stub, actor } = await resolveCall(request, env);
  return Response.json(unwrap(await stub.conversationLog(actor)), { headers: NO_STORE });
}

/**
 * GET /admin/calls?since=<epoch seconds>&limit=<1..100>&after=<cursor>: the calls the key's
 * project placed since then (started at or after `since`), newest first. `next` is the cursor
 * of the next page, or null on the last one.
 */
export async function listCalls(request: IRequest, env: Env): Promise<Response> {
  const config = edgeConfig(env);
  const { keyId } = await requireApiKey(config, request);
  await limitApiKey(env, config, keyId);
  const since = sinceParam(request.query.since);
  const limit = limitParam(request.query.limit);
  const after = cursorParam(request.query.after);
  const page = (await callIndex(env, keyId).list(since, limit, after)) as CallPage;
  return Response.json(
    {
      object: "list",
      order: "newest_first",
      data: page.records,
      has_more: page.next !== null,
      next: page.next && encodeCursor(page.next),
    },
    { headers: NO_STORE },
  );
}

function single(value: string | string[] | undefined, param: string): string | undefined {
  if (Array.isArray(value)) throw badRequest("invalid_parameter", `Give ${param} once.`, param);
  return value;
}

function sinceParam(raw: string | string[] | undefined): number {
  const value = single(raw, "since");
  if (value === undefined)
    throw badRequest("missing_required_parameter", "since (epoch seconds) is required.", "since");
  if (!/^\d{1,12}$/.test(value))
    throw badRequest("invalid_parameter", "since must be whole epoch seconds, such as 1767225600.", "since");
  return Number(value) * 1000;
}

function limitParam(raw: string | string[] | undefined): number {
  const value = single(raw, "limit");
  if (value === undefined) return DEFAULT_PAGE_SIZE;
  const limit = /^\d{1,4}$/.test(value) ? Number(value) : NaN;
  if (!(limit >= 1 && limit <= MAX_PAGE_SIZE))
    throw badRequest(
      "invalid_parameter",
      `limit must be a whole number from 1 to ${MAX_PAGE_SIZE}.`,
      "limit",
    );
  return limit;
}

function encodeCursor(next: { createdMs: number; callId: string }): string {
  return `${next.createdMs.toString(36)}.${next.callId}`;
}

function cursorParam(raw: string | string[] | undefined): { createdMs: number; callId: string } | null {
  const value = single(raw, "after");
  if (value === undefined) return null;
  const match = /^([0-9a-z]{1,10})\.(rtc_[A-Za-z0-9_-]{8,64})$/.exec(value);
  if (!match) throw badRequest("invalid_cursor", "after must be the next value of a previous page.", "after");
  return { createdMs: parseInt(match[1]!, 36), callId: match[2]! };
}
