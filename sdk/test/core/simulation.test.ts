// Cores wired together on a simulated clock, from a seed (STYLE.md §3): the router picks,
// a fake fleet answers, outcomes feed outlier ejection and the load tracker, tick() runs at
// the deadlines the ejection core asks for. Each scenario prints its seed on failure.
import { describe, expect, it } from "vitest";
import { onRequestEnd, onRequestStart } from "../../src/core/balancers/p2c-peak-ewma.js";
import {
  createEjectionState,
  type EjectionEvent,
  ejectedIds,
  ejectionConfig,
  nextDeadlineMs,
  onOutcome,
  syncHosts,
  tick,
} from "../../src/core/ejection.js";
import { type Policy, validatePolicy } from "../../src/core/policy.js";
import { seededRand } from "../../src/core/random.js";
import { createRetryBudget, recordRequest, tryRetry } from "../../src/core/retry-budget.js";
import { createRouterState, route } from "../../src/core/route.js";
import { counts, inst, SEEDS } from "./helpers.js";

const fleet = Array.from({ length: 10 }, (_, i) => inst(`n${i}`, { zone: i < 5 ? "a" : "b" }));

function policy(kind: string): Policy {
  const r = validatePolicy({
    schemaVersion: 1,
    service: "svc",
    loadBalancer: { kind, zoneAware: { enabled: true } },
    outlierDetection: { consecutiveFailures: 5, baseEjectionTimeMs: 30_000 },
    retries: { attempts: 1, budget: { ratio: 0.2, minRetriesPerSecond: 1 } },
  });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.policy;
}

/** One request every `stepMs` for `durationMs`; `broken(id, nowMs)` says which instances fail. */
function simulate(seed: number, kind: string, broken: (id: string, nowMs: number) => boolean) {
  const rand = seededRand(seed);
  const p = policy(kind);
  const router = createRouterState({ localZone: "a" });
  const ejection = createEjectionState(ejectionConfig(p.outlierDetection), 0);
  syncHosts(
    ejection,
    fleet.map((i) => i.id),
  );
  const budget = createRetryBudget(p.retries?.budget, 0);
  const events: (EjectionEvent & { atMs: number })[] = [];
  const picks: { atMs: number; id: string }[] = [];
  let failures = 0;
  let retries = 0;
  for (let nowMs = 0; nowMs < 120_000; nowMs += 10) {
    if (nowMs >= nextDeadlineMs(ejection))
      for (const e of tick(ejection, nowMs)) events.push({ ...e, atMs: nowMs });
    recordRequest(budget, nowMs);
    for (let attempt = 0; attempt < 2; attempt++) {
      const d = route(p, { method: "GET", path: "/", headers: {} }, fleet, router, nowMs, rand, {
        ejected: ejectedIds(ejection),
        explain: false,
      });
      const id = d.instance!.id;
      picks.push({ atMs: nowMs, id });
      onRequestStart(router.load, id, nowMs);
      const ok = !broken(id, nowMs);
      onRequestEnd(router.load, id, nowMs, ok ? 5 : 1);
      for (const e of onOutcome(ejection, id, nowMs, ok)) events.push({ ...e, atMs: nowMs });
      if (ok) break;
      failures += 1;
      if (!tryRetry(budget, nowMs)) break;
      retries += 1;
    }
  }
  return { events, picks, failures, retries };
}

describe("simulation: a broken instance in the local zone", () => {
  for (const kind of ["round-robin", "p2c-peak-ewma", "maglev"]) {
    it(`${kind}: n1 is ejected after 5 failures, returns after 30 s, is ejected again for 60 s`, () => {
      for (const seed of SEEDS) {
        const { events, picks } = simulate(seed, kind, (id) => id === "n1");
        const n1 = events.filter((e) => e.id === "n1").map((e) => [e.type, e.atMs]);
        expect(n1.length, `seed ${seed}`).toBeGreaterThanOrEqual(3);
        expect(n1[0]![0]).toBe("ejected");
        expect(n1[1]).toEqual(["returned", (n1[0]![1] as number) + 30_000]);
        const second = events.filter((e) => e.id === "n1" && e.type === "ejected")[1];
        expect(second?.type === "ejected" && second.ejectionTimeMs, `seed ${seed}`).toBe(60_000);
        // While ejected, n1 gets nothing; traffic stays in zone a (4 of 5 available >= 70%).
        const from = n1[0]![1] as number;
        const during = picks.filter((p) => p.atMs > from && p.atMs < from + 30_000);
        expect(
          during.some((p) => p.id === "n1"),
          `seed ${seed}`,
        ).toBe(false);
        expect(new Set(during.map((p) => p.id)), `seed ${seed}`).toEqual(new Set(["n0", "n2", "n3", "n4"]));
      }
    });
  }

  it("a whole zone failing: its instances are ejected up to the max percent, the rest fail over", () => {
    const { events, picks } = simulate(42, "round-robin", (id) =>
      ["n0", "n1", "n2", "n3", "n4"].includes(id),
    );
    // Envoy's default max_ejection_percent is 10 %: one host of ten may be ejected at a time.
    const refused = events.filter((e) => e.type === "ejection-refused");
    expect(refused.length).toBeGreaterThan(0);
    const late = counts(picks.filter((p) => p.atMs > 60_000).map((p) => p.id));
    // With one of five local instances ejected (80% >= 70%) zone a keeps its traffic: the
    // detectors, not the router, decide how much of a zone may be considered broken.
    expect([...late.keys()].every((id) => ["n0", "n1", "n2", "n3", "n4"].includes(id))).toBe(true);
  });

  it("the retry budget bounds retries to about 20% of requests plus the minimum", () => {
    const { failures, retries } = simulate(7, "round-robin", (id, nowMs) => nowMs > 10_000 && id !== "n9");
    // 11 000 requests after 10 s, nearly all failing: retries <= 0.2 * requests + 1/s * 10 s per window.
    expect(failures).toBeGreaterThan(10_000);
    expect(retries).toBeLessThan(0.2 * 12_000 + 120);
  });
});
