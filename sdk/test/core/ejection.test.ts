import { describe, expect, it } from "vitest";
import {
  createEjectionState,
  type EjectionConfigInput,
  ejectedIds,
  ejectionConfig,
  isEjected,
  nextDeadlineMs,
  onOutcome,
  syncHosts,
  tick,
} from "../../src/core/ejection.js";

function setup(n: number, config: EjectionConfigInput = {}) {
  const s = createEjectionState(ejectionConfig({ maxEjectionPercent: 100, ...config }), 0);
  syncHosts(
    s,
    Array.from({ length: n }, (_, i) => `h${i}`),
  );
  return s;
}

function fail(s: ReturnType<typeof setup>, id: string, nowMs: number, times: number) {
  const events = [];
  for (let k = 0; k < times; k++) events.push(...onOutcome(s, id, nowMs, false));
  return events;
}

describe("outlier ejection: consecutive failures", () => {
  it("ejects a host after 5 consecutive failures (Envoy's consecutive_5xx default)", () => {
    const s = setup(10);
    expect(fail(s, "h1", 100, 4)).toEqual([]);
    expect(isEjected(s, "h1")).toBe(false);
    const events = fail(s, "h1", 100, 1);
    expect(events).toEqual([
      {
        type: "ejected",
        id: "h1",
        reason: "consecutive-failures",
        ejectionTimeMs: 30_000,
        untilMs: 30_100,
        timesEjected: 1,
      },
    ]);
    expect(isEjected(s, "h1")).toBe(true);
  });

  it("a success resets the count", () => {
    const s = setup(10);
    fail(s, "h1", 0, 4);
    onOutcome(s, "h1", 0, true);
    fail(s, "h1", 0, 4);
    expect(isEjected(s, "h1")).toBe(false);
  });

  it("respects max ejection percent, but always allows one ejection", () => {
    const s = setup(10, { maxEjectionPercent: 20 });
    for (const id of ["h0", "h1", "h2", "h3"]) fail(s, id, 0, 5);
    expect([...ejectedIds(s)]).toEqual(["h0", "h1"]);
    const refused = fail(s, "h4", 0, 5);
    expect(refused).toEqual([
      { type: "ejection-refused", id: "h4", reason: "consecutive-failures", why: "max-ejection-percent" },
    ]);
    const tiny = setup(3, { maxEjectionPercent: 1 });
    fail(tiny, "h0", 0, 5);
    fail(tiny, "h1", 0, 5);
    expect([...ejectedIds(tiny)]).toEqual(["h0"]);
  });

  it("returns the host when the ejection time passes, driven by nowMs", () => {
    const s = setup(10);
    fail(s, "h1", 1000, 5);
    expect(nextDeadlineMs(s)).toBe(10_000); // the first interval comes before the return at 31 000
    expect(tick(s, 30_999).filter((e) => e.type === "returned")).toEqual([]);
    expect(isEjected(s, "h1")).toBe(true);
    expect(tick(s, 31_000)).toEqual([{ type: "returned", id: "h1" }]);
    expect(isEjected(s, "h1")).toBe(false);
  });

  it("ejection time grows with the number of ejections (base * n), capped at the maximum", () => {
    const s = setup(10, { baseEjectionTimeMs: 30_000, maxEjectionTimeMs: 100_000, intervalMs: 1_000_000 });
    let now = 0;
    const times: number[] = [];
    for (let k = 0; k < 5; k++) {
      const [ev] = fail(s, "h1", now, 5);
      if (ev?.type !== "ejected") throw new Error("expected an ejection");
      times.push(ev.ejectionTimeMs);
      now = ev.untilMs;
      tick(s, now);
      expect(isEjected(s, "h1")).toBe(false);
    }
    expect(times).toEqual([30_000, 60_000, 90_000, 100_000, 100_000]);
  });

  it("the multiplier falls back one step per interval spent healthy", () => {
    const s = setup(10, { intervalMs: 10_000 });
    fail(s, "h1", 0, 5); // ejected until 30 000, multiplier 1
    tick(s, 30_000); // returns; the interval at 30 000 then lowers the multiplier to 0
    const [ev] = fail(s, "h1", 30_000, 5);
    expect(ev?.type === "ejected" && ev.ejectionTimeMs).toBe(30_000);
  });

  it("ignores hosts that left, and forgets them on sync", () => {
    const s = setup(3);
    fail(s, "h0", 0, 5);
    expect(onOutcome(s, "gone", 0, false)).toEqual([]);
    syncHosts(s, ["h1", "h2"]);
    expect(isEjected(s, "h0")).toBe(false);
    expect(ejectedIds(s).size).toBe(0);
  });
});

describe("outlier ejection: interval detectors", () => {
  it("success rate: ejects a host far below the mean (needs minimum hosts and volume)", () => {
    const s = setup(6, {
      consecutiveFailures: 0,
      successRate: { minimumHosts: 5, requestVolume: 100, stdevFactor: 1.9 },
    });
    for (let i = 0; i < 6; i++) {
      for (let k = 0; k < 100; k++) onOutcome(s, `h${i}`, 1, i === 5 ? k % 2 === 0 : k % 50 !== 0);
    }
    const events = tick(s, 10_000);
    expect(events.map((e) => [e.type, e.id])).toEqual([["ejected", "h5"]]);
    expect(events[0]?.type === "ejected" && events[0].reason).toBe("success-rate");
  });

  it("success rate: too few hosts with enough volume means no ejection", () => {
    const s = setup(6, { consecutiveFailures: 0, successRate: { minimumHosts: 5, requestVolume: 100 } });
    for (let i = 0; i < 4; i++) for (let k = 0; k < 100; k++) onOutcome(s, `h${i}`, 1, i !== 0);
    expect(tick(s, 10_000)).toEqual([]);
  });

  it("failure percentage: ejects hosts at or above the threshold", () => {
    const s = setup(5, {
      consecutiveFailures: 0,
      failurePercentage: { threshold: 50, minimumHosts: 5, requestVolume: 10 },
    });
    for (let i = 0; i < 5; i++) for (let k = 0; k < 10; k++) onOutcome(s, `h${i}`, 1, i === 2 ? k < 4 : true);
    const events = tick(s, 10_000);
    expect(events.map((e) => [e.type, e.id])).toEqual([["ejected", "h2"]]);
  });

  it("counts reset each interval", () => {
    const s = setup(5, {
      consecutiveFailures: 0,
      failurePercentage: { threshold: 50, minimumHosts: 5, requestVolume: 10 },
    });
    for (let i = 0; i < 5; i++) for (let k = 0; k < 10; k++) onOutcome(s, `h${i}`, 1, true);
    tick(s, 10_000);
    for (let i = 0; i < 5; i++) for (let k = 0; k < 5; k++) onOutcome(s, `h${i}`, 10_001, i !== 2);
    expect(tick(s, 20_000)).toEqual([]); // 5 requests < volume 10: the earlier 10 were reset
  });
});

describe("outlier ejection: returning hosts", () => {
  it("failures of calls in flight during the ejection do not count after the return", () => {
    const s = createEjectionState(ejectionConfig({ maxEjectionPercent: 100 }), 0);
    syncHosts(s, ["h0", "h1"]);
    for (let k = 0; k < 5; k++) onOutcome(s, "h0", 0, false);
    for (let k = 0; k < 4; k++) onOutcome(s, "h0", 10, false); // late answers while ejected
    tick(s, 30_000);
    expect(onOutcome(s, "h0", 30_001, false)).toEqual([]);
    expect(isEjected(s, "h0")).toBe(false);
  });
});
