// Breakers in the shell: outcomes decide (not exceptions), the rolling window rotates on our
// Clock, the open set follows opossum's state, half-open lets one trial through, LRU bounds them.
import { afterEach, describe, expect, it, vi } from "vitest";
import { BREAKER_DEFAULTS } from "../../src/core/retry.js";
import { ManualClock } from "../../src/etcd/clock.js";
import { BreakerOpenError, Breakers } from "../../src/mesh/breakers.js";

const opts = {
  ...BREAKER_DEFAULTS,
  volumeThreshold: 4,
  errorThresholdPercentage: 50,
  resetTimeout: 1_000,
  rollingCountTimeout: 10_000,
};

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

function outcome(b: Breakers, id: string, failed: boolean): boolean {
  const end = b.begin("svc", id, opts);
  if (end instanceof BreakerOpenError) return false;
  end(failed);
  return true;
}

afterEach(() => {
  vi.useRealTimers();
});

describe("Breakers", () => {
  it("opens at the error threshold once the volume is reached, and refuses tries", async () => {
    const b = new Breakers(new ManualClock());
    for (let i = 0; i < 3; i++) outcome(b, "a", true);
    await settle();
    expect(b.open("svc")?.has("a") ?? false).toBe(false); // under the volume threshold
    outcome(b, "a", true);
    await settle();
    expect(b.open("svc")?.has("a")).toBe(true);
    expect(b.begin("svc", "a", opts)).toBeInstanceOf(BreakerOpenError);
    expect(b.list()[0]).toMatchObject({ instanceId: "a", state: "open", failures: 4 });
    b.close();
  });

  it("forgets failures that rotated out of the window (driven by the clock)", async () => {
    const clock = new ManualClock();
    const b = new Breakers(clock);
    for (let i = 0; i < 3; i++) outcome(b, "a", true);
    await settle();
    clock.advance(11_000); // the whole window rotates
    outcome(b, "a", true);
    for (let i = 0; i < 3; i++) outcome(b, "a", false);
    await settle();
    expect(b.open("svc")?.has("a") ?? false).toBe(false);
    b.close();
  });

  it("half-open lets one trial through; its success closes the breaker", async () => {
    vi.useFakeTimers();
    const b = new Breakers(new ManualClock());
    for (let i = 0; i < 4; i++) outcome(b, "a", true);
    await settle();
    expect(b.open("svc")?.has("a")).toBe(true);
    vi.advanceTimersByTime(1_000); // opossum's resetTimeout
    expect(b.list()[0]?.state).toBe("half-open");
    expect(b.open("svc")?.has("a") ?? false).toBe(false);
    const trial = b.begin("svc", "a", opts);
    expect(trial).not.toBeInstanceOf(BreakerOpenError);
    expect(b.open("svc")?.has("a")).toBe(true); // no second trial while one runs
    expect(b.begin("svc", "a", opts)).toBeInstanceOf(BreakerOpenError);
    (trial as (f: boolean) => void)(false);
    await settle();
    expect(b.list()[0]?.state).toBe("closed");
    expect(b.open("svc")?.has("a") ?? false).toBe(false);
    b.close();
  });

  it("keeps at most `max` breakers (LRU) and drops those of instances that left", async () => {
    const b = new Breakers(new ManualClock(), 3);
    for (const id of ["a", "b", "c", "d"]) outcome(b, id, false);
    expect(b.list().map((x) => x.instanceId)).toEqual(["b", "c", "d"]);
    b.retain("svc", new Set(["c"]));
    expect(b.list().map((x) => x.instanceId)).toEqual(["c"]);
    b.close();
  });
});
