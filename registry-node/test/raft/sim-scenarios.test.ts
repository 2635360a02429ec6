// Hand-written scenarios on the same deterministic simulator as the seeded runs, so
// every invariant checker (one leader per term, log matching, leader completeness,
// state machine safety, linearizable reads) watches them too.

import { describe, expect, test } from "vitest";
import { ConfChangeType, StateType } from "../../src/raft/index.js";
import { configFromSeed, type SimConfig, Simulation } from "./sim/cluster.js";

function quiet(replicas: number, overrides: Partial<SimConfig> = {}): Simulation {
  const sim = new Simulation({
    ...configFromSeed(7),
    replicas,
    electionTimeoutTicks: 10,
    preVote: true,
    checkQuorum: true,
    compactEveryEntries: 20,
    compactKeepEntries: 2,
    maxUncommittedEntriesSizeBytes: 1024 * 1024,
    ...overrides,
  });
  sim.faultsEnabled = false;
  sim.clientsEnabled = false;
  return sim;
}

function electLeader(sim: Simulation): number {
  for (let i = 0; i < 200 && !sim.leader(); i++) sim.step();
  const l = sim.leader();
  expect(l, "a leader is elected").toBeDefined();
  return l!.id;
}

describe("simulated scenarios", () => {
  test("partition: isolate leader (R=3), the majority elects a new leader and the old one's writes are lost", () => {
    const sim = quiet(3);
    const old = electLeader(sim);
    sim.write(old, "k", "before");
    sim.run(5);
    expect(sim.ackedIndex("k")).toBeGreaterThan(0);
    const others = [1, 2, 3].filter((id) => id !== old);
    sim.partition([[old], others]);
    sim.write(old, "k", "lost");
    sim.run(60);
    const fresh = sim.leader()!;
    expect(fresh.id).not.toBe(old);
    sim.write(fresh.id, "k", "after");
    sim.run(5);
    sim.heal();
    sim.run(30);
    // The old leader stepped down and every node holds "after", never "lost".
    expect(sim.nodes.get(old)!.raw!.state).not.toBe(StateType.Leader);
    for (const n of sim.nodes.values()) expect(n.app.kv.get("k")?.value).toBe("after");
    // A read through the old leader, after the heal, sees the newest write.
    sim.read(old, "k");
    sim.run(10);
    expect(sim.pendingReads()).toBe(0);
  });

  test("pre-vote: a rejoining replica (R=5) does not raise the term", () => {
    const sim = quiet(5);
    const leader = electLeader(sim);
    const lonely = leader === 5 ? 4 : 5;
    sim.partition([[lonely], [1, 2, 3, 4, 5].filter((id) => id !== lonely)]);
    sim.write(leader, "k", "v");
    sim.run(100);
    const term = sim.nodes.get(leader)!.raw!.raft.term;
    expect(sim.nodes.get(lonely)!.raw!.raft.term).toBeLessThanOrEqual(term);
    sim.heal();
    sim.run(50);
    expect(sim.leader()!.id).toBe(leader);
    expect(sim.nodes.get(leader)!.raw!.raft.term).toBe(term);
  });

  test("crash: every replica (R=3) restarts from its disk and committed writes survive", () => {
    const sim = quiet(3);
    const leader = electLeader(sim);
    for (let i = 0; i < 30; i++) sim.write(leader, `k${i % 3}`, `v${i}`);
    sim.run(10);
    for (const id of [1, 2, 3]) sim.crashNode(id);
    sim.run(3);
    for (const id of [1, 2, 3]) sim.restartNode(id);
    const again = electLeader(sim);
    sim.run(10);
    for (const n of sim.nodes.values()) expect(n.app.kv.get("k2")?.value).toBe("v29");
    sim.read(again, "k2");
    sim.run(10);
    expect(sim.pendingReads()).toBe(0);
  });

  test("membership: add a learner, promote it, then remove the original leader (R=3 -> 4 -> 3)", () => {
    const sim = quiet(3);
    const leader = electLeader(sim);
    for (let i = 0; i < 30; i++) sim.write(leader, "k", `v${i}`);
    sim.run(10);
    expect(sim.changeMembership({ type: ConfChangeType.AddLearnerNode, nodeId: 4 })).toBe(true);
    sim.run(30);
    // The learner caught up (through a snapshot: the leader compacted its log).
    expect(sim.nodes.get(4)!.app.kv.get("k")?.value).toBe("v29");
    expect(sim.changeMembership({ type: ConfChangeType.AddNode, nodeId: 4 })).toBe(true);
    sim.run(30);
    expect([...sim.leader()!.raw!.raft.trk.voters].sort()).toEqual([1, 2, 3, 4]);
    expect(sim.changeMembership({ type: ConfChangeType.RemoveNode, nodeId: leader })).toBe(true);
    sim.run(100);
    const next = sim.leader()!;
    expect(next.id).not.toBe(leader);
    expect([...next.raw!.raft.trk.voters].sort()).toEqual([1, 2, 3, 4].filter((id) => id !== leader));
    sim.write(next.id, "k", "after-removal");
    sim.run(10);
    expect(next.app.kv.get("k")?.value).toBe("after-removal");
  });
});
