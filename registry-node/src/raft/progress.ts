// What a leader knows about each follower (etcd tracker/progress.go, inflights.go,
// tracker.go). A follower is probed one message at a time until its match index is
// found, then replicated to optimistically with a bounded window of in-flight appends,
// or sent a snapshot when the entries it needs were compacted.

import { assert } from "./assert.js";
import type { ConfState } from "./types.js";

export enum ProgressState {
  Probe = "StateProbe",
  Replicate = "StateReplicate",
  Snapshot = "StateSnapshot",
}

/** A ring of the last index of each MsgApp in flight, bounded in count and bytes. */
export class Inflights {
  private readonly indexes: number[] = [];
  private readonly sizes: number[] = [];
  private head = 0;
  private bytes = 0;

  constructor(
    readonly maxCount: number,
    readonly maxBytes: number,
  ) {
    assert(maxCount > 0, "inflights need room for at least one message");
  }

  count(): number {
    return this.indexes.length - this.head;
  }

  add(index: number, bytes: number): void {
    assert(!this.full(), "inflights.add on a full window");
    const n = this.indexes.length;
    assert(n === this.head || this.indexes[n - 1]! < index, "inflight indexes increase");
    this.indexes.push(index);
    this.sizes.push(bytes);
    this.bytes += bytes;
  }

  /** Frees every message whose last index is <= `to` (acknowledged). */
  freeLE(to: number): void {
    while (this.head < this.indexes.length && this.indexes[this.head]! <= to) {
      this.bytes -= this.sizes[this.head]!;
      this.head++;
    }
    if (this.head > 64 && this.head * 2 > this.indexes.length) {
      this.indexes.splice(0, this.head);
      this.sizes.splice(0, this.head);
      this.head = 0;
    }
  }

  /** Frees the oldest message: a heartbeat answer proves the follower is alive (etcd FreeFirstOne). */
  freeFirstOne(): void {
    if (this.count() > 0) this.freeLE(this.indexes[this.head]!);
  }

  full(): boolean {
    return this.count() >= this.maxCount || (this.maxBytes > 0 && this.bytes >= this.maxBytes);
  }

  reset(): void {
    this.indexes.length = 0;
    this.sizes.length = 0;
    this.head = 0;
    this.bytes = 0;
  }
}

export class Progress {
  /** Highest index known to be replicated on the follower. */
  match = 0;
  /** Next index to send; match < next. */
  next: number;
  state: ProgressState = ProgressState.Probe;
  /** Index of the snapshot being sent, while in the snapshot state. */
  pendingSnapshot = 0;
  /** Heard from since the last check-quorum (thesis §6.2). */
  recentActive = false;
  /** In probe state: one append is out, wait for its answer or a heartbeat response. */
  msgAppFlowPaused = false;
  readonly inflights: Inflights;

  constructor(
    next: number,
    maxInflight: number,
    maxInflightBytes: number,
    public isLearner: boolean,
  ) {
    assert(next >= 1, "next index starts at 1 or later");
    this.next = next;
    this.inflights = new Inflights(maxInflight, maxInflightBytes);
  }

  private resetState(state: ProgressState): void {
    this.msgAppFlowPaused = false;
    this.pendingSnapshot = 0;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    // After a snapshot, resume right after it: the follower has at least that much.
    if (this.state === ProgressState.Snapshot) {
      const pending = this.pendingSnapshot;
      this.resetState(ProgressState.Probe);
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState(ProgressState.Probe);
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState(ProgressState.Replicate);
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.resetState(ProgressState.Snapshot);
    this.pendingSnapshot = snapshotIndex;
  }

  /** An append of `count` entries ending before `next` (+count) was sent. */
  updateOnEntriesSend(count: number, bytes: number, nextIndex: number): void {
    if (this.state === ProgressState.Replicate) {
      if (count > 0) {
        const last = nextIndex + count - 1;
        this.next = last + 1;
        this.inflights.add(last, bytes);
      }
    } else if (this.state === ProgressState.Probe) {
      this.msgAppFlowPaused = true;
    } else {
      assert(false, `sending entries in state ${this.state}`);
    }
  }

  /** An acknowledgement up to `n`; returns false if it was stale. */
  maybeUpdate(n: number): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.msgAppFlowPaused = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /**
   * A rejection of the append after `rejected`, with the follower's hint `matchHint`
   * (an index at which our logs may agree). Returns false if the rejection is stale.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === ProgressState.Replicate) {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    // In probe state only the answer to the last probe (next-1) counts.
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.msgAppFlowPaused = false;
    assert(this.next > this.match, "next stays above match");
    return true;
  }

  isPaused(): boolean {
    switch (this.state) {
      case ProgressState.Probe:
        return this.msgAppFlowPaused;
      case ProgressState.Replicate:
        return this.inflights.full();
      case ProgressState.Snapshot:
        return true;
    }
  }
}

export type VoteResult = "pending" | "won" | "lost";

/** The membership (one majority configuration plus learners) and each member's progress. */
export class ProgressTracker {
  voters = new Set<number>();
  learners = new Set<number>();
  readonly progress = new Map<number, Progress>();
  votes = new Map<number, boolean>();

  constructor(
    readonly maxInflight: number,
    readonly maxInflightBytes: number,
  ) {}

  quorum(): number {
    return Math.floor(this.voters.size / 2) + 1;
  }

  confState(): ConfState {
    return {
      voters: [...this.voters].sort((a, b) => a - b),
      learners: [...this.learners].sort((a, b) => a - b),
    };
  }

  isSingleton(): boolean {
    return this.voters.size === 1;
  }

  /** The highest index replicated on a quorum of voters (their match indexes' median). */
  committed(): number {
    if (this.voters.size === 0) return Number.MAX_SAFE_INTEGER;
    const matched: number[] = [];
    for (const id of this.voters) matched.push(this.progress.get(id)!.match);
    matched.sort((a, b) => b - a);
    return matched[this.quorum() - 1]!;
  }

  quorumActive(selfId: number): boolean {
    let active = 0;
    for (const id of this.voters) {
      if (id === selfId || this.progress.get(id)!.recentActive) active++;
    }
    return active >= this.quorum();
  }

  resetVotes(): void {
    this.votes = new Map();
  }

  /** Records the first vote of `id` only: a voter cannot change its mind within a term. */
  recordVote(id: number, granted: boolean): void {
    if (!this.votes.has(id)) this.votes.set(id, granted);
  }

  tallyVotes(): { granted: number; rejected: number; result: VoteResult } {
    let granted = 0;
    let rejected = 0;
    for (const id of this.voters) {
      const v = this.votes.get(id);
      if (v === true) granted++;
      else if (v === false) rejected++;
    }
    const missing = this.voters.size - granted - rejected;
    const q = this.quorum();
    const result: VoteResult = granted >= q ? "won" : granted + missing < q ? "lost" : "pending";
    return { granted, rejected, result };
  }

  /** Whether the given acknowledgements form a quorum of voters. */
  hasQuorum(acks: Set<number>): boolean {
    let n = 0;
    for (const id of this.voters) if (acks.has(id)) n++;
    return n >= this.quorum();
  }

  isVoter(id: number): boolean {
    return this.voters.has(id);
  }
}
