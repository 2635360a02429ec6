import { describe, expect, it } from "vitest";
import {
  breakerOptions,
  type CallOutcome,
  decideRetry,
  isRetriable,
  rateLimitParams,
} from "../../src/core/retry.js";
import { createRetryBudget } from "../../src/core/retry-budget.js";

const http = (status: number): CallOutcome => ({ kind: "response", status });

describe("retry conditions", () => {
  it("by default retries only what cannot have been processed", () => {
    expect(isRetriable(undefined, { kind: "connect-failure" })).toBe(true);
    expect(isRetriable(undefined, { kind: "refused-stream" })).toBe(true);
    expect(isRetriable(undefined, { kind: "grpc", code: 14 })).toBe(true);
    expect(isRetriable(undefined, http(503))).toBe(false);
    expect(isRetriable(undefined, { kind: "reset" })).toBe(false);
    expect(isRetriable(undefined, { kind: "timeout" })).toBe(false);
  });

  it("5xx covers server errors and no response, as Envoy's", () => {
    const r = { attempts: 2, retryOn: ["5xx" as const] };
    expect([500, 503, 599].map((s) => isRetriable(r, http(s)))).toEqual([true, true, true]);
    expect([200, 404, 429].map((s) => isRetriable(r, http(s)))).toEqual([false, false, false]);
    expect(isRetriable(r, { kind: "reset" })).toBe(true);
    expect(isRetriable(r, { kind: "timeout" })).toBe(false);
  });

  it("gateway-error, retriable-status-codes and gRPC codes", () => {
    expect(isRetriable({ attempts: 1, retryOn: ["gateway-error"] }, http(500))).toBe(false);
    expect(isRetriable({ attempts: 1, retryOn: ["gateway-error"] }, http(504))).toBe(true);
    const codes = { attempts: 1, retryOn: ["retriable-status-codes" as const], retriableStatusCodes: [429] };
    expect(isRetriable(codes, http(429))).toBe(true);
    expect(isRetriable(codes, http(503))).toBe(false);
    expect(isRetriable({ attempts: 1, retryOn: ["resource-exhausted"] }, { kind: "grpc", code: 8 })).toBe(
      true,
    );
  });
});

describe("decideRetry", () => {
  const policy = { attempts: 2, retryOn: ["5xx" as const] };
  it("stops after `attempts` retries", () => {
    expect(decideRetry(policy, 1, http(503), undefined, 0)).toEqual({ retry: true });
    expect(decideRetry(policy, 2, http(503), undefined, 0)).toEqual({ retry: true });
    expect(decideRetry(policy, 3, http(503), undefined, 0)).toEqual({
      retry: false,
      why: "attempts-exhausted",
    });
    expect(decideRetry(policy, 1, http(404), undefined, 0)).toEqual({ retry: false, why: "not-retriable" });
    expect(decideRetry(undefined, 1, { kind: "connect-failure" }, undefined, 0)).toEqual({
      retry: false,
      why: "attempts-exhausted",
    });
  });

  it("asks the budget last, and only for retriable failures", () => {
    const budget = createRetryBudget({ ratio: 0, minRetriesPerSecond: 0.1, windowMs: 10_000 }, 0);
    expect(decideRetry(policy, 1, http(404), budget, 0).retry).toBe(false);
    expect(decideRetry(policy, 1, http(503), budget, 0)).toEqual({ retry: true });
    expect(decideRetry(policy, 1, http(503), budget, 0)).toEqual({ retry: false, why: "budget-exhausted" });
  });
});

describe("breaker and rate-limit parameters from the policy", () => {
  it("maps to opossum's option names with defaults", () => {
    expect(breakerOptions(undefined)).toEqual({
      errorThresholdPercentage: 50,
      volumeThreshold: 20,
      resetTimeout: 30_000,
      rollingCountTimeout: 10_000,
    });
    expect(breakerOptions({ resetTimeoutMs: 5000, errorThresholdPercentage: 25 })).toMatchObject({
      resetTimeout: 5000,
      errorThresholdPercentage: 25,
    });
  });

  it("burst defaults to one second's worth", () => {
    expect(rateLimitParams({ requestsPerSecond: 2.5 })).toEqual({ ratePerSecond: 2.5, burst: 3 });
    expect(rateLimitParams({ requestsPerSecond: 100, burst: 7 })).toEqual({ ratePerSecond: 100, burst: 7 });
  });
});
