// The Raft consensus core as a pure state machine, after etcd raft's raft.go.
//
// One entry point, `step(m)`, settles the term (Raft paper §5.1) and then dispatches to
// the role's step function, which is held as a value (`stepFollower`, `stepCandidate`,
// `stepLeader`). Time is the logical `tick()`. Nothing here touches a clock, a socket or
// a disk: outgoing messages accumulate in `msgs`, and RawNode hands them out in a Ready
// together with what must be persisted first.
//
// Extensions implemented, with their source:
// - pre-vote (thesis §9.6): a node that cannot win does not raise its term and disrupt;
// - check-quorum (thesis §6.2): a leader that has not heard from a quorum for an election
//   timeout steps down; followers that heard from a leader within an election timeout
//   ignore (pre)vote requests (the "leader lease"), unless the leader itself asked for
//   the election with TimeoutNow (thesis §3.10);
// - ReadIndex (thesis §6.4), leadership transfer (thesis §3.10);
// - membership changes, one server at a time (see `applyConfChange`).

import { assert } from "./assert.js";
import {
  electionTimeoutTicksDefault,
  heartbeatIntervalTicksDefault,
  maxCommittedSizePerReadyBytesDefault,
  maxInflightBytesDefault,
  maxInflightMsgsDefault,
  maxMessagesPerReady,
  maxPendingReadIndexRequests,
  maxSizePerMsgBytesDefault,
  maxUncommittedEntriesSizeBytesDefault,
} from "./constants.js";
import { RaftLog } from "./log.js";
import { Progress, ProgressState, ProgressTracker } from "./progress.js";
import type { RandomSource } from "./random.js";
import { ReadOnly } from "./read-only.js";
import { CompactedError, SnapshotTemporarilyUnavailableError, type Storage } from "./storage.js";
import {
  type ConfChange,
  ConfChangeType,
  type ConfState,
  decodeConfChange,
  type Entry,
  EntryType,
  entrySizeBytes,
  type HardState,
  isEmptySnapshot,
  type Message,
  MessageType,
  message,
  NONE,
  type ReadState,
  type Snapshot,
  type SoftState,
  StateType,
  voteResponseType,
} from "./types.js";

export type RaftConfig = {
  id: number;
  storage: Storage;
  /** Source of election timeout jitter; inject a seeded one in tests. */
  random: RandomSource;
  electionTimeoutTicks?: number;
  heartbeatIntervalTicks?: number;
  /** The index the application has already applied (on restart); 0 means the snapshot's. */
  applied?: number;
  maxSizePerMsgBytes?: number;
  maxInflightMsgs?: number;
  maxInflightBytes?: number;
  maxCommittedSizePerReadyBytes?: number;
  maxUncommittedEntriesSizeBytes?: number;
  checkQuorum?: boolean;
  preVote?: boolean;
};

export type DropReason =
  | "no-leader"
  | "leader-transfer"
  | "not-member"
  | "conf-change-pending"
  | "overloaded";

/** A proposal (or ReadIndex, or transfer) that Raft did not accept; the caller may retry. */
export class ProposalDroppedError extends Error {
  readonly code = "REG_ERR_RAFT_PROPOSAL_DROPPED";
  override name = "ProposalDroppedError";
  constructor(readonly reason: DropReason) {
    super(`raft proposal dropped: ${reason}`);
  }
}

/** `undefined` when the message was handled (or forwarded), else why it was dropped. */
export type StepResult = ProposalDroppedError | undefined;

type CampaignType = "pre-election" | "election" | "transfer";

/** Context of the vote requests of a transfer-forced election; they bypass the leader lease. */
export const campaignTransferContext = new TextEncoder().encode("CampaignTransfer");

function isTransferContext(ctx: Uint8Array): boolean {
  if (ctx.length !== campaignTransferContext.length) return false;
  for (let i = 0; i < ctx.length; i++) if (ctx[i] !== campaignTransferContext[i]) return false;
  return true;
}

export class Raft {
  readonly id: number;
  term = 0;
  vote = NONE;
  lead = NONE;
  state: StateType = StateType.Follower;
  readonly raftLog: RaftLog;
  readonly trk: ProgressTracker;
  isLearner = false;

  msgs: Message[] = [];
  readStates: ReadState[] = [];

  /** Ticks since the last election timeout reset (leader: since the last check-quorum). */
  electionElapsed = 0;
  heartbeatElapsed = 0;
  readonly electionTimeoutTicks: number;
  readonly heartbeatIntervalTicks: number;
  /** Drawn from [electionTimeoutTicks, 2*electionTimeoutTicks) on every reset (paper §5.2). */
  randomizedElectionTimeoutTicks = 0;
  readonly checkQuorum: boolean;
  readonly preVote: boolean;
  readonly maxSizePerMsgBytes: number;
  readonly maxUncommittedEntriesSizeBytes: number;
  /** Payload bytes this leader appended that are not yet applied (bounded, see constants). */
  uncommittedSizeBytes = 0;

  /** The follower a leadership transfer is handing over to, or NONE. */
  leadTransferee = NONE;
  /** Index of the last conf change in the log; a new one waits until it is applied. */
  pendingConfIndex = 0;
  readOnly = new ReadOnly();
  /** ReadIndex requests received before this leader committed an entry of its term. */
  pendingReadIndexMessages: Message[] = [];

  private readonly random: RandomSource;
  private stepFn: (m: Message) => StepResult;
  private tickFn: () => void;

  constructor(c: RaftConfig) {
    assert(c.id !== NONE && Number.isInteger(c.id) && c.id > 0, "raft id is a positive integer");
    this.id = c.id;
    this.electionTimeoutTicks = c.electionTimeoutTicks ?? electionTimeoutTicksDefault;
    this.heartbeatIntervalTicks = c.heartbeatIntervalTicks ?? heartbeatIntervalTicksDefault;
    assert(
      this.heartbeatIntervalTicks > 0 && this.electionTimeoutTicks > this.heartbeatIntervalTicks,
      "election timeout must exceed the heartbeat interval",
    );
    this.random = c.random;
    this.checkQuorum = c.checkQuorum ?? false;
    this.preVote = c.preVote ?? false;
    this.maxSizePerMsgBytes = c.maxSizePerMsgBytes ?? maxSizePerMsgBytesDefault;
    this.maxUncommittedEntriesSizeBytes =
      c.maxUncommittedEntriesSizeBytes ?? maxUncommittedEntriesSizeBytesDefault;
    this.raftLog = new RaftLog(
      c.storage,
      c.maxCommittedSizePerReadyBytes ?? maxCommittedSizePerReadyBytesDefault,
    );
    this.trk = new ProgressTracker(
      c.maxInflightMsgs ?? maxInflightMsgsDefault,
      c.maxInflightBytes ?? maxInflightBytesDefault,
    );

    const { hardState, confState } = c.storage.initialState();
    this.restoreConfState(confState);
    if (hardState.term !== 0 || hardState.vote !== NONE || hardState.commit !== 0) this.loadState(hardState);
    if (c.applied !== undefined && c.applied > 0) this.raftLog.appliedTo(c.applied);
    this.stepFn = this.stepFollower;
    this.tickFn = this.tickElection;
    this.becomeFollower(this.term, NONE);
  }

  // ---- state accessors -------------------------------------------------------------

  softState(): SoftState {
    return { lead: this.lead, raftState: this.state };
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.raftLog.committed };
  }

  private loadState(hs: HardState): void {
    assert(
      hs.commit >= this.raftLog.committed && hs.commit <= this.raftLog.lastIndex(),
      () => `hard state commit ${hs.commit} outside [${this.raftLog.committed}, ${this.raftLog.lastIndex()}]`,
    );
    this.raftLog.committed = hs.commit;
    this.term = hs.term;
    this.vote = hs.vote;
  }

  /** Whether this node may campaign: a voter, with no snapshot waiting to be persisted. */
  promotable(): boolean {
    const pr = this.trk.progress.get(this.id);
    return pr !== undefined && !pr.isLearner && !this.raftLog.hasPendingSnapshot();
  }

  // ---- sending ---------------------------------------------------------------------

  private send(m: Message): void {
    // A forwarded message keeps its origin (a transfer request names the transferee).
    if (m.from === NONE) m.from = this.id;
    const t = m.type;
    if (
      t === MessageType.MsgVote ||
      t === MessageType.MsgVoteResp ||
      t === MessageType.MsgPreVote ||
      t === MessageType.MsgPreVoteResp
    ) {
      // Vote messages carry the term they are about, which may not be ours (pre-vote).
      assert(m.term !== 0, () => `term should be set when sending ${MessageType[t]}`);
    } else {
      assert(m.term === 0, () => `term should not be set when sending ${MessageType[t]}`);
      // Proposals and forwarded reads are treated as local messages by the leader.
      if (t !== MessageType.MsgProp && t !== MessageType.MsgReadIndex) m.term = this.term;
    }
    this.msgs.push(m);
  }

  /** Sends an append (or a snapshot) to `to` if its progress allows; returns whether it sent. */
  private maybeSendAppend(to: number, sendIfEmpty: boolean): boolean {
    const pr = this.trk.progress.get(to);
    assert(pr !== undefined, () => `no progress for ${to}`);
    if (pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.raftLog.termAt(prevIndex);
    let ents: Entry[] = [];
    let compacted = prevTerm === undefined;
    if (!compacted) {
      try {
        ents = this.raftLog.entries(pr.next, this.maxSizePerMsgBytes);
      } catch (e) {
        if (!(e instanceof CompactedError)) throw e;
        compacted = true;
      }
    }
    if (compacted) return this.maybeSendSnapshot(to, pr);
    if (ents.length === 0 && !sendIfEmpty) return false;
    let bytes = 0;
    for (const e of ents) bytes += entrySizeBytes(e);
    this.send(
      message({
        type: MessageType.MsgApp,
        to,
        index: prevIndex,
        logTerm: prevTerm!,
        entries: ents,
        commit: this.raftLog.committed,
      }),
    );
    pr.updateOnEntriesSend(ents.length, bytes, pr.next);
    return true;
  }

  private sendAppend(to: number): void {
    this.maybeSendAppend(to, true);
  }

  private maybeSendSnapshot(to: number, pr: Progress): boolean {
    // Only to followers we heard from recently: a snapshot is large (thesis §5.1).
    if (!pr.recentActive) return false;
    let snapshot: Snapshot;
    try {
      snapshot = this.raftLog.snapshot();
    } catch (e) {
      if (e instanceof SnapshotTemporarilyUnavailableError) return false;
      throw e;
    }
    assert(!isEmptySnapshot(snapshot), "need a non-empty snapshot to send");
    this.send(message({ type: MessageType.MsgSnap, to, snapshot }));
    pr.becomeSnapshot(snapshot.metadata.index);
    return true;
  }

  private sendHeartbeat(to: number, ctx: Uint8Array | undefined): void {
    // Never advance a follower's commit beyond what it is known to hold: it may not
    // have those entries yet (etcd sendHeartbeat).
    const pr = this.trk.progress.get(to)!;
    const commit = Math.min(pr.match, this.raftLog.committed);
    this.send(message({ type: MessageType.MsgHeartbeat, to, commit, ...(ctx ? { context: ctx } : {}) }));
  }

  private forEachPeer(f: (id: number, pr: Progress) => void): void {
    for (const [id, pr] of this.trk.progress) if (id !== this.id) f(id, pr);
  }

  bcastAppend(): void {
    this.forEachPeer((id) => this.sendAppend(id));
  }

  private bcastHeartbeat(): void {
    this.bcastHeartbeatWithCtx(this.readOnly.lastPendingContext());
  }

  private bcastHeartbeatWithCtx(ctx: Uint8Array | undefined): void {
    this.forEachPeer((id) => this.sendHeartbeat(id, ctx));
  }

  // ---- commit and append -------------------------------------------------------------

  /** Advances the commit index to the quorum's match index, if that entry is from our term. */
  private maybeCommit(): boolean {
    assert(this.state === StateType.Leader, "only a leader advances the commit index by counting");
    const before = this.raftLog.committed;
    const advanced = this.raftLog.maybeCommit(this.trk.committed(), this.term);
    assert(this.raftLog.committed >= before, "the commit index never moves back");
    return advanced;
  }

  private appendEntry(es: Entry[]): void {
    assert(this.state === StateType.Leader, "only a leader appends new entries");
    let li = this.raftLog.lastIndex();
    for (const e of es) {
      e.term = this.term;
      e.index = ++li;
    }
    li = this.raftLog.append(es);
    assert(li === es[es.length - 1]!.index, "the appended entries end the log");
    // The leader counts its own log towards the quorum; its messages are sent only after
    // the Ready that holds these entries is persisted, so no follower can acknowledge an
    // entry the leader itself could still lose (thesis §10.2.1 relaxes this; we do not).
    this.trk.progress.get(this.id)?.maybeUpdate(li);
    this.maybeCommit();
  }

  // ---- role transitions --------------------------------------------------------------

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = NONE;
    }
    this.lead = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.abortLeaderTransfer();
    this.trk.resetVotes();
    const last = this.raftLog.lastIndex();
    for (const [id, pr] of this.trk.progress) {
      const fresh = new Progress(last + 1, this.trk.maxInflight, this.trk.maxInflightBytes, pr.isLearner);
      if (id === this.id) fresh.match = last;
      this.trk.progress.set(id, fresh);
    }
    this.pendingConfIndex = 0;
    this.uncommittedSizeBytes = 0;
    this.readOnly = new ReadOnly();
    this.pendingReadIndexMessages = [];
  }

  private resetRandomizedElectionTimeout(): void {
    this.randomizedElectionTimeoutTicks =
      this.electionTimeoutTicks + this.random.intN(this.electionTimeoutTicks);
    assert(
      this.randomizedElectionTimeoutTicks >= this.electionTimeoutTicks &&
        this.randomizedElectionTimeoutTicks < 2 * this.electionTimeoutTicks,
      "randomized election timeout in [et, 2et)",
    );
  }

  becomeFollower(term: number, lead: number): void {
    this.stepFn = this.stepFollower;
    this.reset(term);
    this.tickFn = this.tickElection;
    this.lead = lead;
    this.state = StateType.Follower;
  }

  becomeCandidate(): void {
    assert(this.state !== StateType.Leader, "invalid transition leader -> candidate");
    this.stepFn = this.stepCandidate;
    this.reset(this.term + 1);
    this.tickFn = this.tickElection;
    this.vote = this.id;
    this.state = StateType.Candidate;
  }

  becomePreCandidate(): void {
    assert(this.state !== StateType.Leader, "invalid transition leader -> pre-candidate");
    // Pre-vote changes neither the term nor the vote (thesis §9.6): that is its point.
    this.stepFn = this.stepCandidate;
    this.trk.resetVotes();
    this.tickFn = this.tickElection;
    this.lead = NONE;
    this.state = StateType.PreCandidate;
  }

  becomeLeader(): void {
    assert(this.state !== StateType.Follower, "invalid transition follower -> leader");
    this.stepFn = this.stepLeader;
    this.reset(this.term);
    this.tickFn = this.tickHeartbeat;
    this.lead = this.id;
    this.state = StateType.Leader;
    this.trk.progress.get(this.id)!.becomeReplicate();
    // Conservatively treat every uncommitted entry as a possible conf change: a new
    // leader proposes no membership change until its own first entry is applied. This
    // is also the fix for the single-server change bug (Ongaro, raft-dev, 2015).
    this.pendingConfIndex = this.raftLog.lastIndex();
    // An empty entry of the new term lets the leader commit everything before it
    // (Raft paper §5.4.2, §8; thesis §6.4 for reads).
    this.appendEntry([{ term: 0, index: 0, type: EntryType.Normal, data: new Uint8Array(0) }]);
  }

  // ---- ticks -----------------------------------------------------------------------

  tick(): void {
    this.tickFn();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeoutTicks) {
      this.electionElapsed = 0;
      this.step(message({ type: MessageType.MsgHup, from: this.id }));
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTimeoutTicks) {
      this.electionElapsed = 0;
      if (this.checkQuorum) this.step(message({ type: MessageType.MsgCheckQuorum, from: this.id }));
      // A transfer that did not finish within an election timeout is abandoned (thesis §3.10).
      if (this.state === StateType.Leader && this.leadTransferee !== NONE) this.abortLeaderTransfer();
    }
    if (this.state !== StateType.Leader) return;
    if (this.heartbeatElapsed >= this.heartbeatIntervalTicks) {
      this.heartbeatElapsed = 0;
      this.step(message({ type: MessageType.MsgBeat, from: this.id }));
    }
  }

  // ---- elections ---------------------------------------------------------------------

  private hup(t: CampaignType): void {
    if (this.state === StateType.Leader) return;
    if (!this.promotable()) return;
    // A node must not campaign while a committed conf change is unapplied: it does not
    // know its own membership yet (etcd hup).
    if (this.raftLog.applied < this.raftLog.committed) {
      const ents = this.raftLog.slice(
        Math.max(this.raftLog.applied + 1, this.raftLog.firstIndex()),
        this.raftLog.committed + 1,
        Number.MAX_SAFE_INTEGER,
      );
      if (ents.some((e) => e.type === EntryType.ConfChange)) return;
    }
    this.campaign(t);
  }

  private campaign(t: CampaignType): void {
    let term: number;
    let voteMsg: MessageType;
    if (t === "pre-election") {
      this.becomePreCandidate();
      voteMsg = MessageType.MsgPreVote;
      // Pre-vote asks for the next term without moving to it.
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      voteMsg = MessageType.MsgVote;
      term = this.term;
    }
    if (this.poll(this.id, true) === "won") {
      // A single voter wins at once.
      if (t === "pre-election") this.campaign("election");
      else this.becomeLeader();
      return;
    }
    const ids = [...this.trk.voters].sort((a, b) => a - b);
    for (const id of ids) {
      if (id === this.id) continue;
      this.send(
        message({
          type: voteMsg,
          to: id,
          term,
          index: this.raftLog.lastIndex(),
          logTerm: this.raftLog.lastTerm(),
          ...(t === "transfer" ? { context: campaignTransferContext } : {}),
        }),
      );
    }
  }

  private poll(id: number, granted: boolean): "pending" | "won" | "lost" {
    this.trk.recordVote(id, granted);
    return this.trk.tallyVotes().result;
  }

  // ---- step: term handling ---------------------------------------------------------

  step(m: Message): StepResult {
    if (m.term === 0) {
      // Local message (tick-generated, proposal, forwarded read).
    } else if (m.term > this.term) {
      if (m.type === MessageType.MsgVote || m.type === MessageType.MsgPreVote) {
        const force = isTransferContext(m.context);
        const inLease =
          this.checkQuorum && this.lead !== NONE && this.electionElapsed < this.electionTimeoutTicks;
        // Leader lease (thesis §4.2.3): a follower that heard from a leader within the
        // minimum election timeout ignores the request, so a partitioned node that comes
        // back cannot depose a working leader.
        if (!force && inLease) return undefined;
      }
      if (m.type === MessageType.MsgPreVote) {
        // Never change our term in response to a pre-vote.
      } else if (m.type === MessageType.MsgPreVoteResp && !m.reject) {
        // We sent the pre-vote with term+1; we move to it only when we campaign for real.
      } else if (
        m.type === MessageType.MsgApp ||
        m.type === MessageType.MsgHeartbeat ||
        m.type === MessageType.MsgSnap
      ) {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, NONE);
      }
    } else if (m.term < this.term) {
      if (
        (this.checkQuorum || this.preVote) &&
        (m.type === MessageType.MsgHeartbeat || m.type === MessageType.MsgApp)
      ) {
        // A stale leader would otherwise never learn our higher term: with check-quorum
        // or pre-vote, we do not raise our term on its vote requests either, so tell it
        // with a response carrying our term; it then steps down.
        this.send(message({ type: MessageType.MsgAppResp, to: m.from }));
      } else if (m.type === MessageType.MsgPreVote) {
        // Reject with our term, so that a pre-candidate with a stale term learns it.
        this.send(message({ type: MessageType.MsgPreVoteResp, to: m.from, term: this.term, reject: true }));
      }
      // Any other message from an older term is ignored.
      return undefined;
    }

    assert(
      m.term === 0 || m.term >= this.term || m.type === MessageType.MsgPreVote,
      "stale terms were settled above",
    );
    switch (m.type) {
      case MessageType.MsgHup:
        this.hup(this.preVote ? "pre-election" : "election");
        return undefined;
      case MessageType.MsgVote:
      case MessageType.MsgPreVote: {
        // We can vote if this is a repeat of a vote we cast, or we have not voted and do
        // not know a leader in this term, or it is a pre-vote for a future term.
        const canVote =
          this.vote === m.from ||
          (this.vote === NONE && this.lead === NONE) ||
          (m.type === MessageType.MsgPreVote && m.term > this.term);
        if (canVote && this.raftLog.isUpToDate(m.index, m.logTerm)) {
          // Answer with the term of the request: a granted pre-vote carries the future term.
          this.send(message({ type: voteResponseType(m.type), to: m.from, term: m.term }));
          if (m.type === MessageType.MsgVote) {
            this.electionElapsed = 0;
            this.vote = m.from;
          }
        } else {
          this.send(message({ type: voteResponseType(m.type), to: m.from, term: this.term, reject: true }));
        }
        return undefined;
      }
      default:
        return this.stepFn(m);
    }
  }

  // ---- step: leader ----------------------------------------------------------------

  private stepLeader(m: Message): StepResult {
    switch (m.type) {
      case MessageType.MsgBeat:
        this.bcastHeartbeat();
        return undefined;
      case MessageType.MsgCheckQuorum:
        if (!this.trk.quorumActive(this.id)) this.becomeFollower(this.term, NONE);
        // Everyone must prove activity again within the next election timeout.
        this.forEachPeer((_id, pr) => {
          pr.recentActive = false;
        });
        return undefined;
      case MessageType.MsgProp: {
        assert(m.entries.length > 0, "proposal carries entries");
        if (!this.trk.progress.has(this.id)) return new ProposalDroppedError("not-member");
        // No new entries while handing over: the transferee must catch up to a fixed log.
        if (this.leadTransferee !== NONE) return new ProposalDroppedError("leader-transfer");
        let hasConf = false;
        for (const e of m.entries) if (e.type === EntryType.ConfChange) hasConf = true;
        // One membership change at a time: the previous one must be applied first.
        if (hasConf && this.pendingConfIndex > this.raftLog.applied) {
          return new ProposalDroppedError("conf-change-pending");
        }
        if (this.msgs.length >= maxMessagesPerReady) return new ProposalDroppedError("overloaded");
        if (!this.increaseUncommittedSize(m.entries)) return new ProposalDroppedError("overloaded");
        if (hasConf) {
          assert(m.entries.length === 1, "a conf change is proposed alone");
          this.pendingConfIndex = this.raftLog.lastIndex() + 1;
        }
        this.appendEntry(m.entries.map((e) => ({ ...e })));
        this.bcastAppend();
        return undefined;
      }
      case MessageType.MsgReadIndex: {
        if (this.trk.isSingleton()) {
          // Alone, the leader is its own quorum.
          this.responseToReadIndexReq(m, this.raftLog.committed);
          return undefined;
        }
        // Thesis §6.4 step 1: until an entry of this term is committed, the leader's
        // commit index may be behind the cluster's; hold the request until then.
        if (!this.committedEntryInCurrentTerm()) {
          if (this.pendingReadIndexMessages.length >= maxPendingReadIndexRequests)
            return new ProposalDroppedError("overloaded");
          this.pendingReadIndexMessages.push(m);
          return undefined;
        }
        return this.sendReadIndexConfirmation(m);
      }
    }

    const pr = this.trk.progress.get(m.from);
    if (pr === undefined) return undefined;
    switch (m.type) {
      case MessageType.MsgAppResp:
        this.handleAppendResponse(m, pr);
        return undefined;
      case MessageType.MsgHeartbeatResp: {
        pr.recentActive = true;
        pr.msgAppFlowPaused = false;
        // A lost append would otherwise keep a full window full forever (etcd 3.4).
        if (pr.state === ProgressState.Replicate && pr.inflights.full()) pr.inflights.freeFirstOne();
        if (pr.match < this.raftLog.lastIndex()) this.sendAppend(m.from);
        if (m.context.length === 0) return undefined;
        const acks = this.readOnly.recvAck(m.from, m.context);
        if (acks === undefined || !this.trk.hasQuorum(acks)) return undefined;
        for (const rs of this.readOnly.advance(m.context)) this.responseToReadIndexReq(rs.req, rs.index);
        return undefined;
      }
      case MessageType.MsgSnapStatus:
        if (pr.state !== ProgressState.Snapshot) return undefined;
        if (!m.reject) {
          pr.becomeProbe();
        } else {
          // The snapshot failed: forget it and probe again once a heartbeat answers.
          pr.pendingSnapshot = 0;
          pr.becomeProbe();
        }
        // Wait for a heartbeat response (or the append response) before the next probe.
        pr.msgAppFlowPaused = true;
        return undefined;
      case MessageType.MsgUnreachable:
        // Optimistic replication assumed delivery; go back to probing (etcd).
        if (pr.state === ProgressState.Replicate) pr.becomeProbe();
        return undefined;
      case MessageType.MsgTransferLeader: {
        if (pr.isLearner) return undefined;
        const transferee = m.from;
        if (this.leadTransferee !== NONE) {
          if (this.leadTransferee === transferee) return undefined;
          this.abortLeaderTransfer();
        }
        if (transferee === this.id) return undefined;
        // The transfer must finish within one election timeout (thesis §3.10).
        this.electionElapsed = 0;
        this.leadTransferee = transferee;
        if (pr.match === this.raftLog.lastIndex()) this.sendTimeoutNow(transferee);
        else this.sendAppend(transferee);
        return undefined;
      }
    }
    return undefined;
  }

  private handleAppendResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (m.reject) {
      // Skip a whole term per round trip using the follower's hint (etcd, findConflictByTerm).
      let nextProbeIdx = m.rejectHint;
      if (m.logTerm > 0) nextProbeIdx = this.raftLog.findConflictByTerm(m.rejectHint, m.logTerm).index;
      if (pr.maybeDecrTo(m.index, nextProbeIdx)) {
        if (pr.state === ProgressState.Replicate) pr.becomeProbe();
        this.sendAppend(m.from);
      }
      return;
    }
    const oldPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index)) return;
    if (pr.state === ProgressState.Probe) {
      pr.becomeReplicate();
    } else if (pr.state === ProgressState.Snapshot && pr.match + 1 >= this.raftLog.firstIndex()) {
      // The follower caught up through appends (or the snapshot landed): resume replicating.
      pr.becomeProbe();
      pr.becomeReplicate();
    } else if (pr.state === ProgressState.Replicate) {
      pr.inflights.freeLE(m.index);
    }
    if (this.maybeCommit()) {
      this.releasePendingReadIndexMessages();
      this.bcastAppend();
    } else if (oldPaused) {
      this.sendAppend(m.from);
    }
    // Fill the window while there is something to send.
    while (this.maybeSendAppend(m.from, false)) {}
    if (m.from === this.leadTransferee && pr.match === this.raftLog.lastIndex()) this.sendTimeoutNow(m.from);
  }

  /** Accounts for new proposals; refuses them past the limit (one proposal always fits). */
  private increaseUncommittedSize(es: Entry[]): boolean {
    let size = 0;
    for (const e of es) size += e.data.length;
    if (
      this.uncommittedSizeBytes > 0 &&
      size > 0 &&
      this.uncommittedSizeBytes + size > this.maxUncommittedEntriesSizeBytes
    ) {
      return false;
    }
    this.uncommittedSizeBytes += size;
    return true;
  }

  /** Releases the accounting for entries the application applied (RawNode.advance). */
  reduceUncommittedSize(applied: Entry[]): void {
    if (this.state !== StateType.Leader) return;
    let size = 0;
    for (const e of applied) size += e.data.length;
    // Entries from an earlier term were never counted; never go below zero.
    this.uncommittedSizeBytes = size > this.uncommittedSizeBytes ? 0 : this.uncommittedSizeBytes - size;
    assert(this.uncommittedSizeBytes >= 0, "uncommitted size stays non-negative");
  }

  private sendTimeoutNow(to: number): void {
    this.send(message({ type: MessageType.MsgTimeoutNow, to }));
  }

  abortLeaderTransfer(): void {
    this.leadTransferee = NONE;
  }

  committedEntryInCurrentTerm(): boolean {
    return this.raftLog.termAt(this.raftLog.committed) === this.term;
  }

  private releasePendingReadIndexMessages(): void {
    if (!this.committedEntryInCurrentTerm()) return;
    const msgs = this.pendingReadIndexMessages;
    this.pendingReadIndexMessages = [];
    for (const m of msgs) this.sendReadIndexConfirmation(m);
  }

  private sendReadIndexConfirmation(m: Message): StepResult {
    // Thesis §6.4 steps 2-3: remember the commit index, then confirm leadership with a
    // heartbeat round tagged with the request's context.
    const ctx = m.entries[0]!.data;
    if (!this.readOnly.addRequest(this.raftLog.committed, m)) return new ProposalDroppedError("overloaded");
    this.readOnly.recvAck(this.id, ctx);
    this.bcastHeartbeatWithCtx(ctx);
    return undefined;
  }

  private responseToReadIndexReq(req: Message, index: number): void {
    if (req.from === NONE || req.from === this.id) {
      this.readStates.push({ index, requestCtx: req.entries[0]!.data });
      return;
    }
    this.send(message({ type: MessageType.MsgReadIndexResp, to: req.from, index, entries: req.entries }));
  }

  // ---- step: candidate and pre-candidate -----------------------------------------------

  private stepCandidate(m: Message): StepResult {
    // A pre-candidate counts pre-vote answers, a candidate vote answers; the other kind
    // is a late answer from an earlier phase and is ignored.
    const myVoteRespType =
      this.state === StateType.PreCandidate ? MessageType.MsgPreVoteResp : MessageType.MsgVoteResp;
    switch (m.type) {
      case MessageType.MsgProp:
        return new ProposalDroppedError("no-leader");
      case MessageType.MsgReadIndex:
        return new ProposalDroppedError("no-leader");
      case MessageType.MsgTransferLeader:
        return new ProposalDroppedError("no-leader");
      case MessageType.MsgApp:
        // Raft paper §5.2: a leader of at least our term exists; return to follower.
        this.becomeFollower(m.term, m.from);
        this.handleAppendEntries(m);
        return undefined;
      case MessageType.MsgHeartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return undefined;
      case MessageType.MsgSnap:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return undefined;
      case myVoteRespType: {
        const res = this.poll(m.from, !m.reject);
        if (res === "won") {
          if (this.state === StateType.PreCandidate) {
            this.campaign("election");
          } else {
            this.becomeLeader();
            this.bcastAppend();
          }
        } else if (res === "lost") {
          // A rejection carries the rejecter's term (>= ours); stay in it as a follower.
          this.becomeFollower(this.term, NONE);
        }
        return undefined;
      }
    }
    return undefined;
  }

  // ---- step: follower --------------------------------------------------------------

  private stepFollower(m: Message): StepResult {
    switch (m.type) {
      case MessageType.MsgProp:
        if (this.lead === NONE) return new ProposalDroppedError("no-leader");
        this.send({ ...m, to: this.lead, term: 0 });
        return undefined;
      case MessageType.MsgApp:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppendEntries(m);
        return undefined;
      case MessageType.MsgHeartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return undefined;
      case MessageType.MsgSnap:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return undefined;
      case MessageType.MsgTransferLeader:
        if (this.lead === NONE) return new ProposalDroppedError("no-leader");
        this.send({ ...m, to: this.lead, term: 0 });
        return undefined;
      case MessageType.MsgTimeoutNow:
        // The leader asked us to take over: campaign at once, skipping pre-vote, with a
        // context that lets the vote requests through the other followers' lease.
        this.hup("transfer");
        return undefined;
      case MessageType.MsgReadIndex:
        if (this.lead === NONE) return new ProposalDroppedError("no-leader");
        this.send({ ...m, to: this.lead, term: 0 });
        return undefined;
      case MessageType.MsgReadIndexResp:
        if (m.entries.length !== 1) return undefined;
        this.readStates.push({ index: m.index, requestCtx: m.entries[0]!.data });
        return undefined;
    }
    return undefined;
  }

  handleAppendEntries(m: Message): void {
    if (m.index < this.raftLog.committed) {
      // Everything up to our commit index is already agreed; tell the leader where we are.
      this.send(message({ type: MessageType.MsgAppResp, to: m.from, index: this.raftLog.committed }));
      return;
    }
    const lastNew = this.raftLog.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      assert(this.raftLog.lastIndex() >= lastNew, "an accepted append is in the log");
      this.send(message({ type: MessageType.MsgAppResp, to: m.from, index: lastNew }));
      return;
    }
    // Reject, with a hint: the largest index <= min(m.index, lastIndex) whose term is
    // <= m.logTerm. The leader can skip every index after it (etcd, paper §5.3).
    const hint = this.raftLog.findConflictByTerm(Math.min(m.index, this.raftLog.lastIndex()), m.logTerm);
    this.send(
      message({
        type: MessageType.MsgAppResp,
        to: m.from,
        index: m.index,
        reject: true,
        rejectHint: hint.index,
        logTerm: hint.term,
      }),
    );
  }

  private handleHeartbeat(m: Message): void {
    this.raftLog.commitTo(m.commit);
    this.send(message({ type: MessageType.MsgHeartbeatResp, to: m.from, context: m.context }));
  }

  private handleSnapshot(m: Message): void {
    const s = m.snapshot;
    assert(s !== undefined, "MsgSnap carries a snapshot");
    if (this.restore(s)) {
      this.send(message({ type: MessageType.MsgAppResp, to: m.from, index: this.raftLog.lastIndex() }));
    } else {
      this.send(message({ type: MessageType.MsgAppResp, to: m.from, index: this.raftLog.committed }));
    }
  }

  /** Installs a snapshot from the leader; returns false if it was stale or already covered. */
  restore(s: Snapshot): boolean {
    if (s.metadata.index <= this.raftLog.committed) return false;
    if (this.state !== StateType.Follower) {
      // Only a follower receives snapshots; anything else is a bug elsewhere. Step down
      // to a new term rather than install it (etcd does the same, defensively).
      this.becomeFollower(this.term + 1, NONE);
      return false;
    }
    const cs = s.metadata.confState;
    if (!cs.voters.includes(this.id) && !cs.learners.includes(this.id)) {
      // A snapshot of a configuration without us: refuse it (etcd).
      return false;
    }
    if (this.raftLog.matchTerm(s.metadata.index, s.metadata.term)) {
      // We already have the entry: just commit up to it (fast-forward).
      this.raftLog.commitTo(s.metadata.index);
      return false;
    }
    this.raftLog.restore(s);
    this.trk.progress.clear();
    this.restoreConfState(cs);
    assert(this.raftLog.committed === s.metadata.index, "restore commits up to the snapshot");
    return true;
  }

  // ---- membership --------------------------------------------------------------------

  private restoreConfState(cs: ConfState): void {
    this.trk.voters = new Set();
    this.trk.learners = new Set();
    this.trk.progress.clear();
    const next = this.raftLog.lastIndex() + 1;
    for (const id of cs.voters) this.addNode(id, false, next);
    for (const id of cs.learners) this.addNode(id, true, next);
    const self = this.trk.progress.get(this.id);
    this.isLearner = self?.isLearner ?? false;
  }

  private addNode(id: number, isLearner: boolean, next: number): void {
    const existing = this.trk.progress.get(id);
    if (existing === undefined) {
      const pr = new Progress(next, this.trk.maxInflight, this.trk.maxInflightBytes, isLearner);
      if (id === this.id) pr.match = next - 1;
      // A new member counts as active, or check-quorum would step down right after adding it.
      pr.recentActive = true;
      this.trk.progress.set(id, pr);
    } else {
      existing.isLearner = isLearner;
    }
    if (isLearner) {
      this.trk.voters.delete(id);
      this.trk.learners.add(id);
    } else {
      this.trk.learners.delete(id);
      this.trk.voters.add(id);
    }
  }

  /**
   * Applies a membership change once its entry is *applied* (the application calls this
   * from its apply loop).
   *
   * Design choice: single-server changes (Raft thesis §4.1), as etcd's ConfChange v1,
   * not joint consensus. Adding or removing one voter at a time keeps every majority of
   * the old configuration overlapping every majority of the new one, so no joint phase
   * is needed; learners (thesis §4.2.1) let a new server catch up before it is promoted
   * and counts for quorum. The change takes effect when applied (not when appended, as
   * in the thesis) because that is when the application's own view of the membership
   * changes; the rule that keeps this safe is etcd's: a leader accepts no new change
   * while one is pending (`pendingConfIndex > applied`), and a new leader treats its
   * whole log as pending until its first entry is applied. Joint consensus would allow
   * arbitrary changes in one step, which the registry does not need (etcd's member
   * add/remove/promote API is one member at a time) and which costs a second config.
   */
  applyConfChange(cc: ConfChange): ConfState {
    const next = this.raftLog.lastIndex() + 1;
    switch (cc.type) {
      case ConfChangeType.AddNode:
        this.addNode(cc.nodeId, false, next);
        break;
      case ConfChangeType.AddLearnerNode:
        this.addNode(cc.nodeId, true, next);
        break;
      case ConfChangeType.RemoveNode:
        this.trk.voters.delete(cc.nodeId);
        this.trk.learners.delete(cc.nodeId);
        this.trk.progress.delete(cc.nodeId);
        break;
    }
    const self = this.trk.progress.get(this.id);
    this.isLearner = self?.isLearner ?? false;
    const cs = this.trk.confState();
    assert(
      cs.voters.every((id) => !this.trk.learners.has(id)),
      "no member is both voter and learner",
    );
    assert(this.trk.progress.size === cs.voters.length + cs.learners.length, "every member has a progress");
    if (this.state !== StateType.Leader) return cs;
    if (self === undefined || self.isLearner) {
      // The leader was removed (or demoted): step down so the rest elect a leader
      // among themselves (etcd's StepDownOnRemoval).
      this.becomeFollower(this.term, NONE);
      return cs;
    }
    if (this.leadTransferee !== NONE && !this.trk.voters.has(this.leadTransferee)) this.abortLeaderTransfer();
    // The quorum changed: entries may now be committed (tell everyone), and new
    // members need the log (etcd switchToConfig).
    if (this.maybeCommit()) {
      this.releasePendingReadIndexMessages();
      this.bcastAppend();
    } else {
      this.forEachPeer((id) => this.maybeSendAppend(id, false));
    }
    return cs;
  }

  /** Decodes a conf change entry and applies it (a convenience for apply loops). */
  applyConfChangeEntry(e: Entry): ConfState {
    assert(e.type === EntryType.ConfChange, "entry is a conf change");
    return this.applyConfChange(decodeConfChange(e.data));
  }
}
