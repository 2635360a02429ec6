// A token bucket (per process): `burst` tokens at most, refilled at `ratePerSecond`. A request
// takes one token or is refused with the time until one is available, which the shell turns
// into a Retry-After / RESOURCE_EXHAUSTED at the edge. Time only moves forward: an earlier
// `nowMs` than the last one seen refills nothing.

import { invariant } from "./errors.js";
import { RATE_LIMIT_PER_SECOND_MAX } from "./limits.js";

export interface TokenBucket {
  readonly ratePerSecond: number;
  readonly burst: number;
  tokens: number;
  lastMs: number;
}

/** Starts full, so a process that just started is not throttled for its first burst. */
export function createTokenBucket(ratePerSecond: number, burst: number, nowMs: number): TokenBucket {
  invariant(ratePerSecond > 0 && ratePerSecond <= RATE_LIMIT_PER_SECOND_MAX, "ratePerSecond out of range");
  invariant(burst >= 1, "burst must be >= 1");
  return { ratePerSecond, burst, tokens: burst, lastMs: nowMs };
}

function refill(b: TokenBucket, nowMs: number): void {
  if (nowMs > b.lastMs) {
    b.tokens = Math.min(b.burst, b.tokens + ((nowMs - b.lastMs) * b.ratePerSecond) / 1000);
    b.lastMs = nowMs;
  }
}

/** Refills are sums of fractions (e.g. 333 ms at 3/s); forgive float rounding below a nano-token. */
const TOKEN_EPSILON = 1e-9;

export type Acquire = { ok: true } | { ok: false; retryAfterMs: number };

export function tryAcquire(b: TokenBucket, nowMs: number, tokens = 1): Acquire {
  invariant(tokens > 0 && tokens <= b.burst, "tokens must be in 1..burst");
  refill(b, nowMs);
  if (b.tokens + TOKEN_EPSILON >= tokens) {
    b.tokens = Math.max(0, b.tokens - tokens);
    return { ok: true };
  }
  return { ok: false, retryAfterMs: Math.ceil(((tokens - b.tokens) * 1000) / b.ratePerSecond) };
}

export function availableTokens(b: TokenBucket, nowMs: number): number {
  refill(b, nowMs);
  return b.tokens;
}
