import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/etcd/clock.js";
import {
  type GroupChange,
  type GroupName,
  type GroupState,
  type GroupSwitchConfig,
  initialGroupState,
  onProbe,
  type ProbeOutcome,
} from "../../src/etcd/group-core.js";
import { GroupMonitor } from "../../src/etcd/groups.js";

const cfg: GroupSwitchConfig = { latencyMsMax: 100, badProbesToSwitch: 3, goodProbesToReturn: 2 };
const fast: ProbeOutcome = { ok: true, latencyMs: 5 };
const slow: ProbeOutcome = { ok: true, latencyMs: 250 };
const down: ProbeOutcome = { ok: false, reason: "connection refused" };

/** Feeds rounds of (standby, primary) outcomes; returns the state and every change made. */
function run(rounds: [ProbeOutcome, ProbeOutcome][], s: GroupState = initialGroupState()) {
  const changes: GroupChange[] = [];
  for (const [standby, primary] of rounds) {
    for (const [g, o] of [
      ["standby", standby],
      ["primary", primary],
    ] as [GroupName, ProbeOutcome][]) {
      const r = onProbe(s, cfg, g, o);
      s = r.state;
      if (r.change) changes.push(r.change);
    }
  }
  return { state: s, changes };
}

describe("group switching decision (pure core)", () => {
  it("N consecutive failed primary probes move the client to the standby, not N-1", () => {
    const two = run([
      [fast, down],
      [fast, down],
    ]);
    expect(two.changes).toEqual([]);
    expect(two.state.active).toBe("primary");
    const three = run([[fast, down]], two.state);
    expect(three.state.active).toBe("standby");
    expect(three.changes).toEqual([
      { from: "primary", to: "standby", reason: "primary unreachable: connection refused" },
    ]);
  });

  it("a good probe in between restarts the count (hysteresis against flapping)", () => {
    const r = run([
      [fast, down],
      [fast, down],
      [fast, fast],
      [fast, down],
      [fast, down],
    ]);
    expect(r.changes).toEqual([]);
    expect(r.state.primaryBad).toBe(2);
  });

  it("probes slower than latencyMsMax count as bad; at the threshold they are good", () => {
    const atThreshold: ProbeOutcome = { ok: true, latencyMs: 100 };
    expect(
      run([
        [fast, atThreshold],
        [fast, atThreshold],
        [fast, atThreshold],
      ]).changes,
    ).toEqual([]);
    const r = run([
      [fast, slow],
      [fast, down],
      [fast, slow],
    ]);
    expect(r.changes).toEqual([{ from: "primary", to: "standby", reason: "primary slow: 250 ms > 100 ms" }]);
  });

  it("does not move to a standby that did not answer its last probe", () => {
    const r = run([
      [down, down],
      [down, down],
      [down, down],
      [down, down],
    ]);
    expect(r.changes).toEqual([]);
    expect(r.state.active).toBe("primary");
    // The standby comes back while the primary is still down: the move happens on that round.
    const r2 = run([[fast, down]], r.state);
    expect(r2.state.active).toBe("standby");
  });

  it("returns after M consecutive good primary probes; slow or failed ones restart the count", () => {
    const away = run([
      [fast, down],
      [fast, down],
      [fast, down],
    ]).state;
    const r = run(
      [
        [fast, fast],
        [fast, slow],
        [fast, fast],
      ],
      away,
    );
    expect(r.changes).toEqual([]);
    expect(r.state.active).toBe("standby");
    const back = run([[fast, fast]], r.state);
    expect(back.changes).toEqual([
      { from: "standby", to: "primary", reason: "primary recovered: 2 probes under 100 ms" },
    ]);
    // Back on the primary, a new move needs a full run of N bad probes again.
    const again = run(
      [
        [fast, down],
        [fast, down],
      ],
      back.state,
    );
    expect(again.changes).toEqual([]);
  });

  it("leaves a failing standby for a primary that answers, even slowly", () => {
    const away = run([
      [fast, down],
      [fast, down],
      [fast, down],
    ]).state;
    const r = run(
      [
        [down, slow],
        [down, slow],
        [down, slow],
      ],
      away,
    );
    expect(r.changes.map((c) => [c.from, c.to])).toEqual([["standby", "primary"]]);
    expect(r.changes[0]!.reason).toMatch(/^standby unreachable: connection refused; the primary answers$/);
    // Both down: the client stays where it is.
    const both = run(
      [
        [down, down],
        [down, down],
        [down, down],
      ],
      away,
    );
    expect(both.changes).toEqual([]);
    expect(both.state.active).toBe("standby");
  });
});

describe("GroupMonitor (shell) on a manual clock", () => {
  /** A prober whose outcomes the test sets; it answers at once. */
  function setup() {
    const clock = new ManualClock();
    const outcome: Record<GroupName, ProbeOutcome> = { primary: fast, standby: fast };
    const probes: GroupName[] = [];
    const changes: GroupChange[] = [];
    const m = new GroupMonitor(
      clock,
      1_000,
      cfg,
      async (g) => {
        probes.push(g);
        return outcome[g];
      },
      (c) => changes.push(c),
    );
    m.start();
    /** Advances one probe interval and lets the round's promises settle. */
    const tick = async () => {
      clock.advance(1_000);
      for (let i = 0; i < 5; i++) await Promise.resolve();
    };
    return { clock, outcome, probes, changes, m, tick };
  }

  it("probes both groups every interval and moves after N bad rounds, back after M good ones", async () => {
    const t = setup();
    await t.tick();
    expect(t.probes.sort()).toEqual(["primary", "standby"]);
    t.outcome.primary = down;
    await t.tick();
    await t.tick();
    expect(t.m.active).toBe("primary");
    await t.tick();
    expect(t.m.active).toBe("standby");
    expect(t.changes.map((c) => c.to)).toEqual(["standby"]);
    t.outcome.primary = fast;
    await t.tick();
    expect(t.m.active).toBe("standby");
    await t.tick();
    expect(t.m.active).toBe("primary");
    expect(t.changes.map((c) => c.to)).toEqual(["standby", "primary"]);
    t.m.close();
    expect(t.clock.pending()).toBe(0);
  });

  it("a probe that throws counts as a failed one; rounds never overlap", async () => {
    const clock = new ManualClock();
    const changes: GroupChange[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    let release: (() => void)[] = [];
    const m = new GroupMonitor(
      clock,
      1_000,
      cfg,
      async (g) => {
        inFlight += 1;
        maxInFlight = Math.max(maxInFlight, inFlight);
        if (g === "primary") {
          await new Promise<void>((r) => release.push(r));
          inFlight -= 1;
          throw new Error("boom");
        }
        inFlight -= 1;
        return fast;
      },
      (c) => changes.push(c),
    );
    m.start();
    const settle = async () => {
      for (let i = 0; i < 10; i++) await Promise.resolve();
    };
    for (let round = 0; round < 3; round++) {
      clock.advance(1_000);
      await settle();
      // While the primary probe hangs, time passes but no second round starts.
      clock.advance(5_000);
      await settle();
      expect(release.length).toBe(1);
      for (const r of release.splice(0)) r();
      await settle();
    }
    expect(maxInFlight).toBeLessThanOrEqual(2);
    expect(changes).toEqual([{ from: "primary", to: "standby", reason: "primary unreachable: boom" }]);
    m.close();
    release = [];
  });
});
