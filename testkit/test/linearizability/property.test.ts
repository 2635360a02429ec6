// Model tests for the checker (STYLE.md §5): histories made by running the sequential model
// with random real-time overlaps are always linearizable; corrupting one read so that no
// order can explain it is always caught; and on small histories the checker agrees with a
// naive search over every order (the optimised function against the naive one).

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  checkHistory,
  formatCheckResult,
  type KvInput,
  type KvOutput,
  type KvState,
  kvModel,
  type Operation,
} from "../../src/index.js";

type Op = Operation<KvInput, KvOutput>;

const step = fc.record({
  f: fc.constantFrom("put", "get", "get", "delete", "cas"),
  key: fc.constantFrom("a", "b"),
  /** Index into the values written so far (cas's expectation), or a fresh one. */
  pick: fc.nat(20),
  /** How far the call is before, and the return after, the linearization point. */
  before: fc.nat(40),
  after: fc.nat(40),
  /** 0: ok; 1: unknown outcome, applied; 2: unknown outcome, never applied; 3: fail (not applied). */
  outcome: fc.constantFrom(0, 0, 0, 0, 0, 0, 1, 2, 3),
});

/**
 * Runs the sequential model: operation i takes effect at time 10·i + 5, called up to 40 ms
 * earlier and returning up to 40 ms later, so operations overlap in time at random.
 */
type Step = typeof step extends fc.Arbitrary<infer T> ? T : never;

function sequentialHistory(steps: Step[]): Op[] {
  const state = new Map<string, KvState>();
  const written: string[] = [];
  return steps.map((s, i) => {
    const at = 10 * i + 5;
    const value = `v${i}`;
    const current = state.get(s.key) ?? null;
    const expected = s.pick % 3 === 0 ? null : (written[s.pick % Math.max(1, written.length)] ?? current);
    const input: KvInput =
      s.f === "put"
        ? { f: "put", key: s.key, value }
        : s.f === "get"
          ? { f: "get", key: s.key }
          : s.f === "delete"
            ? { f: "delete", key: s.key }
            : { f: "cas", key: s.key, expected: s.pick % 2 === 0 ? current : expected, value };
    const applied = s.outcome === 0 || s.outcome === 1;
    let output: KvOutput = {};
    if (applied) {
      if (input.f === "put") state.set(s.key, input.value);
      if (input.f === "get") output = { value: current };
      if (input.f === "delete") {
        output = { deleted: current === null ? 0 : 1 };
        state.set(s.key, null);
      }
      if (input.f === "cas") {
        output = { succeeded: current === input.expected };
        if (current === input.expected) state.set(s.key, input.value);
      }
      if (input.f !== "get") written.push(value);
    }
    const call = at - s.before;
    if (s.outcome === 0) return { id: i, process: i, input, call, ret: at + s.after, status: "ok", output };
    if (s.outcome === 3) return { id: i, process: i, input, call, ret: at + s.after, status: "fail" };
    return { id: i, process: i, input, call, status: "unknown" };
  });
}

/** Every order of the operations that respects real time, tried one by one (no memo). */
function naiveLinearizable(ops: Op[]): boolean {
  const live = ops.filter((o) => o.status !== "fail");
  const go = (rest: Op[], state: Map<string, KvState>): boolean => {
    if (rest.every((o) => o.status === "unknown")) return true;
    for (const o of rest) {
      // o can go next only if nothing left had to finish before o was called.
      if (rest.some((p) => p.status === "ok" && p.ret! < o.call)) continue;
      const others = rest.filter((p) => p !== o);
      if (o.status === "unknown" && go(others, state)) return true; // it never took effect
      const after = kvModel.step(
        state.get(o.input.key) ?? null,
        o.input,
        o.status === "ok" ? o.output : undefined,
      );
      if (after === undefined) continue;
      if (go(others, new Map(state).set(o.input.key, after))) return true;
    }
    return false;
  };
  return go(live, new Map());
}

describe("linearizability checker: properties", () => {
  it("judges every history of the sequential model with random overlaps linearizable", () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
        const h = sequentialHistory(steps);
        const r = checkHistory(kvModel, h);
        if (r.verdict !== "linearizable") throw new Error(formatCheckResult(kvModel, r));
      }),
      { seed: 20261125, numRuns: 300 },
    );
  });

  it("catches one read corrupted to a value never written", () => {
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 60 }), fc.nat(), (steps, which) => {
        const h = sequentialHistory(steps);
        const reads = h.filter((o) => o.input.f === "get" && o.status === "ok");
        fc.pre(reads.length > 0);
        const victim = reads[which % reads.length]!;
        victim.output = { value: "never-written" };
        const r = checkHistory(kvModel, h);
        expect(r.verdict).toBe("not-linearizable");
        const failing = r.partitions.find((p) => p.verdict === "not-linearizable")!;
        expect(failing.key).toBe(victim.input.key);
      }),
      { seed: 20261126, numRuns: 300 },
    );
  });

  it("agrees with a naive search on small histories with any one output changed", () => {
    const outputs: KvOutput[] = [
      { value: null },
      { value: "v0" },
      { value: "v1" },
      { value: "v2" },
      { succeeded: true },
      { succeeded: false },
      { deleted: 0 },
      { deleted: 1 },
    ];
    const seen = { linearizable: 0, "not-linearizable": 0, unknown: 0 };
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 7 }), fc.nat(), fc.nat(), (steps, which, out) => {
        const h = sequentialHistory(steps).map((o) => ({ ...o, input: { ...o.input, key: "a" } }));
        const victim = h[which % h.length]!;
        if (victim.status === "ok") {
          const fits = outputs.filter((x) =>
            victim.input.f === "get"
              ? "value" in x
              : victim.input.f === "cas"
                ? "succeeded" in x
                : "deleted" in x,
          );
          if (victim.input.f !== "put") victim.output = fits[out % fits.length];
        }
        const verdict = checkHistory(kvModel, h).verdict;
        seen[verdict] += 1;
        expect(verdict).toBe(naiveLinearizable(h) ? "linearizable" : "not-linearizable");
      }),
      { seed: 20261127, numRuns: 1000 },
    );
    // Both answers came up often enough for the agreement to mean something.
    expect(seen["not-linearizable"]).toBeGreaterThan(100);
    expect(seen.linearizable).toBeGreaterThan(100);
  });
});
