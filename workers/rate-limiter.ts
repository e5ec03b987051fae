// RateLimiter: one Durable Object per limited identity (`ip:…`, see client-ip.ts; `key:<key id>`), running
// GCRA (a token bucket kept as one timestamp): a burst of `requests` passes, then one more each
// `periodSeconds / requests`, and a refused request learns exactly when to retry.
//
// Chosen over the Workers rate-limiting binding because its windows are approximate and
// per-location, its period is 10 or 60 s, and it cannot say when to retry; this works the same
// under workerd locally, in tests and in production. The state is in memory on purpose: an
// object is only evicted after it has been idle for longer than any sensible period, by which
// time its bucket has refilled anyway.
import { DurableObject } from "cloudflare:workers";
import type { EdgeConfig, RateLimit } from "./config.ts";
import { ApiError } from "./errors.ts";

export interface RateDecision {
  allowed: boolean;
  /** Whole seconds until one more request would pass; 0 when allowed. */
  retryAfterSeconds: number;
  remaining: number;
}

export class RateLimiter extends DurableObject<Env> {
  /** Theoretical arrival time of the next request, epoch ms. */
  #tat = 0;

  take(limit: RateLimit): RateDecision {
    const now = Date.now();
    const interval = (limit.periodSeconds * 1000) / limit.requests;
    const periodMs = limit.periodSeconds * 1000;
    // A bucket can never be more than one period ahead; if it is, the clock went backwards
    // (or the limit was lowered), and nobody should be locked out for that.
    const tat = this.#tat > now + periodMs ? now : Math.max(this.#tat, now);
    const next = tat + interval;
    if (next - now > periodMs) {
      return {
        allowed: false,
        retryAfterSeconds: Math.max(1, Math.ceil((next - periodMs - now) / 1000)),
        remaining: 0,
      };
    }
    this.#tat = next;
    return {
      allowed: true,
      retryAfterSeconds: 0,
      remaining: Math.floor((periodMs - (next - now)) / interval),
    };
  }
}

export async function enforceRateLimit(env: Env, identity: string, limit: RateLimit): Promise<void> {
  const stub = env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(identity));
  const decision = await stub.take(limit);
  if (!decision.allowed) {
    throw new ApiError(
      429,
      "rate_limit_exceeded",
      `Too many requests; retry in ${decision.retryAfterSeconds} s.`,
      {
        headers: { "Retry-After": String(decision.retryAfterSeconds) },
      },
    );
  }
}

/** An API key's own limit (EARSHOT_RATE_LIMIT_API_KEY), from whatever address it is used. */
export function limitApiKey(env: Env, config: EdgeConfig, keyId: string): Promise<void> {
  return enforceRateLimit(env, `key:${keyId}`, config.apiKeyRateLimit);
}
