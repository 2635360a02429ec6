// The persisted Raft log as Raft reads it (etcd raft's Storage interface, storage.go).
// The application writes to it after each Ready is made durable; Raft only reads. The
// on-disk WAL implements this interface too; MemoryStorage is the in-memory version
// used by tests and by the simulator (where it stands for "what survived on disk").

import { assert } from "./assert.js";
import {
  type ConfState,
  type Entry,
  emptyHardState,
  entrySizeBytes,
  type HardState,
  type Snapshot,
} from "./types.js";

/** The requested index is older than the first entry still kept (it was compacted). */
export class CompactedError extends Error {
  readonly code = "REG_ERR_RAFT_COMPACTED";
  override name = "CompactedError";
}
/** The requested index is newer than the last entry stored. */
export class UnavailableError extends Error {
  readonly code = "REG_ERR_RAFT_UNAVAILABLE";
  override name = "UnavailableError";
}
/** A snapshot older than (or as old as) the current one was offered. */
export class SnapshotOutOfDateError extends Error {
  readonly code = "REG_ERR_RAFT_SNAP_OUT_OF_DATE";
  override name = "SnapshotOutOfDateError";
}
/** The snapshot is being prepared; the leader should try again later (etcd ErrSnapshotTemporarilyUnavailable). */
export class SnapshotTemporarilyUnavailableError extends Error {
  readonly code = "REG_ERR_RAFT_SNAP_TEMPORARILY_UNAVAILABLE";
  override name = "SnapshotTemporarilyUnavailableError";
}

export type InitialState = { hardState: HardState; confState: ConfState };

export interface Storage {
  /** The saved HardState and the ConfState of the latest snapshot. */
  initialState(): InitialState;
  /** Entries in [lo, hi), at least one if any, at most `maxSizeBytes` beyond the first. */
  entries(lo: number, hi: number, maxSizeBytes: number): Entry[];
  /** Term of entry `i`, which must be in [firstIndex()-1, lastIndex()]. */
  term(i: number): number;
  lastIndex(): number;
  /** Index of the first entry still available (older ones are in the snapshot). */
  firstIndex(): number;
  /** The most recent snapshot, for sending to a lagging follower. */
  snapshot(): Snapshot;
}

/** Keeps entries while their total size stays within `maxSizeBytes`, always at least one. */
export function limitSize(ents: Entry[], maxSizeBytes: number): Entry[] {
  if (ents.length === 0) return ents;
  let size = entrySizeBytes(ents[0]!);
  let limit = 1;
  for (; limit < ents.length; limit++) {
    size += entrySizeBytes(ents[limit]!);
    if (size > maxSizeBytes) break;
  }
  return limit === ents.length ? ents : ents.slice(0, limit);
}

/**
 * etcd's MemoryStorage: `ents[0]` is a dummy entry carrying the snapshot's index and
 * term, so `term(firstIndex()-1)` answers without keeping the compacted entries.
 */
export class MemoryStorage implements Storage {
  private hardState: HardState = emptyHardState();
  private snap: Snapshot;
  private ents: Entry[];

  constructor(snapshot?: Snapshot) {
    this.snap = snapshot ?? {
      data: new Uint8Array(0),
      metadata: { confState: { voters: [], learners: [] }, index: 0, term: 0 },
    };
    this.ents = [this.dummy(this.snap)];
  }

  private dummy(s: Snapshot): Entry {
    return { term: s.metadata.term, index: s.metadata.index, type: 0, data: new Uint8Array(0) };
  }

  initialState(): InitialState {
    const cs = this.snap.metadata.confState;
    return {
      hardState: { ...this.hardState },
      confState: { voters: [...cs.voters], learners: [...cs.learners] },
    };
  }

  hardStateForTest(): HardState {
    return { ...this.hardState };
  }

  setHardState(hs: HardState): void {
    assert(hs.term >= 0 && hs.commit >= 0, "hard state fields are non-negative");
    this.hardState = { ...hs };
  }

  private offset(): number {
    return this.ents[0]!.index;
  }

  entries(lo: number, hi: number, maxSizeBytes: number): Entry[] {
    const offset = this.offset();
    if (lo <= offset) throw new CompactedError(`entry ${lo} compacted (first kept ${offset + 1})`);
    if (hi > this.lastIndex() + 1)
      throw new UnavailableError(`entries up to ${hi - 1} beyond ${this.lastIndex()}`);
    // Only the dummy entry: nothing to return.
    if (this.ents.length === 1) throw new UnavailableError("no entries");
    return limitSize(this.ents.slice(lo - offset, hi - offset), maxSizeBytes);
  }

  term(i: number): number {
    const offset = this.offset();
    if (i < offset) throw new CompactedError(`term of ${i} compacted (offset ${offset})`);
    if (i - offset >= this.ents.length) throw new UnavailableError(`term of ${i} beyond ${this.lastIndex()}`);
    return this.ents[i - offset]!.term;
  }

  lastIndex(): number {
    return this.ents[0]!.index + this.ents.length - 1;
  }

  firstIndex(): number {
    return this.ents[0]!.index + 1;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /** Replaces the whole log by a snapshot received from the leader. */
  applySnapshot(s: Snapshot): void {
    if (s.metadata.index <= this.snap.metadata.index) {
      throw new SnapshotOutOfDateError(`snapshot ${s.metadata.index} <= ${this.snap.metadata.index}`);
    }
    this.snap = s;
    this.ents = [this.dummy(s)];
  }

  /** Records a snapshot of the applied state at `i` (the application serialised `data`). */
  createSnapshot(i: number, cs: ConfState, data: Uint8Array): Snapshot {
    if (i <= this.snap.metadata.index) throw new SnapshotOutOfDateError(`snapshot ${i} is not newer`);
    assert(i <= this.lastIndex(), () => `snapshot ${i} is beyond last index ${this.lastIndex()}`);
    const term = this.ents[i - this.offset()]!.term;
    this.snap = {
      data,
      metadata: { index: i, term, confState: { voters: [...cs.voters], learners: [...cs.learners] } },
    };
    return this.snap;
  }

  /** Drops entries up to and including `compactIndex`; callers snapshot first. */
  compact(compactIndex: number): void {
    const offset = this.offset();
    if (compactIndex <= offset) throw new CompactedError(`already compacted to ${offset}`);
    assert(compactIndex <= this.lastIndex(), () => `compact ${compactIndex} beyond ${this.lastIndex()}`);
    const i = compactIndex - offset;
    const head = this.ents[i]!;
    this.ents = [
      { term: head.term, index: head.index, type: 0, data: new Uint8Array(0) },
      ...this.ents.slice(i + 1),
    ];
  }

  /** Appends entries; an entry at an index already stored replaces it and everything after it. */
  append(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const last = entries[0]!.index + entries.length - 1;
    if (last < first) return; // Everything is already compacted away.
    if (first > entries[0]!.index) entries = entries.slice(first - entries[0]!.index);
    const offset = entries[0]!.index - this.offset();
    assert(
      offset <= this.ents.length,
      () => `missing log entry: last ${this.lastIndex()}, append at ${entries[0]!.index}`,
    );
    this.ents = this.ents.slice(0, offset).concat(entries);
    assert(this.lastIndex() === last, "append leaves the given last entry last");
  }
}
