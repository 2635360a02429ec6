// Which failures are retried, and whether one more try may go ahead: the retry policy's
// `retryOn` conditions (named after Envoy's x-envoy-retry-on / x-envoy-retry-grpc-on values),
// its attempt limit and the retry budget, in one pure decision the shell asks after each try.
// Also the breaker options the shell hands to opossum, with defaults, so thresholds come from
// the policy and nowhere else.

import type { BreakerPolicy, RetryCondition, RetryPolicy } from "./policy.js";
import { type RetryBudgetState, tryRetry } from "./retry-budget.js";

/** How one try ended, as the shell observed it. */
export type CallOutcome =
  | { readonly kind: "response"; readonly status: number }
  | { readonly kind: "grpc"; readonly code: number }
  | { readonly kind: "connect-failure" }
  | { readonly kind: "reset" }
  | { readonly kind: "refused-stream" }
  | { readonly kind: "timeout" };

/** gRPC status codes (grpc/doc/statuscodes.md). */
export const GRPC_RESOURCE_EXHAUSTED = 8;
export const GRPC_UNAVAILABLE = 14;

/**
 * Without `retryOn`, only failures where the request cannot have been processed are retried:
 * the connection failed, the stream was refused, or gRPC said UNAVAILABLE. Retrying anything
 * else is only safe for idempotent calls, which the policy must say explicitly.
 */
export const RETRY_ON_DEFAULT: readonly RetryCondition[] = [
  "connect-failure",
  "refused-stream",
  "unavailable",
];

function matches(cond: RetryCondition, o: CallOutcome, statusCodes: readonly number[]): boolean {
  switch (cond) {
    case "5xx":
      // Envoy: any 5xx, or no response at all (connect failure, reset, refused stream).
      return (
        (o.kind === "response" && o.status >= 500 && o.status <= 599) ||
        o.kind === "connect-failure" ||
        o.kind === "reset" ||
        o.kind === "refused-stream"
      );
    case "gateway-error":
      return o.kind === "response" && (o.status === 502 || o.status === 503 || o.status === 504);
    case "reset":
      return o.kind === "reset";
    case "connect-failure":
      return o.kind === "connect-failure";
    case "refused-stream":
      return o.kind === "refused-stream";
    case "retriable-status-codes":
      return o.kind === "response" && statusCodes.includes(o.status);
    case "timeout":
      return o.kind === "timeout";
    case "unavailable":
      return o.kind === "grpc" && o.code === GRPC_UNAVAILABLE;
    case "resource-exhausted":
      return o.kind === "grpc" && o.code === GRPC_RESOURCE_EXHAUSTED;
  }
}

/** Whether the policy's conditions cover this outcome (a success never is). */
export function isRetriable(retries: RetryPolicy | undefined, outcome: CallOutcome): boolean {
  const conditions = retries?.retryOn ?? RETRY_ON_DEFAULT;
  const codes = retries?.retriableStatusCodes ?? [];
  return conditions.some((c) => matches(c, outcome, codes));
}

export type RetryDecision =
  | { readonly retry: true }
  | { readonly retry: false; readonly why: "not-retriable" | "attempts-exhausted" | "budget-exhausted" };

/**
 * After try number `triesSoFar` (1 after the first) failed with `outcome`: retry or not.
 * `attempts` counts retries after the first try (Envoy's num_retries). The budget is asked
 * last, because tryRetry withdraws from it.
 */
export function decideRetry(
  retries: RetryPolicy | undefined,
  triesSoFar: number,
  outcome: CallOutcome,
  budget: RetryBudgetState | undefined,
  nowMs: number,
): RetryDecision {
  if (!isRetriable(retries, outcome)) return { retry: false, why: "not-retriable" };
  if (triesSoFar > (retries?.attempts ?? 0)) return { retry: false, why: "attempts-exhausted" };
  if (budget !== undefined && !tryRetry(budget, nowMs)) return { retry: false, why: "budget-exhausted" };
  return { retry: true };
}

/** opossum's option names, with the defaults this SDK uses when the policy says nothing. */
export interface BreakerOptions {
  readonly errorThresholdPercentage: number;
  readonly volumeThreshold: number;
  readonly resetTimeout: number;
  readonly rollingCountTimeout: number;
}

export const BREAKER_DEFAULTS: BreakerOptions = {
  errorThresholdPercentage: 50,
  volumeThreshold: 20,
  resetTimeout: 30_000,
  rollingCountTimeout: 10_000,
};

export function breakerOptions(b: BreakerPolicy | undefined): BreakerOptions {
  return {
    errorThresholdPercentage: b?.errorThresholdPercentage ?? BREAKER_DEFAULTS.errorThresholdPercentage,
    volumeThreshold: b?.volumeThreshold ?? BREAKER_DEFAULTS.volumeThreshold,
    resetTimeout: b?.resetTimeoutMs ?? BREAKER_DEFAULTS.resetTimeout,
    rollingCountTimeout: b?.rollingWindowMs ?? BREAKER_DEFAULTS.rollingCountTimeout,
  };
}

/** The token bucket parameters of a policy's rate limit; burst defaults to one second's worth. */
export function rateLimitParams(r: { readonly requestsPerSecond: number; readonly burst?: number }): {
  ratePerSecond: number;
  burst: number;
} {
  return {
    ratePerSecond: r.requestsPerSecond,
    burst: r.burst ?? Math.max(1, Math.ceil(r.requestsPerSecond)),
  };
}
