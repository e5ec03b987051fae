import { reset } from "cloudflare:test";
import { beforeEach, expect, it } from "vitest";
import { API_KEY, edge, errorOf, mintSecret, registerRelays, unique } from "./fixtures.ts";

beforeEach(async () => {
  await reset();
});

it("lists the registry for an API key: each relay, when it was heard from, and whether it is usable", async () => {
  const live = unique("live");
  const draining = unique("drain");
  await registerRelays({ relay_id: live }, { relay_id: draining, draining: true });
  const res = await edge("/admin/relays", { headers: { Authorization: `Bearer ${API_KEY}` } });
  expect(res.status).toBe(200);
  const body = (await res.json()) as {
    data: { relay_id: string; usable: boolean; unusable_reason: string | null; last_seen_ago_ms: number }[];
  };
  const byId = new Map(body.data.map((r) => [r.relay_id, r]));
  expect(byId.get(live)).toMatchObject({ usable: true, unusable_reason: null });
  expect(byId.get(draining)).toMatchObject({ usable: false, unusable_reason: "draining" });
  expect(byId.get(live)!.last_seen_ago_ms).toBeGreaterThanOrEqual(0);
});

it("refuses anyone without an API key, client secrets included", async () => {
  expect((await edge("/admin/relays")).status).toBe(401);
  const { value } = await mintSecret();
  const res = await edge("/admin/relays", { headers: { Authorization: `Bearer ${value}` } });
  expect(res.status).toBe(401);
  expect((await errorOf(res)).code).toBe("invalid_api_key");
});
