// Unit tests named after the rules of the Raft paper (extended version) and thesis.

import { describe, expect, test } from "vitest";
import {
  CompactedError,
  type Entry,
  EntryType,
  Inflights,
  MemoryStorage,
  type Message,
  MessageType,
  message,
  NONE,
  Progress,
  ProgressState,
  ProposalDroppedError,
  Raft,
  type RaftConfig,
  RawNode,
  StateType,
  Xoshiro128,
} from "../../src/raft/index.js";

function storageWith(voters: number[], terms: number[] = [], learners: number[] = []): MemoryStorage {
  const s = new MemoryStorage({
    data: new Uint8Array(0),
    metadata: { index: 0, term: 0, confState: { voters, learners } },
  });
  s.append(terms.map((term, i) => ({ term, index: i + 1, type: EntryType.Normal, data: new Uint8Array(0) })));
  return s;
}

function newRaft(id: number, storage: MemoryStorage, extra: Partial<RaftConfig> = {}): Raft {
  return new Raft({ id, storage, random: new Xoshiro128(id), electionTimeoutTicks: 10, ...extra });
}

function take(r: Raft): Message[] {
  const out = r.msgs;
  r.msgs = [];
  return out;
}

function ent(term: number, index: number): Entry {
  return { term, index, type: EntryType.Normal, data: new Uint8Array(0) };
}

/** Starts an election the way a timeout does (MsgHup): becomes candidate and votes for itself. */
function campaign(r: Raft): void {
  r.step(message({ type: MessageType.MsgHup }));
}

function electionTicks(r: Raft): void {
  for (let i = 0; i < 2 * r.electionTimeoutTicks; i++) r.tick();
}

describe("Raft paper §5.1-5.2: terms and leader election", () => {
  test("a follower that hears nothing for an election timeout becomes a candidate and votes for itself", () => {
    const r = newRaft(1, storageWith([1, 2, 3]));
    electionTicks(r);
    expect(r.state).toBe(StateType.Candidate);
    expect(r.term).toBe(1);
    expect(r.vote).toBe(1);
    const votes = take(r).filter((m) => m.type === MessageType.MsgVote);
    expect(votes.map((m) => m.to).sort()).toEqual([2, 3]);
  });

  test("the randomized election timeout is drawn from [electionTimeout, 2*electionTimeout)", () => {
    const r = newRaft(1, storageWith([1, 2, 3]));
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) {
      r.becomeFollower(r.term + 1, NONE);
      expect(r.randomizedElectionTimeoutTicks).toBeGreaterThanOrEqual(10);
      expect(r.randomizedElectionTimeoutTicks).toBeLessThan(20);
      seen.add(r.randomizedElectionTimeoutTicks);
    }
    expect(seen.size).toBeGreaterThan(5);
  });

  test("a candidate that receives votes from a majority becomes leader", () => {
    const r = newRaft(1, storageWith([1, 2, 3]));
    campaign(r);
    expect(r.state).toBe(StateType.Candidate);
    r.step(message({ type: MessageType.MsgVoteResp, from: 2, to: 1, term: 1 }));
    expect(r.state).toBe(StateType.Leader);
  });

  test("a candidate that a majority rejects returns to follower", () => {
    const r = newRaft(1, storageWith([1, 2, 3]));
    campaign(r);
    r.step(message({ type: MessageType.MsgVoteResp, from: 2, to: 1, term: 1, reject: true }));
    expect(r.state).toBe(StateType.Candidate);
    r.step(message({ type: MessageType.MsgVoteResp, from: 3, to: 1, term: 1, reject: true }));
    expect(r.state).toBe(StateType.Follower);
  });

  test("a candidate that receives AppendEntries from a leader of at least its term returns to follower", () => {
    for (const leaderTerm of [1, 2]) {
      const r = newRaft(1, storageWith([1, 2, 3]));
      r.becomeCandidate();
      expect(r.term).toBe(1);
      r.step(message({ type: MessageType.MsgApp, from: 2, to: 1, term: leaderTerm }));
      expect(r.state).toBe(StateType.Follower);
      expect(r.lead).toBe(2);
      expect(r.term).toBe(leaderTerm);
    }
  });

  test("a candidate ignores AppendEntries from a leader of an older term and stays candidate", () => {
    const r = newRaft(1, storageWith([1, 2, 3]));
    r.becomeFollower(2, NONE);
    r.becomeCandidate();
    r.step(message({ type: MessageType.MsgApp, from: 2, to: 1, term: 1 }));
    expect(r.state).toBe(StateType.Candidate);
    expect(r.term).toBe(3);
  });

  test("a server that sees a larger term adopts it and reverts to follower", () => {
    const r = newRaft(1, storageWith([1, 2, 3]));
    r.becomeCandidate();
    r.becomeLeader();
    r.step(message({ type: MessageType.MsgHeartbeat, from: 2, to: 1, term: 5 }));
    expect(r.state).toBe(StateType.Follower);
    expect(r.term).toBe(5);
    expect(r.lead).toBe(2);
  });

  test("each server votes for at most one candidate in a term, first come first served", () => {
    const r = newRaft(3, storageWith([1, 2, 3]));
    r.step(message({ type: MessageType.MsgVote, from: 1, to: 3, term: 1 }));
    r.step(message({ type: MessageType.MsgVote, from: 2, to: 3, term: 1 }));
    r.step(message({ type: MessageType.MsgVote, from: 1, to: 3, term: 1 }));
    const resps = take(r).map((m) => [m.to, m.reject]);
    expect(resps).toEqual([
      [1, false],
      [2, true],
      [1, false],
    ]);
    expect(r.vote).toBe(1);
  });

  test("a voter denies its vote if its own log is more up-to-date than the candidate's (§5.4.1)", () => {
    // Voter log: terms [1, 2]. Candidates: (lastTerm, lastIndex) pairs.
    const cases: [number, number, boolean][] = [
      [1, 5, true], // older last term loses even with a longer log
      [2, 1, true], // same last term, shorter log
      [2, 2, false], // same last term, same length
      [3, 1, false], // newer last term wins
    ];
    for (const [logTerm, index, rejected] of cases) {
      const r = newRaft(2, storageWith([1, 2, 3], [1, 2]));
      r.step(message({ type: MessageType.MsgVote, from: 1, to: 2, term: 3, logTerm, index }));
      expect(take(r)[0]!.reject, `candidate ${logTerm}/${index}`).toBe(rejected);
    }
  });

  test("messages from an older term are ignored", () => {
    const r = newRaft(1, storageWith([1, 2, 3]));
    r.becomeFollower(3, 2);
    r.step(message({ type: MessageType.MsgApp, from: 3, to: 1, term: 2, entries: [ent(2, 1)] }));
    expect(r.raftLog.lastIndex()).toBe(0);
    expect(r.lead).toBe(2);
  });
});

describe("Raft paper §5.3-5.4: log replication and safety", () => {
  test("a leader appends an empty entry of its term when elected (§8)", () => {
    const r = newRaft(1, storageWith([1, 2, 3], [1, 1]));
    r.becomeFollower(1, NONE);
    r.becomeCandidate();
    r.becomeLeader();
    expect(r.raftLog.lastIndex()).toBe(3);
    expect(r.raftLog.termAt(3)).toBe(2);
  });

  test("a follower rejects AppendEntries whose previous entry does not match, with a conflict hint", () => {
    const r = newRaft(2, storageWith([1, 2, 3], [1, 1, 2, 2]));
    r.becomeFollower(4, 1);
    r.step(
      message({
        type: MessageType.MsgApp,
        from: 1,
        to: 2,
        term: 4,
        index: 4,
        logTerm: 3,
        entries: [ent(4, 5)],
      }),
    );
    const resp = take(r)[0]!;
    expect(resp.reject).toBe(true);
    // The largest index <= 4 whose term is <= 3 is 4 (term 2): the leader can skip term 3.
    expect([resp.rejectHint, resp.logTerm]).toEqual([4, 2]);
  });

  test("a follower deletes a conflicting entry and all that follow it, then appends the leader's", () => {
    const r = newRaft(2, storageWith([1, 2, 3], [1, 2, 2, 2]));
    r.becomeFollower(3, 1);
    r.step(
      message({
        type: MessageType.MsgApp,
        from: 1,
        to: 2,
        term: 3,
        index: 2,
        logTerm: 2,
        entries: [ent(3, 3)],
      }),
    );
    expect(r.raftLog.lastIndex()).toBe(3);
    expect(r.raftLog.allEntries().map((e) => e.term)).toEqual([1, 2, 3]);
    expect(take(r)[0]).toMatchObject({ type: MessageType.MsgAppResp, index: 3, reject: false });
  });

  test("a follower ignores an AppendEntries that is already contained in its log (no truncation)", () => {
    const r = newRaft(2, storageWith([1, 2, 3], [1, 1, 1]));
    r.becomeFollower(1, 1);
    r.step(
      message({
        type: MessageType.MsgApp,
        from: 1,
        to: 2,
        term: 1,
        index: 0,
        logTerm: 0,
        entries: [ent(1, 1)],
      }),
    );
    expect(r.raftLog.lastIndex()).toBe(3);
  });

  test("a leader commits an entry of its term once a majority stores it", () => {
    const r = newRaft(1, storageWith([1, 2, 3, 4, 5]));
    r.becomeCandidate();
    r.becomeLeader();
    expect(r.raftLog.committed).toBe(0);
    r.step(message({ type: MessageType.MsgAppResp, from: 2, to: 1, term: 1, index: 1 }));
    expect(r.raftLog.committed).toBe(0);
    r.step(message({ type: MessageType.MsgAppResp, from: 3, to: 1, term: 1, index: 1 }));
    expect(r.raftLog.committed).toBe(1);
  });

  test("a leader never commits an entry from an older term by counting replicas (§5.4.2)", () => {
    const r = newRaft(1, storageWith([1, 2, 3], [1, 2]), {});
    r.becomeFollower(3, NONE);
    r.becomeCandidate();
    r.becomeLeader(); // term 4, empty entry at index 3
    r.step(message({ type: MessageType.MsgAppResp, from: 2, to: 1, term: 4, index: 2 }));
    r.step(message({ type: MessageType.MsgAppResp, from: 3, to: 1, term: 4, index: 2 }));
    expect(r.raftLog.committed).toBe(0);
    r.step(message({ type: MessageType.MsgAppResp, from: 2, to: 1, term: 4, index: 3 }));
    expect(r.raftLog.committed).toBe(3);
  });

  test("a leader never overwrites or deletes entries in its own log (Leader Append-Only)", () => {
    const r = newRaft(1, storageWith([1, 2, 3], [1, 1]));
    r.becomeFollower(1, NONE);
    r.becomeCandidate();
    r.becomeLeader();
    const before = r.raftLog.allEntries().map((e) => `${e.term}/${e.index}`);
    // A stale append from a former leader of a lower term cannot touch the log.
    r.step(message({ type: MessageType.MsgApp, from: 2, to: 1, term: 1, index: 0, entries: [ent(1, 1)] }));
    expect(r.raftLog.allEntries().map((e) => `${e.term}/${e.index}`)).toEqual(before);
    expect(r.state).toBe(StateType.Leader);
  });
});

describe("thesis: pre-vote, check-quorum, proposals, learners", () => {
  test("a pre-candidate does not increase its term (thesis §9.6)", () => {
    const r = newRaft(1, storageWith([1, 2, 3]), { preVote: true });
    electionTicks(r);
    expect(r.state).toBe(StateType.PreCandidate);
    expect(r.term).toBe(0);
    expect(take(r).every((m) => m.type === MessageType.MsgPreVote && m.term === 1)).toBe(true);
  });

  test("a follower within its leader lease ignores vote requests (thesis §4.2.3)", () => {
    const r = newRaft(2, storageWith([1, 2, 3]), { checkQuorum: true });
    r.step(message({ type: MessageType.MsgHeartbeat, from: 1, to: 2, term: 1 }));
    take(r);
    r.step(message({ type: MessageType.MsgVote, from: 3, to: 2, term: 2 }));
    expect(take(r)).toEqual([]);
    expect(r.term).toBe(1);
  });

  test("a leader that hears from no quorum within an election timeout steps down (thesis §6.2)", () => {
    const r = newRaft(1, storageWith([1, 2, 3]), { checkQuorum: true });
    r.becomeCandidate();
    r.becomeLeader();
    for (let i = 0; i < 2 * r.electionTimeoutTicks; i++) r.tick();
    expect(r.state).toBe(StateType.Follower);
  });

  test("a follower forwards proposals to the leader, and says so when there is no leader", () => {
    const n = new RawNode({ id: 2, storage: storageWith([1, 2, 3]), random: new Xoshiro128(2) });
    const err = n.propose(new TextEncoder().encode("x"));
    expect(err).toBeInstanceOf(ProposalDroppedError);
    expect(err?.code).toBe("REG_ERR_RAFT_PROPOSAL_DROPPED");
    expect(err?.reason).toBe("no-leader");
    n.step(message({ type: MessageType.MsgHeartbeat, from: 1, to: 2, term: 1 }));
    n.ready();
    expect(n.propose(new TextEncoder().encode("x"))).toBeUndefined();
    const fwd = n.ready().messages;
    expect(fwd).toHaveLength(1);
    expect(fwd[0]).toMatchObject({ type: MessageType.MsgProp, to: 1, term: 0 });
  });

  test("a leader cut off from its quorum refuses proposals beyond the uncommitted size limit", () => {
    const n = new RawNode({
      id: 1,
      storage: storageWith([1, 2, 3]),
      random: new Xoshiro128(1),
      maxUncommittedEntriesSizeBytes: 10,
    });
    n.raft.becomeCandidate();
    n.raft.becomeLeader();
    const data = new Uint8Array(6);
    expect(n.propose(data)).toBeUndefined();
    expect(n.propose(data)?.reason).toBe("overloaded");
  });

  test("a learner never campaigns and does not count for the quorum (thesis §4.2.1)", () => {
    const r = newRaft(4, storageWith([1, 2, 3], [], [4]));
    electionTicks(r);
    expect(r.state).toBe(StateType.Follower);
    const l = newRaft(1, storageWith([1, 2, 3], [], [4]));
    l.becomeCandidate();
    l.becomeLeader();
    l.step(message({ type: MessageType.MsgAppResp, from: 4, to: 1, term: 1, index: 1 }));
    expect(l.raftLog.committed).toBe(0);
  });

  test("the ready cycle: entries and hard state come before the messages that announce them", () => {
    const n = new RawNode({ id: 1, storage: storageWith([1, 2, 3]), random: new Xoshiro128(1) });
    n.campaign();
    const rd = n.ready();
    expect(rd.hardState).toEqual({ term: 1, vote: 1, commit: 0 });
    expect(rd.mustSync).toBe(true);
    expect(rd.messages.map((m) => m.type)).toEqual([MessageType.MsgVote, MessageType.MsgVote]);
    n.advance(rd);
    expect(n.hasReady()).toBe(false);
  });
});

describe("progress and storage", () => {
  test("inflights are bounded in count and freed by acknowledgement", () => {
    const inf = new Inflights(2, 0);
    inf.add(3, 10);
    inf.add(5, 10);
    expect(inf.full()).toBe(true);
    inf.freeLE(3);
    expect(inf.full()).toBe(false);
    expect(inf.count()).toBe(1);
    inf.freeFirstOne();
    expect(inf.count()).toBe(0);
  });

  test("inflights are bounded in bytes", () => {
    const inf = new Inflights(100, 50);
    inf.add(1, 30);
    expect(inf.full()).toBe(false);
    inf.add(2, 30);
    expect(inf.full()).toBe(true);
  });

  test("a probe rejection moves next back to the hint, never below match+1", () => {
    const pr = new Progress(11, 4, 0, false);
    pr.match = 3;
    expect(pr.maybeDecrTo(10, 5)).toBe(true);
    expect(pr.next).toBe(6);
    expect(pr.maybeDecrTo(9, 1)).toBe(false); // stale: not the last probe
    expect(pr.maybeDecrTo(5, 0)).toBe(true);
    expect(pr.next).toBe(4);
    pr.becomeReplicate();
    expect(pr.state).toBe(ProgressState.Replicate);
  });

  test("memory storage compacts, keeps the term of the compaction point, and refuses compacted reads", () => {
    const s = storageWith([1], [1, 1, 2, 2, 3]);
    s.createSnapshot(3, { voters: [1], learners: [] }, new Uint8Array([7]));
    s.compact(3);
    expect(s.firstIndex()).toBe(4);
    expect(s.term(3)).toBe(2);
    expect(() => s.entries(3, 5, 1000)).toThrow(CompactedError);
    expect(s.entries(4, 6, 1000).map((e) => e.index)).toEqual([4, 5]);
    expect(s.snapshot().metadata).toMatchObject({ index: 3, term: 2 });
  });
});
