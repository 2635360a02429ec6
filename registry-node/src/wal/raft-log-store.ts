// Start-up: rebuild what the Raft core's in-memory storage needs (the snapshot's metadata,
// the hard state, the entries after the snapshot) from the snap directory and the WAL, as
// etcd's server does in restartNode (storage.go / raft.go): find the snapshot markers the
// WAL knows to be committed, load the newest snapshot file among them, open the WAL at that
// snapshot and read everything after it.

import type { FileSystem } from "../io/types.js";
import type { Entry, HardState, Snapshot } from "../raft/types.js";
import { assert } from "./errors.js";
import type { SnapshotMarker } from "./record.js";
import { Snapshotter } from "./snapshotter.js";
import { type TailRepair, Wal, type WalOptions } from "./wal.js";

export type RaftLogPaths = { walDir: string; snapDir: string } & WalOptions;

export type RestoredRaftLog = {
  /** The WAL, read and ready to append. */
  wal: Wal;
  snapshotter: Snapshotter;
  /** The snapshot restarted from (metadata, and any small data), or undefined for none. */
  snapshot: Snapshot | undefined;
  metadata: Uint8Array;
  hardState: HardState;
  /** Entries after the snapshot. */
  entries: Entry[];
  repair?: TailRepair;
  /** True when the WAL did not exist and was created with the given metadata. */
  created: boolean;
};

/** What this helper needs of the Raft core's MemoryStorage (structural, so it stays decoupled). */
export interface RaftLogTarget {
  applySnapshot(s: Snapshot): void;
  setHardState(hs: HardState): void;
  append(entries: Entry[]): void;
}

/**
 * Opens (or, when `dir` holds no WAL and `metadata` is given, creates) the WAL and the
 * snapshot files and returns the log to hand to Raft.
 */
export function restoreRaftLog(fs: FileSystem, paths: RaftLogPaths, metadata?: Uint8Array): RestoredRaftLog {
  const snapshotter = new Snapshotter(fs, paths.snapDir);
  const opts: WalOptions = {};
  if (paths.segmentSizeBytes !== undefined) opts.segmentSizeBytes = paths.segmentSizeBytes;
  if (!Wal.exists(fs, paths.walDir)) {
    assert(metadata !== undefined, "no WAL to restart from and no metadata to create one with");
    const wal = Wal.create(fs, paths.walDir, metadata, opts);
    return {
      wal,
      snapshotter,
      snapshot: undefined,
      metadata: metadata.slice(),
      hardState: { term: 0, vote: 0, commit: 0 },
      entries: [],
      created: true,
    };
  }
  const markers = Wal.validSnapshotMarkers(fs, paths.walDir);
  const snapshot = snapshotter.loadNewestAvailable(markers);
  const marker: SnapshotMarker = snapshot
    ? { index: snapshot.metadata.index, term: snapshot.metadata.term }
    : { index: 0, term: 0 };
  const wal = Wal.open(fs, paths.walDir, marker, opts);
  const read = wal.readAll();
  if (read.entries.length > 0) {
    assert(read.entries[0]!.index === marker.index + 1, "the first entry read follows the snapshot");
  }
  const out: RestoredRaftLog = {
    wal,
    snapshotter,
    snapshot,
    metadata: read.metadata,
    hardState: read.hardState,
    entries: read.entries,
    created: false,
  };
  if (read.repair) out.repair = read.repair;
  return out;
}

/** Fills the Raft core's in-memory storage with a restored log (etcd: ApplySnapshot, SetHardState, Append). */
export function loadIntoStorage(target: RaftLogTarget, log: RestoredRaftLog): void {
  if (log.snapshot) target.applySnapshot(log.snapshot);
  target.setHardState(log.hardState);
  target.append(log.entries);
}

/**
 * What the server's ready loop persists through (etcd's etcdserver storage: Save and
 * SaveSnap over the WAL and the snapshotter).
 */
export class RaftDiskStorage {
  constructor(
    readonly wal: Wal,
    readonly snapshotter: Snapshotter,
  ) {}

  static from(log: RestoredRaftLog): RaftDiskStorage {
    return new RaftDiskStorage(log.wal, log.snapshotter);
  }

  /** Appends a Ready's entries and hard state; resolves once durable (one fsync per call at most). */
  save(hardState: HardState, entries: Entry[]): Promise<void> {
    return this.wal.save(hardState, entries);
  }

  /**
   * Persists a snapshot's metadata in etcd's order: the snapshot file first, then the WAL
   * record, then the WAL segments wholly before it are released. A crash between the first
   * two leaves a snapshot file without a WAL record, which start-up ignores
   * (loadNewestAvailable); the other order could leave a WAL record without its file.
   */
  async saveSnap(snapshot: Snapshot): Promise<void> {
    const { index, term } = snapshot.metadata;
    if (index === 0) return;
    this.snapshotter.saveSnap(snapshot);
    await this.wal.saveSnapshot({ index, term });
    this.wal.releaseBefore(index);
  }

  close(): Promise<void> {
    return this.wal.close();
  }
}
