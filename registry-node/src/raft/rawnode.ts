// The synchronous interface the node shell drives (etcd rawnode.go). The shell loop is:
//
//   tick() on a timer; step(m) for each message from a peer; propose()/readIndex() for
//   clients; then, while hasReady(): rd = ready(); persist rd.snapshot, rd.entries and
//   rd.hardState (fsync if rd.mustSync); send rd.messages; apply rd.committed (calling
//   applyConfChange for conf change entries); serve rd.readStates once applied; advance(rd).
//
// Nothing here waits: every effect is returned as data in the Ready.

import { assert } from "./assert.js";
import { Raft, type RaftConfig, type StepResult } from "./raft.js";
import {
  type ConfChange,
  type ConfState,
  type Entry,
  EntryType,
  encodeConfChange,
  type HardState,
  hardStateEqual,
  isEmptyHardState,
  isLocalMessage,
  isResponseMessage,
  type Message,
  MessageType,
  message,
  type ReadState,
  type Snapshot,
  type SoftState,
  type StateType,
} from "./types.js";

export type Ready = {
  /** Volatile state (leader, role) when it changed; never persisted. */
  softState?: SoftState;
  /** Persist BEFORE sending `messages`: a vote or term must survive a crash once announced. */
  hardState?: HardState;
  /** Answers to ReadIndex requests; serve each read once `index` is applied. */
  readStates: ReadState[];
  /** Append to stable storage BEFORE sending `messages` (fsync when `mustSync`). */
  entries: Entry[];
  /** A snapshot from the leader to persist (and restore the state machine from) first. */
  snapshot?: Snapshot;
  /** Committed entries to apply, in order, after persisting the above. */
  committed: Entry[];
  /** Messages to send AFTER the entries, hard state and snapshot are persisted. */
  messages: Message[];
  /** Whether the writes must be fsynced (new entries, or a new term or vote). */
  mustSync: boolean;
};

export type Status = {
  id: number;
  hardState: HardState;
  softState: SoftState;
  applied: number;
  leadTransferee: number;
};

export class RawNode {
  readonly raft: Raft;
  private prevSoftState: SoftState;
  private prevHardState: HardState;

  constructor(config: RaftConfig) {
    this.raft = new Raft(config);
    this.prevSoftState = this.raft.softState();
    this.prevHardState = this.raft.hardState();
  }

  tick(): void {
    this.raft.tick();
  }

  /** Starts an election now (tests; normally elections start from ticks). */
  campaign(): StepResult {
    return this.raft.step(message({ type: MessageType.MsgHup }));
  }

  /** Proposes `data` for the log. Returns an error when it was dropped (e.g. no leader known). */
  propose(data: Uint8Array): StepResult {
    return this.raft.step(
      message({
        type: MessageType.MsgProp,
        from: this.raft.id,
        entries: [{ term: 0, index: 0, type: EntryType.Normal, data }],
      }),
    );
  }

  /** Proposes a single-server membership change; see Raft.applyConfChange for the design. */
  proposeConfChange(cc: ConfChange): StepResult {
    return this.raft.step(
      message({
        type: MessageType.MsgProp,
        from: this.raft.id,
        entries: [{ term: 0, index: 0, type: EntryType.ConfChange, data: encodeConfChange(cc) }],
      }),
    );
  }

  /** Applies a conf change whose entry is being applied; returns the new configuration. */
  applyConfChange(cc: ConfChange): ConfState {
    return this.raft.applyConfChange(cc);
  }

  /** Feeds a message from a peer. Local message types are refused (they come from ticks). */
  step(m: Message): StepResult {
    if (isLocalMessage(m.type)) return undefined;
    // Responses from members we do not know (e.g. removed) are ignored (etcd ErrStepPeerNotFound).
    if (isResponseMessage(m.type) && !this.raft.trk.progress.has(m.from)) return undefined;
    return this.raft.step(m);
  }

  /**
   * Requests a linearizable read point; the answer arrives as a ReadState with the same
   * `ctx` in a later Ready. `ctx` must be unique among outstanding requests.
   */
  readIndex(ctx: Uint8Array): StepResult {
    assert(ctx.length > 0, "a read index context is non-empty");
    return this.raft.step(
      message({
        type: MessageType.MsgReadIndex,
        entries: [{ term: 0, index: 0, type: EntryType.Normal, data: ctx }],
      }),
    );
  }

  /** Asks the leader to hand leadership to `transferee` (thesis §3.10). */
  transferLeadership(transferee: number): StepResult {
    return this.raft.step(message({ type: MessageType.MsgTransferLeader, from: transferee }));
  }

  /** The transport could not reach `id`: stop optimistic replication to it. */
  reportUnreachable(id: number): void {
    this.raft.step(message({ type: MessageType.MsgUnreachable, from: id }));
  }

  /** The transport finished (ok) or failed to send the snapshot to `id`. */
  reportSnapshot(id: number, ok: boolean): void {
    this.raft.step(message({ type: MessageType.MsgSnapStatus, from: id, reject: !ok }));
  }

  hasReady(): boolean {
    const r = this.raft;
    const ss = r.softState();
    if (ss.lead !== this.prevSoftState.lead || ss.raftState !== this.prevSoftState.raftState) return true;
    const hs = r.hardState();
    if (!isEmptyHardState(hs) && !hardStateEqual(hs, this.prevHardState)) return true;
    if (r.raftLog.hasPendingSnapshot()) return true;
    if (r.msgs.length > 0 || r.raftLog.unstable.entries.length > 0 || r.raftLog.hasNextEnts()) return true;
    return r.readStates.length > 0;
  }

  ready(): Ready {
    const r = this.raft;
    const entries = r.raftLog.unstableEntries();
    const rd: Ready = {
      readStates: r.readStates,
      entries,
      committed: r.raftLog.nextEnts(),
      messages: r.msgs,
      mustSync: false,
    };
    const ss = r.softState();
    if (ss.lead !== this.prevSoftState.lead || ss.raftState !== this.prevSoftState.raftState) {
      rd.softState = ss;
      this.prevSoftState = ss;
    }
    const hs = r.hardState();
    if (!hardStateEqual(hs, this.prevHardState)) rd.hardState = hs;
    const snap = r.raftLog.unstable.snapshot;
    if (snap) rd.snapshot = snap;
    // Entries, or a changed term or vote, must reach the disk before anyone hears of
    // them; a commit index alone can be recovered from the quorum (etcd MustSync).
    rd.mustSync =
      entries.length > 0 || hs.term !== this.prevHardState.term || hs.vote !== this.prevHardState.vote;
    r.msgs = [];
    r.readStates = [];
    assert(
      rd.committed.length === 0 || rd.committed[0]!.index === r.raftLog.applied + 1 || snap !== undefined,
      "committed entries continue from the applied index",
    );
    return rd;
  }

  /** Tells Raft the Ready was persisted and applied (call after handling it completely). */
  advance(rd: Ready): void {
    const log = this.raft.raftLog;
    if (rd.hardState && !isEmptyHardState(rd.hardState)) this.prevHardState = rd.hardState;
    if (rd.snapshot) {
      log.stableSnapTo(rd.snapshot.metadata.index);
      if (log.applied < rd.snapshot.metadata.index) log.appliedTo(rd.snapshot.metadata.index);
    }
    const lastCommitted = rd.committed[rd.committed.length - 1];
    if (lastCommitted) log.appliedTo(lastCommitted.index);
    this.raft.reduceUncommittedSize(rd.committed);
    const lastEntry = rd.entries[rd.entries.length - 1];
    if (lastEntry) log.stableTo(lastEntry.index, lastEntry.term);
  }

  status(): Status {
    const r = this.raft;
    return {
      id: r.id,
      hardState: r.hardState(),
      softState: r.softState(),
      applied: r.raftLog.applied,
      leadTransferee: r.leadTransferee,
    };
  }

  get id(): number {
    return this.raft.id;
  }

  get state(): StateType {
    return this.raft.state;
  }

  /** The known leader, or NONE. */
  get lead(): number {
    return this.raft.lead;
  }
}
