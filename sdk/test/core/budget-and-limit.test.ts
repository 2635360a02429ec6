import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { availableTokens, createTokenBucket, tryAcquire } from "../../src/core/rate-limit.js";
import { createRetryBudget, recordRequest, retryBalance, tryRetry } from "../../src/core/retry-budget.js";

describe("retry budget (Finagle RetryBudget / Envoy retry_budget)", () => {
  it("allows the per-second minimum with no traffic, then refuses", () => {
    const b = createRetryBudget({ ratio: 0.2, minRetriesPerSecond: 1, windowMs: 10_000 }, 0);
    let allowed = 0;
    for (let k = 0; k < 50; k++) if (tryRetry(b, 0)) allowed += 1;
    expect(allowed).toBe(10);
  });

  it("earns `ratio` retries per request", () => {
    const b = createRetryBudget({ ratio: 0.2, minRetriesPerSecond: 0, windowMs: 10_000 }, 0);
    for (let k = 0; k < 100; k++) recordRequest(b, 0);
    let allowed = 0;
    for (let k = 0; k < 100; k++) if (tryRetry(b, 0)) allowed += 1;
    expect(allowed).toBe(20);
  });

  it("forgets requests and retries older than the window", () => {
    const b = createRetryBudget({ ratio: 0.5, minRetriesPerSecond: 0, windowMs: 10_000 }, 0);
    for (let k = 0; k < 10; k++) recordRequest(b, 0);
    expect(retryBalance(b, 9_999)).toBe(5);
    expect(retryBalance(b, 10_000)).toBe(0);
  });

  it("agrees with a model that keeps every event (property)", () => {
    type Op = { dtMs: number; kind: "request" | "retry" };
    const op = fc.record({
      dtMs: fc.integer({ min: 0, max: 700 }),
      kind: fc.constantFrom("request" as const, "retry" as const),
    });
    fc.assert(
      fc.property(
        fc.array(op, { maxLength: 300 }),
        fc.double({ min: 0, max: 2, noNaN: true }),
        fc.integer({ min: 0, max: 3 }),
        (ops: Op[], ratio, minPerSecond) => {
          const windowMs = 5_000;
          const bucketMs = windowMs / 10;
          const b = createRetryBudget({ ratio, minRetriesPerSecond: minPerSecond, windowMs }, 0);
          const events: { t: number; kind: "request" | "retry" }[] = [];
          let now = 0;
          for (const o of ops) {
            now += o.dtMs;
            if (o.kind === "request") {
              recordRequest(b, now);
              events.push({ t: now, kind: "request" });
              continue;
            }
            // Model: events in the same or the 9 previous buckets are in the window.
            const current = Math.floor(now / bucketMs);
            const inWindow = events.filter((e) => Math.floor(e.t / bucketMs) > current - 10);
            const requests = inWindow.filter((e) => e.kind === "request").length;
            const retries = inWindow.filter((e) => e.kind === "retry").length;
            const expected = retries + 1 <= ratio * requests + (minPerSecond * windowMs) / 1000 + 1e-9;
            const got = tryRetry(b, now);
            if (Math.abs(ratio * requests + (minPerSecond * windowMs) / 1000 - retries - 1) > 1e-6) {
              expect(got).toBe(expected);
            }
            if (got) events.push({ t: now, kind: "retry" });
          }
        },
      ),
    );
  });
});

describe("token bucket rate limiter", () => {
  it("allows a full burst, then the refill rate", () => {
    const b = createTokenBucket(10, 5, 0);
    const first = Array.from({ length: 7 }, () => tryAcquire(b, 0).ok);
    expect(first).toEqual([true, true, true, true, true, false, false]);
    expect(tryAcquire(b, 0)).toEqual({ ok: false, retryAfterMs: 100 });
    expect(tryAcquire(b, 100).ok).toBe(true);
    expect(tryAcquire(b, 100).ok).toBe(false);
    expect(availableTokens(b, 10_000)).toBe(5); // never more than the burst
  });

  it("ignores time going backwards", () => {
    const b = createTokenBucket(1, 1, 1000);
    expect(tryAcquire(b, 1000).ok).toBe(true);
    expect(tryAcquire(b, 0).ok).toBe(false);
    expect(tryAcquire(b, 1999).ok).toBe(false);
    expect(tryAcquire(b, 2000).ok).toBe(true);
  });

  it("agrees with an exact integer model and never exceeds burst + rate * time (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1000 }),
        fc.integer({ min: 1, max: 50 }),
        fc.array(fc.integer({ min: 0, max: 200 }), { maxLength: 300 }),
        (ratePerSecond, burst, gaps) => {
          const b = createTokenBucket(ratePerSecond, burst, 0);
          // Model in integer milli-tokens: refill ratePerSecond milli-tokens per ms, cap at burst.
          let milli = burst * 1000;
          let now = 0;
          let admitted = 0;
          for (const gap of gaps) {
            now += gap;
            milli = Math.min(burst * 1000, milli + gap * ratePerSecond);
            const want = milli >= 1000;
            if (want) milli -= 1000;
            const got = tryAcquire(b, now).ok;
            expect(got).toBe(want);
            if (got) admitted += 1;
            expect(admitted).toBeLessThanOrEqual(burst + (ratePerSecond * now) / 1000 + 1e-9);
          }
        },
      ),
    );
  });
});
