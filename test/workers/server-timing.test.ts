// Server-Timing: an operator (or a browser's devtools) sees where the edge spent a request's
// time. Only the parts and their form are checked here; the bench reads the durations.
import { describe, expect, it } from "vitest";
import { mintSecret, offerSdp, postClientSecret, postOffer, soloRelay } from "./fixtures.ts";

/** `name;dur=1.5, …` as [name, ms] pairs, failing on anything else. */
function timingOf(response: Response): [string, number][] {
  const header = response.headers.get("server-timing");
  expect(header).not.toBeNull();
  return header!.split(", ").map((entry) => {
    const match = /^([a-z-]+);dur=(\d+(?:\.\d)?)$/.exec(entry);
    expect(match, entry).not.toBeNull();
    return [match![1]!, Number(match![2])];
  });
}

const names = (response: Response) => timingOf(response).map(([name]) => name);

describe("Server-Timing", () => {
  it("breaks a call down into the IP limit, body, auth, ledger, session and relay, with the total last", async () => {
    const { query } = await soloRelay();
    const secret = await mintSecret();
    const response = await postOffer(offerSdp(), { bearer: secret.value, query });
    expect(response.status).toBe(201);
    const parts = names(response);
    for (const part of ["ip", "body", "auth", "ledger", "session", "relay"]) expect(parts).toContain(part);
    expect(parts.at(-1)).toBe("total");
  });

  it("breaks a client secret down into the limits, body, signing and ledger", async () => {
    const response = await postClientSecret();
    expect(response.status).toBe(200);
    const parts = names(response);
    for (const part of ["ip", "auth", "limit", "body", "sign", "ledger"]) expect(parts).toContain(part);
    expect(parts.at(-1)).toBe("total");
  });

  it("is on refusals too, up to the step that refused", async () => {
    const response = await postOffer(offerSdp(), { bearer: "ek_not-a-secret" });
    expect(response.status).toBe(401);
    expect(names(response)).toEqual(["ip", "body", "auth", "total"]);
  });
});
