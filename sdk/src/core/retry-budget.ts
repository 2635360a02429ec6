// A retry budget after Finagle's RetryBudget (com.twitter.finagle.service.RetryBudget) and
// Envoy's retry_budget: retries are allowed while
//     retries in window + 1 <= ratio * requests in window + minRetriesPerSecond * window seconds
// so a healthy service can always retry a little (the per-second minimum), and an unhealthy
// one cannot multiply its load by more than 1 + ratio (retry storms are bounded).
//
// The window is a ring of RETRY_BUDGET_BUCKETS buckets; an event at time t is in the window at
// `nowMs` when floor(t / bucketMs) > floor(nowMs / bucketMs) - buckets. Time only moves forward:
// an earlier `nowMs` than the last one seen is treated as the last one.

import { invariant } from "./errors.js";
import {
  RETRY_BUDGET_BUCKETS,
  RETRY_BUDGET_MIN_PER_SECOND_DEFAULT,
  RETRY_BUDGET_RATIO_DEFAULT,
  RETRY_BUDGET_WINDOW_MS_DEFAULT,
} from "./limits.js";

export interface RetryBudgetConfig {
  readonly ratio: number;
  readonly minRetriesPerSecond: number;
  readonly windowMs: number;
}

export interface RetryBudgetState {
  readonly config: RetryBudgetConfig;
  readonly bucketMs: number;
  /** Bucket number each slot currently holds (slot = bucket % buckets). */
  readonly slotBucket: Float64Array;
  readonly requests: Float64Array;
  readonly retries: Float64Array;
  lastMs: number;
}

export function createRetryBudget(config: Partial<RetryBudgetConfig> = {}, nowMs = 0): RetryBudgetState {
  const c: RetryBudgetConfig = {
    ratio: config.ratio ?? RETRY_BUDGET_RATIO_DEFAULT,
    minRetriesPerSecond: config.minRetriesPerSecond ?? RETRY_BUDGET_MIN_PER_SECOND_DEFAULT,
    windowMs: config.windowMs ?? RETRY_BUDGET_WINDOW_MS_DEFAULT,
  };
  invariant(c.ratio >= 0, "retry budget ratio must be >= 0");
  invariant(c.minRetriesPerSecond >= 0, "minRetriesPerSecond must be >= 0");
  invariant(c.windowMs >= RETRY_BUDGET_BUCKETS, "retry budget window is too short");
  return {
    config: c,
    bucketMs: c.windowMs / RETRY_BUDGET_BUCKETS,
    slotBucket: new Float64Array(RETRY_BUDGET_BUCKETS).fill(-1),
    requests: new Float64Array(RETRY_BUDGET_BUCKETS),
    retries: new Float64Array(RETRY_BUDGET_BUCKETS),
    lastMs: nowMs,
  };
}

function slotFor(s: RetryBudgetState, nowMs: number): number {
  s.lastMs = Math.max(s.lastMs, nowMs);
  const bucket = Math.floor(s.lastMs / s.bucketMs);
  const slot = bucket % RETRY_BUDGET_BUCKETS;
  if (s.slotBucket[slot] !== bucket) {
    s.slotBucket[slot] = bucket;
    s.requests[slot] = 0;
    s.retries[slot] = 0;
  }
  return slot;
}

function windowSums(s: RetryBudgetState): { requests: number; retries: number } {
  const current = Math.floor(s.lastMs / s.bucketMs);
  let requests = 0;
  let retries = 0;
  for (let k = 0; k < RETRY_BUDGET_BUCKETS; k++) {
    if (s.slotBucket[k]! > current - RETRY_BUDGET_BUCKETS) {
      requests += s.requests[k]!;
      retries += s.retries[k]!;
    }
  }
  return { requests, retries };
}

/** Counts an original request (not a retry): it earns `ratio` retries. */
export function recordRequest(s: RetryBudgetState, nowMs: number): void {
  s.requests[slotFor(s, nowMs)]! += 1;
}

/** How many retries the budget would allow now (may be fractional; a retry needs >= 1). */
export function retryBalance(s: RetryBudgetState, nowMs: number): number {
  slotFor(s, nowMs);
  const { requests, retries } = windowSums(s);
  const reserve = (s.config.minRetriesPerSecond * s.config.windowMs) / 1000;
  return s.config.ratio * requests + reserve - retries;
}

/** Withdraws one retry if the budget allows it; returns whether the retry may go ahead. */
export function tryRetry(s: RetryBudgetState, nowMs: number): boolean {
  // The epsilon forgives float rounding in ratio * requests (0.1 * 10 must allow one retry).
  if (retryBalance(s, nowMs) < 1 - 1e-9) return false;
  s.retries[slotFor(s, nowMs)]! += 1;
  return true;
}
