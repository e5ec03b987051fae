// What the edge keeps of a call (issue 15 parts 3 and 4): its record on GET /v1/realtime/calls/{id},
// the project's listing on GET /admin/calls, the conversation log on …/log, and their retention.
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { MAX_LOG_ITEMS_PER_EVENT, MAX_LOG_TEXT_CHARS, type LogItem } from "../../protocol/relay-api.ts";
import { MAX_INDEXED_CALLS, MAX_PAGE_SIZE, type CallPage } from "../../workers/call-index.ts";
import type { CallView } from "../../workers/call-session.ts";
import { MAX_LOG_ITEMS, MAX_LOG_TEXT_CHARS as MAX_KEPT_TEXT } from "../../workers/conversation-log.ts";
import { apiKeyId } from "../../workers/auth.ts";
import { callIndex, callSession } from "../../workers/object-ids.ts";
import {
  API_KEY,
  OTHER_API_KEY,
  edge,
  errorOf,
  getCall,
  placeCall,
  relayEvent,
  soloRelay,
} from "./fixtures.ts";

afterEach(() => {
  vi.useRealTimers();
});

const DAY_MS = 86_400_000;
const at = () => Date.now();

/**
 * The start of the next whole second (`since` is in seconds), so a listing sees only the calls
 * of the test that waits for it.
 */
async function ownSecond(): Promise<number> {
  const next = Math.ceil((Date.now() + 1) / 1000);
  await new Promise((resolve) => setTimeout(resolve, next * 1000 - Date.now()));
  return next;
}

/**
 * Moves the edge's clock forward. Only once a test has placed its calls (the relay stub checks
 * tickets on the real clock), and with no public request after it: the per-IP and per-key rate
 * limits would then hold their buckets in the future for the rest of the file. Reads go to the
 * objects directly instead.
 */
function advance(ms: number) {
  if (!vi.isFakeTimers()) vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
  vi.setSystemTime(Date.now() + ms);
}

const owner = async () => ({ kind: "api_key" as const, keyId: await apiKeyId(API_KEY) });
const recordOf = async (callId: string) => callSession(env, callId)!.inspect(await owner());

async function connectedCall(relay?: { relayId: string; query: string }) {
  const { relayId, query } = relay ?? (await soloRelay());
  const callId = await placeCall(query);
  const connected = { type: "connected" as const, relay_id: relayId, at: at(), connect_ms: 412 };
  expect((await relayEvent(callId, connected)).status).toBe(204);
  return { relayId, query, callId };
}

async function hangupFromRelay(callId: string, relayId: string, usage = USAGE) {
  const ended = { type: "ended" as const, relay_id: relayId, at: at(), reason: "hangup" as const, usage };
  expect((await relayEvent(callId, ended)).status).toBe(204);
}

const USAGE = {
  audio_in_seconds: 31.2,
  audio_out_seconds: 18.4,
  turns: 4,
  barge_ins: 2,
  model: { input_tokens: 900, output_tokens: 300 },
};

async function listing(query: string, apiKey = API_KEY) {
  const response = await edge(`/admin/calls${query}`, { apiKey });
  expect(response.status).toBe(200);
  return (await response.json()) as {
    object: string;
    order: string;
    data: CallView[];
    has_more: boolean;
    next: string | null;
  };
}

describe("a call's record", () => {
  it("has its start, connect and end times, end reason, usage with barge-ins, and setup timings", async () => {
    const { callId, relayId } = await connectedCall();
    await hangupFromRelay(callId, relayId);
    const record = (await (await getCall(callId)).json()) as CallView;
    expect(record).toMatchObject({ id: callId, state: "ended", end_reason: "hangup", usage: USAGE });
    const { created, connected, ended } = record.timestamps;
    expect(created).toBeLessThanOrEqual(connected!);
    expect(connected).toBeLessThanOrEqual(ended!);
    expect(record.setup.relay_connect_ms).toBe(412);
    expect(record.setup.relay_answer_ms).toBeGreaterThanOrEqual(0);
  });

  it("outlives the live call's retention (24 h) and is forgotten after EARSHOT_CALL_RECORD_DAYS (30)", async () => {
    const { callId, relayId } = await connectedCall();
    await hangupFromRelay(callId, relayId);
    const stub = callSession(env, callId)!;
    advance(DAY_MS + 1000);
    await runDurableObjectAlarm(stub);
    // The record stays; the SDP answer and the relay's signatures do not.
    expect(await recordOf(callId)).toMatchObject({ ok: true, value: { state: "ended", usage: USAGE } });
    await runInDurableObject(stub, async (_instance, state) => {
      const keys = [...state.storage.kv.list()].map(([key]) => key);
      expect(keys.filter((key) => key.startsWith("nonce:"))).toEqual([]);
      expect(state.storage.kv.get<{ answerSdp?: string }>("call")!.answerSdp).toBeUndefined();
    });
    advance(28 * DAY_MS);
    await runDurableObjectAlarm(stub);
    expect((await recordOf(callId)).ok).toBe(true); // 29 days after its end
    advance(DAY_MS);
    await runDurableObjectAlarm(stub);
    expect(await recordOf(callId)).toMatchObject({ ok: false, error: { status: 404 } });
    await runInDurableObject(stub, async (_instance, state) => {
      expect([...state.storage.kv.list()]).toEqual([]);
    });
  });
});

describe("GET /admin/calls", () => {
  it("lists the project's calls newest first, paged with a cursor, each with its record", async () => {
    const since = await ownSecond();
    const relay = await soloRelay();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const { callId } = await connectedCall(relay);
      ids.push(callId);
    }
    await hangupFromRelay(ids[0]!, relay.relayId);
    // The end reaches the index in the background: wait for it there before paging.
    const index = callIndex(env, await apiKeyId(API_KEY));
    for (let tries = 0; tries < 300; tries++) {
      const page = (await index.list(since * 1000, MAX_PAGE_SIZE, null)) as CallPage;
      if (page.records.find((r) => r.id === ids[0])?.state === "ended") break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const seen: CallView[] = [];
    let query = `?since=${since}&limit=2`;
    const pages: number[] = [];
    for (;;) {
      const page = await waitForIndexed(query, 2);
      expect(page).toMatchObject({ object: "list", order: "newest_first" });
      pages.push(page.data.length);
      seen.push(...page.data);
      if (!page.has_more) {
        expect(page.next).toBeNull();
        break;
      }
      query = `?since=${since}&limit=2&after=${page.next!}`;
    }
    expect(pages).toEqual([2, 2, 1]);
    expect(seen.map((record) => record.id)).toEqual([...ids].reverse());
    expect(seen.at(-1)).toMatchObject({ id: ids[0], state: "ended", end_reason: "hangup", usage: USAGE });
    expect(seen[0]).toMatchObject({ state: "connected", setup: { relay_connect_ms: 412 } });
    // `since` leaves out calls that started before it.
    const later = await listing(`?since=${Math.floor(seen[0]!.timestamps.created! / 1000) + 1}`);
    expect(later.data).toEqual([]);
  });

  it("shows only the key's own project's calls; another key cannot read them one by one either", async () => {
    const since = await ownSecond();
    const { callId, relayId } = await connectedCall();
    await waitForIndexed(`?since=${since}`, 1);
    expect((await listing(`?since=${since}`, OTHER_API_KEY)).data).toEqual([]);
    expect((await getCall(callId, { apiKey: OTHER_API_KEY })).status).toBe(404);
    expect((await edge(`/v1/realtime/calls/${callId}/log`, { apiKey: OTHER_API_KEY })).status).toBe(404);
    await hangupFromRelay(callId, relayId);
  });

  it(`pages ${MAX_PAGE_SIZE} records at most: limit=${MAX_PAGE_SIZE} is taken, ${MAX_PAGE_SIZE + 1} and 0 are refused`, async () => {
    const since = await ownSecond();
    // 101 records written into the project's index, as CallSessions write them.
    const index = callIndex(env, await apiKeyId(API_KEY));
    const base = Date.now();
    for (let i = 0; i <= MAX_PAGE_SIZE; i++) {
      const id = `rtc_synthetic${String(i).padStart(4, "0")}`;
      await index.put({
        id,
        object: "realtime.call",
        state: "ended",
        relay: { id: "relay-x", region: "test" },
        timestamps: { created: base + i, ended: base + i + 1 },
        end_reason: "hangup",
        end_message: null,
        stats: null,
        usage: null,
        setup: { relay_answer_ms: null, relay_connect_ms: null },
      });
    }
    const full = await listing(`?since=${since}&limit=${MAX_PAGE_SIZE}`);
    expect(full.data).toHaveLength(MAX_PAGE_SIZE);
    expect(full.has_more).toBe(true);
    expect(full.data[0]!.id).toBe(`rtc_synthetic0${MAX_PAGE_SIZE}`);
    const rest = await listing(`?since=${since}&limit=${MAX_PAGE_SIZE}&after=${full.next!}`);
    expect(rest.data.map((record) => record.id)).toEqual(["rtc_synthetic0000"]);
    expect((await listing(`?since=${since}`)).data).toHaveLength(20); // the default page

    for (const limit of [MAX_PAGE_SIZE + 1, 0, -1, 1.5]) {
      const response = await edge(`/admin/calls?since=${since}&limit=${limit}`, { apiKey: API_KEY });
      expect(response.status).toBe(400);
      expect(await errorOf(response)).toMatchObject({ type: "invalid_request_error", param: "limit" });
    }
  });

  it(`keeps ${MAX_INDEXED_CALLS} calls a project: one more and the oldest goes`, async () => {
    const since = await ownSecond();
    // A project of its own (an index by another name), filled to the bound directly.
    const index = callIndex(env, `bound-${since}`);
    const record = (id: string, created: number): CallView => ({
      id,
      object: "realtime.call",
      state: "ended",
      relay: { id: "relay-x", region: "test" },
      timestamps: { created, ended: created + 1 },
      end_reason: "hangup",
      end_message: null,
      stats: null,
      usage: null,
      setup: { relay_answer_ms: null, relay_connect_ms: null },
    });
    const base = since * 1000;
    // One statement: 100 000 inserts one by one take longer than a test may.
    await runInDurableObject(index, async (_instance, state) => {
      state.storage.sql.exec(
        `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         INSERT INTO calls (call_id, created_ms, record, rank)
         SELECT printf('rtc_bound%07d', i), ? + i, json_object('id', printf('rtc_bound%07d', i)), 4 FROM n`,
        MAX_INDEXED_CALLS - 2,
        base,
      );
    });
    const count = () =>
      runInDurableObject(
        index,
        async (_instance, state) =>
          state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM calls").one().n,
      );
    await index.put(record("rtc_boundlast0001", base + MAX_INDEXED_CALLS));
    expect(await count()).toBe(MAX_INDEXED_CALLS);
    const oldest = async () =>
      ((await index.list(base, MAX_INDEXED_CALLS, null)) as CallPage).records.at(-1)!.id;
    expect(await oldest()).toBe("rtc_bound0000000");
    await index.put(record("rtc_boundlast0002", base + MAX_INDEXED_CALLS + 1));
    expect(await count()).toBe(MAX_INDEXED_CALLS);
    expect(await oldest()).toBe("rtc_bound0000001");
  }, 30_000);

  it("refuses a missing or malformed since, a forged cursor, and a request without an API key", async () => {
    const cases: [string, string][] = [
      ["", "since"],
      ["?since=yesterday", "since"],
      ["?since=1&since=2", "since"],
      ["?since=1&after=not-a-cursor", "after"],
    ];
    for (const [query, param] of cases) {
      const response = await edge(`/admin/calls${query}`, { apiKey: API_KEY });
      expect(response.status, query).toBe(400);
      expect((await errorOf(response)).param).toBe(param);
    }
    expect((await edge("/admin/calls?since=1")).status).toBe(401);
    expect((await edge("/admin/calls?since=1", { apiKey: "sk_wrong" })).status).toBe(401);
  });

  it("catches up with a call whose end the index missed, when the call drops its live details (24 h)", async () => {
    const since = await ownSecond();
    const { callId, relayId } = await connectedCall();
    await hangupFromRelay(callId, relayId);
    const index = callIndex(env, await apiKeyId(API_KEY));
    await waitForIndexed(`?since=${since}`, 1);
    // As if the write of the end had been lost: the index still says connected.
    await runInDurableObject(index, async (_instance, state) => {
      const row = state.storage.sql
        .exec<{ record: string }>("SELECT record FROM calls WHERE call_id = ?", callId)
        .one();
      const stale = { ...(JSON.parse(row.record) as CallView), state: "connected", end_reason: null };
      state.storage.sql.exec(
        "UPDATE calls SET record = ?, rank = 3 WHERE call_id = ?",
        JSON.stringify(stale),
        callId,
      );
    });
    const stateInIndex = async () =>
      ((await index.list(since * 1000, 10, null)) as CallPage).records.find((r) => r.id === callId)?.state;
    expect(await stateInIndex()).toBe("connected");
    advance(DAY_MS + 1000);
    await runDurableObjectAlarm(callSession(env, callId)!);
    for (let tries = 0; tries < 100 && (await stateInIndex()) !== "ended"; tries++)
      await new Promise((resolve) => setTimeout(resolve, 10));
    expect(await stateInIndex()).toBe("ended");
  });

  it("forgets records past EARSHOT_CALL_RECORD_DAYS (30) when its alarm sweeps", async () => {
    const since = await ownSecond();
    const { callId, relayId } = await connectedCall();
    await hangupFromRelay(callId, relayId);
    await waitForIndexed(`?since=${since}`, 1);
    const index = callIndex(env, await apiKeyId(API_KEY));
    const listed = async () =>
      ((await index.list(since * 1000, 10, null)) as CallPage).records.map((record) => record.id);
    advance(29 * DAY_MS);
    await runDurableObjectAlarm(index);
    expect(await listed()).toEqual([callId]);
    advance(DAY_MS + 1000);
    await runDurableObjectAlarm(index);
    expect(await listed()).toEqual([]);
  });
});

/**
 * The index is written in the background (waitUntil): waits on the index itself (not through
 * the rate-limited front door) until it holds `count` records, then reads the page publicly.
 */
async function waitForIndexed(query: string, count: number) {
  const since = Number(new URLSearchParams(query).get("since")) * 1000;
  const index = callIndex(env, await apiKeyId(API_KEY));
  for (let tries = 0; tries < 300; tries++) {
    const page = (await index.list(since, MAX_PAGE_SIZE, null)) as CallPage;
    if (page.records.length >= count && page.records.every((r) => r.state !== "answered")) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return listing(query);
}

describe("the conversation log", () => {
  const message = (
    id: string,
    previous: string | null,
    role: "user" | "assistant",
    text?: string,
  ): LogItem => ({
    id,
    previous_item_id: previous,
    type: "message",
    role,
    ...(text === undefined ? {} : { text }),
  });

  async function logOf(callId: string) {
    const response = await edge(`/v1/realtime/calls/${callId}/log`, { apiKey: API_KEY });
    expect(response.status).toBe(200);
    return (await response.json()) as {
      object: string;
      call_id: string;
      items: LogItem[];
      text_dropped_items: number;
      items_dropped: number;
    };
  }

  async function sendLog(callId: string, relayId: string, items: LogItem[]) {
    return relayEvent(callId, { type: "log", relay_id: relayId, at: at(), items });
  }

  it("keeps items in conversation order; a later version of an item (transcript, truncation) replaces it", async () => {
    const { callId, relayId } = await connectedCall();
    const call: LogItem = {
      id: "item_3",
      previous_item_id: "item_2",
      type: "function_call",
      call_id: "call_1",
      name: "get_weather",
      arguments: '{"city":"Paris"}',
    };
    const output: LogItem = {
      id: "item_4",
      previous_item_id: "item_3",
      type: "function_call_output",
      call_id: "call_1",
      output: '{"temp":18}',
    };
    expect((await sendLog(callId, relayId, [message("item_1", null, "user")])).status).toBe(204);
    expect(
      (
        await sendLog(callId, relayId, [
          message("item_1", null, "user", "weather in Paris?"),
          message("item_2", "item_1", "assistant", "Let me check."),
        ])
      ).status,
    ).toBe(204);
    expect(
      (
        await sendLog(callId, relayId, [
          call,
          output,
          message("item_5", "item_4", "assistant", "It is 18 degrees"),
        ])
      ).status,
    ).toBe(204);
    await hangupFromRelay(callId, relayId);
    // After the end too: the relay's last items may follow its ended.
    expect(
      (
        await sendLog(callId, relayId, [
          { ...message("item_5", "item_4", "assistant"), truncated_at_ms: 800 },
        ])
      ).status,
    ).toBe(204);
    const log = await logOf(callId);
    expect(log).toMatchObject({
      object: "realtime.call.log",
      call_id: callId,
      text_dropped_items: 0,
      items_dropped: 0,
    });
    expect(log.items).toEqual([
      message("item_1", null, "user", "weather in Paris?"),
      message("item_2", "item_1", "assistant", "Let me check."),
      call,
      output,
      { ...message("item_5", "item_4", "assistant", "It is 18 degrees"), truncated_at_ms: 800 },
    ]);
    // Kept with the record: after the live call's retention it is still there.
    advance(DAY_MS + 1000);
    await runDurableObjectAlarm(callSession(env, callId)!);
    const kept = await callSession(env, callId)!.conversationLog(await owner());
    expect(kept.ok && kept.value.items).toHaveLength(5);
  });

  it(`keeps ${MAX_KEPT_TEXT / 1024} KiB of text: past it the oldest items lose their text first, keeping ids and roles`, async () => {
    const { callId, relayId } = await connectedCall();
    const count = MAX_KEPT_TEXT / MAX_LOG_TEXT_CHARS; // 16 items of full text: exactly at the bound
    const items = Array.from({ length: count }, (_, i) =>
      message(
        `item_${i}`,
        i === 0 ? null : `item_${i - 1}`,
        i % 2 ? "assistant" : "user",
        String(i % 10).repeat(MAX_LOG_TEXT_CHARS),
      ),
    );
    // One item an event: a single event's request is bounded (16 KiB); batches carry more.
    for (const item of items) expect((await sendLog(callId, relayId, [item])).status).toBe(204);
    let log = await logOf(callId);
    expect(log.text_dropped_items).toBe(0);
    expect(log.items.every((item) => item.text?.length === MAX_LOG_TEXT_CHARS)).toBe(true);
    expect(
      (await sendLog(callId, relayId, [message("item_last", `item_${count - 1}`, "user", "x")])).status,
    ).toBe(204);
    log = await logOf(callId);
    expect(log.text_dropped_items).toBe(1);
    expect(log.items[0]).toEqual({ id: "item_0", previous_item_id: null, type: "message", role: "user" });
    expect(log.items[1]!.text).toHaveLength(MAX_LOG_TEXT_CHARS);
    expect(log.items.at(-1)!.text).toBe("x");
  });

  it(`keeps ${MAX_LOG_ITEMS} items: past it the oldest go, counted`, async () => {
    const { callId, relayId } = await connectedCall();
    const batches = MAX_LOG_ITEMS / MAX_LOG_ITEMS_PER_EVENT;
    for (let b = 0; b < batches; b++) {
      const items = Array.from({ length: MAX_LOG_ITEMS_PER_EVENT }, (_, i) =>
        message(`item_${b * MAX_LOG_ITEMS_PER_EVENT + i}`, null, "user"),
      );
      expect((await sendLog(callId, relayId, items)).status).toBe(204);
    }
    let log = await logOf(callId);
    expect(log.items).toHaveLength(MAX_LOG_ITEMS);
    expect(log.items_dropped).toBe(0);
    expect((await sendLog(callId, relayId, [message("item_new", null, "user")])).status).toBe(204);
    log = await logOf(callId);
    expect(log.items).toHaveLength(MAX_LOG_ITEMS);
    expect(log.items_dropped).toBe(1);
    expect(log.items[0]!.id).toBe("item_1");
    expect(log.items.at(-1)!.id).toBe("item_new");
  });

  it(`refuses an event of more than ${MAX_LOG_ITEMS_PER_EVENT} items, or a text over ${MAX_LOG_TEXT_CHARS} characters`, async () => {
    const { callId, relayId } = await connectedCall();
    const many = (n: number) => Array.from({ length: n }, (_, i) => message(`item_${i}`, null, "user"));
    expect((await sendLog(callId, relayId, many(MAX_LOG_ITEMS_PER_EVENT))).status).toBe(204);
    expect((await sendLog(callId, relayId, many(MAX_LOG_ITEMS_PER_EVENT + 1))).status).toBe(400);
    const long = (n: number) => [message("item_long", null, "user", "a".repeat(n))];
    expect((await sendLog(callId, relayId, long(MAX_LOG_TEXT_CHARS))).status).toBe(204);
    expect((await sendLog(callId, relayId, long(MAX_LOG_TEXT_CHARS + 1))).status).toBe(400);
    // Audio never: an item with an audio field is not a log item.
    const withAudio = [{ ...message("item_a", null, "user"), audio: "AAAA" }] as unknown as LogItem[];
    expect((await sendLog(callId, relayId, withAudio)).status).toBe(400);
    expect((await logOf(callId)).items).toHaveLength(MAX_LOG_ITEMS_PER_EVENT + 1);
  });
});
