// The Raft write-ahead log: segment files of framed records (record.ts), after etcd's wal
// package (wal/wal.go). The life of a WAL:
//
//   Wal.create(fs, dir, metadata)       first segment 0000000000000000-0000000000000000.wal
//   Wal.open(fs, dir, snapshotMarker)   picks the segments that can hold entries after the
//   wal.readAll()                       snapshot, verifies them, repairs a torn tail, and
//                                       returns metadata, hard state and entries
//   wal.save(hardState, entries)        appends; resolves once durable (when it must be)
//   wal.saveSnapshot(marker)            records that a snapshot at (index, term) exists
//   wal.releaseBefore(index)            deletes segments wholly before a snapshot
//   wal.close()
//
// Writes are synchronous calls into the OS page cache; only the fsync is awaited (see
// io/types.ts). Several save() calls made while an fsync is in flight share the next one
// (group commit): the server's ready loop gets one fsync per Ready, and concurrent callers
// get fewer. An fsync error poisons the WAL: after a failed fsync the kernel may have
// dropped the dirty pages, so retrying could report success for lost data (the
// "fsyncgate" lesson, which is also why etcd treats a failed WAL sync as fatal).

import { join } from "node:path";
import type { FileHandle, FileSystem } from "../io/types.js";
import type { Entry, HardState } from "../raft/types.js";
import {
  segmentOffsetBytesMax,
  segmentSizeBytesDefault,
  segmentSizeBytesMax,
  segmentSizeBytesMin,
} from "./constants.js";
import { assert, WalError, WalErrorCode } from "./errors.js";
import {
  decodeCrcRecord,
  decodeSnapshotMarker,
  decodeState,
  encodeCrcRecord,
  encodeEntry,
  encodeFrame,
  encodeSnapshotMarker,
  encodeState,
  frameBytes,
  parseSegmentName,
  probeFrame,
  RecordType,
  type SnapshotMarker,
  segmentName,
} from "./record.js";
import { bytesEqual, LogReplay } from "./replay.js";
import { type SegmentScan, scanSegment, segmentHeaderFrames, segmentHeaderTypes } from "./segment.js";

export type WalOptions = {
  /** Size a segment is preallocated to; the log is cut to a new segment after a save crosses it. */
  segmentSizeBytes?: number;
  /**
   * Decode every batch again before writing it (default: REGMESH_WAL_VERIFY=1), as bbolt's
   * strict mode checks each commit: slower, for tests and suspected bugs.
   */
  verify?: boolean;
};

/** What readAll found: a torn tail it cut off. */
export type TailRepair = { path: string; offsetBytes: number; droppedBytes: number; reason: string };

export type ReadAllResult = {
  metadata: Uint8Array;
  hardState: HardState;
  /** Entries after the snapshot marker the WAL was opened at, conflicts resolved. */
  entries: Entry[];
  /** Set when the last segment had a torn tail, which was truncated. */
  repair?: TailRepair;
};

type SegmentFile = { seq: number; firstIndex: number; name: string };

/** The segment being appended to. */
type Tail = {
  seq: number;
  firstIndex: number;
  path: string;
  handle: FileHandle;
  /** Where the next frame goes. */
  endBytes: number;
  /** Every byte before this offset is known fsynced. */
  durableBytes: number;
  /** CRC of the last frame written (carried into the next segment's crc record). */
  lastCrc: number;
  /** The fsync in flight, if any (group commit). */
  syncing: Promise<void> | undefined;
};

type Phase = "unread" | "ready" | "closed" | "failed";

const emptyState = (): HardState => ({ term: 0, vote: 0, commit: 0 });
const isEmptyState = (hs: HardState): boolean => hs.term === 0 && hs.vote === 0 && hs.commit === 0;

/** Segment files of `dir`, sorted by sequence number. */
export function listSegments(fs: FileSystem, dir: string): SegmentFile[] {
  const out: SegmentFile[] = [];
  for (const name of fs.readdir(dir)) {
    const parsed = parseSegmentName(name);
    if (parsed) out.push({ ...parsed, name });
  }
  return out.sort((a, b) => a.seq - b.seq);
}

/**
 * The last segment whose first index is <= `index`: the one that may hold the entry after
 * `index` (etcd's searchIndex). Entries before a segment's first index may still appear
 * in it when a new leader overwrote a suffix, but those are never at or below a snapshot,
 * which only covers committed entries.
 */
function searchIndex(segments: SegmentFile[], index: number): number {
  for (let i = segments.length - 1; i >= 0; i--) {
    if (segments[i]!.firstIndex <= index) return i;
  }
  return -1;
}

function checkSequence(dir: string, segments: SegmentFile[]): void {
  for (let i = 1; i < segments.length; i++) {
    if (segments[i]!.seq !== segments[i - 1]!.seq + 1) {
      throw new WalError(
        WalErrorCode.Sequence,
        `segment ${segments[i]!.name} does not follow ${segments[i - 1]!.name}`,
        { path: dir },
      );
    }
  }
}

/** Removes segment files left half-made by a crash during create or cut. */
function removeTemporaries(fs: FileSystem, dir: string): void {
  let removed = false;
  for (const name of fs.readdir(dir)) {
    if (name.endsWith(".wal.tmp")) {
      fs.unlink(join(dir, name));
      removed = true;
    }
  }
  if (removed) fs.syncDir(dir);
}

function readWhole(handle: FileHandle): Uint8Array {
  const size = handle.size();
  const buf = new Uint8Array(size);
  const n = handle.read(buf, 0);
  assert(n === size, () => `short read of ${handle.path}: ${n} of ${size} bytes`);
  return buf;
}

function checkSegmentSize(n: number | undefined): number {
  const size = n ?? segmentSizeBytesDefault;
  if (!Number.isSafeInteger(size) || size < segmentSizeBytesMin || size > segmentSizeBytesMax) {
    throw new RangeError(
      `segmentSizeBytes must be in [${segmentSizeBytesMin}, ${segmentSizeBytesMax}]: ${n}`,
    );
  }
  return size;
}

export class Wal {
  private phase: Phase;
  private failure: unknown;
  private tail: Tail | undefined;
  private metadata: Uint8Array = new Uint8Array(0);
  private state: HardState = emptyState();
  /** Index of the last entry written (or the snapshot's, when a snapshot is ahead): etcd's enti. */
  private lastIndex = 0;
  /** Segments readAll will read (set by open). */
  private toRead: SegmentFile[] = [];
  private start: SnapshotMarker = { index: 0, term: 0 };

  private readonly verify: boolean;

  private constructor(
    private readonly fs: FileSystem,
    readonly dir: string,
    readonly segmentSizeBytes: number,
    phase: Phase,
    opts: WalOptions,
  ) {
    this.phase = phase;
    this.verify = opts.verify ?? process.env.REGMESH_WAL_VERIFY === "1";
  }

  /**
   * Creates a WAL in `dir` (made if missing) with one segment holding `metadata`, ready to
   * append. As etcd's Create, the first segment is fully written and fsynced under a
   * temporary name, then renamed, and the directory is fsynced: a crash leaves either no
   * WAL or a whole one. (etcd builds a whole temporary directory and renames it; our
   * FileSystem has no rmdir and the in-memory one does not rename directories, so the
   * atomic step is the file's rename instead.)
   */
  static create(fs: FileSystem, dir: string, metadata: Uint8Array, opts: WalOptions = {}): Wal {
    const segmentSizeBytes = checkSegmentSize(opts.segmentSizeBytes);
    fs.mkdir(dir, { recursive: true });
    if (listSegments(fs, dir).length > 0) {
      throw new WalError(WalErrorCode.Exists, "the directory already holds a WAL", { path: dir });
    }
    removeTemporaries(fs, dir);
    const wal = new Wal(fs, dir, segmentSizeBytes, "ready", opts);
    wal.metadata = metadata.slice();
    wal.tail = wal.createSegment(0, 0, 0);
    const parent = join(dir, "..");
    if (parent !== dir) fs.syncDir(parent);
    return wal;
  }

  /** Whether `dir` holds WAL segments. */
  static exists(fs: FileSystem, dir: string): boolean {
    return fs.exists(dir) && listSegments(fs, dir).length > 0;
  }

  /**
   * Opens the WAL at a snapshot: entries at or before `snap.index` will be skipped, and a
   * snapshot record matching `snap` must be found (unless `snap` is the zero marker, the
   * start of the log). Call readAll() next, before appending (etcd's Open + ReadAll).
   */
  static open(fs: FileSystem, dir: string, snap: SnapshotMarker, opts: WalOptions = {}): Wal {
    const segmentSizeBytes = checkSegmentSize(opts.segmentSizeBytes);
    assert(Number.isSafeInteger(snap.index) && snap.index >= 0, "snapshot index is a non-negative integer");
    assert(snap.index > 0 || snap.term === 0, "the zero snapshot marker has term 0");
    if (!fs.exists(dir)) throw new WalError(WalErrorCode.FileNotFound, "no WAL directory", { path: dir });
    removeTemporaries(fs, dir);
    const segments = listSegments(fs, dir);
    if (segments.length === 0)
      throw new WalError(WalErrorCode.FileNotFound, "no WAL segments", { path: dir });
    const i = searchIndex(segments, snap.index);
    if (i < 0) {
      throw new WalError(
        WalErrorCode.FileNotFound,
        `no segment covers the entries after index ${snap.index}`,
        {
          path: dir,
        },
      );
    }
    const toRead = segments.slice(i);
    checkSequence(dir, toRead);
    const wal = new Wal(fs, dir, segmentSizeBytes, "unread", opts);
    wal.toRead = toRead;
    wal.start = { ...snap };
    return wal;
  }

  /**
   * Reads every record after the snapshot, verifies it, and makes the WAL appendable.
   * Entries are resolved as etcd's ReadAll does: an entry at index i replaces the entry at i
   * and everything after it (a new leader overwrote this node's uncommitted suffix).
   */
  readAll(): ReadAllResult {
    if (this.phase !== "unread") throw new WalError(WalErrorCode.State, `readAll in phase ${this.phase}`);
    const replay = new LogReplay(this.start);
    let prevCrc: number | undefined;
    let repair: TailRepair | undefined;
    for (let k = 0; k < this.toRead.length; k++) {
      const seg = this.toRead[k]!;
      const path = join(this.dir, seg.name);
      const isLast = k === this.toRead.length - 1;
      const handle = this.fs.open(path, { readOnly: !isLast });
      let keepHandle = false;
      try {
        const buf = readWhole(handle);
        const scan = scanSegment(buf, path, isLast);
        this.checkHeader(scan, seg, path, prevCrc);
        for (const frame of scan.frames) replay.apply(frame, path);
        prevCrc = scan.frames[scan.frames.length - 1]!.crc;
        if (isLast) {
          repair = this.adoptTail(seg, path, handle, scan, buf.length);
          keepHandle = true;
        }
      } finally {
        if (!keepHandle) handle.close();
      }
    }
    if (!replay.matched) {
      this.tail?.handle.close();
      this.tail = undefined;
      throw new WalError(
        WalErrorCode.SnapshotNotFound,
        `no snapshot record for index ${this.start.index} term ${this.start.term}`,
        { path: this.dir },
      );
    }
    const { metadata, state, entries } = replay;
    assert(metadata !== undefined, "every segment header holds metadata");
    this.metadata = metadata;
    this.state = state;
    // etcd keeps enti = index of the last entry record read; the next entry must follow it.
    this.lastIndex = Math.max(this.start.index, replay.lastEntryIndex);
    if (entries.length > 0)
      assert(this.lastIndex === entries[entries.length - 1]!.index, "last entry read is last");
    this.phase = "ready";
    this.toRead = [];
    const result: ReadAllResult = { metadata: metadata.slice(), hardState: { ...state }, entries };
    if (repair) result.repair = repair;
    return result;
  }

  private checkHeader(scan: SegmentScan, seg: SegmentFile, path: string, prevCrc: number | undefined): void {
    for (let i = 0; i < segmentHeaderFrames; i++) {
      const f = scan.frames[i]!;
      if (f.type !== segmentHeaderTypes[i]) {
        throw new WalError(WalErrorCode.Corrupt, `segment header frame ${i} has type ${f.type}`, {
          path,
          offsetBytes: f.offsetBytes,
        });
      }
    }
    const crc = decodeCrcRecord(scan.frames[0]!.payload);
    const where = { path, offsetBytes: 0 };
    if (!crc) throw new WalError(WalErrorCode.Corrupt, "malformed crc record", where);
    if (crc.seq !== seg.seq || crc.firstIndex !== seg.firstIndex) {
      throw new WalError(
        WalErrorCode.Corrupt,
        `crc record names segment ${segmentName(crc.seq, crc.firstIndex)}, not the file it is in`,
        where,
      );
    }
    // Like etcd's crc record: the chain across segments must hold where both are present.
    if (prevCrc !== undefined && crc.prevCrc !== prevCrc) {
      throw new WalError(
        WalErrorCode.CrcMismatch,
        `crc record carries ${crc.prevCrc}, the previous segment ends with ${prevCrc}`,
        where,
      );
    }
  }

  /** Makes the last segment the append target, cutting a torn tail first. */
  private adoptTail(
    seg: SegmentFile,
    path: string,
    handle: FileHandle,
    scan: SegmentScan,
    sizeBytes: number,
  ): TailRepair | undefined {
    let repair: TailRepair | undefined;
    if (scan.torn) {
      // etcd's Repair truncates at the last valid record and ReadAll zeroes the rest
      // (fileutil.ZeroToEnd) so debris of the torn write cannot be mistaken for records
      // later. Truncating and extending again does both; the fsync makes it durable before
      // anything new is appended, so a later crash never sees this debris again.
      handle.truncate(scan.endBytes);
      handle.truncate(Math.max(scan.endBytes, this.segmentSizeBytes));
      repair = {
        path,
        offsetBytes: scan.endBytes,
        droppedBytes: sizeBytes - scan.endBytes,
        reason: scan.torn.reason,
      };
    } else if (sizeBytes < this.segmentSizeBytes) {
      // A crash during a cut can leave the last segment trimmed to its data: preallocate again.
      handle.truncate(this.segmentSizeBytes);
    }
    // After an unclean stop, what we just read may still be only in the page cache.
    handle.sync();
    this.tail = {
      seq: seg.seq,
      firstIndex: seg.firstIndex,
      path,
      handle,
      endBytes: scan.endBytes,
      durableBytes: scan.endBytes,
      lastCrc: scan.frames[scan.frames.length - 1]!.crc,
      syncing: undefined,
    };
    return repair;
  }

  /** The hard state last saved (or read). */
  hardState(): HardState {
    return { ...this.state };
  }

  /** Index of the last entry saved, or of the last snapshot when that is ahead. */
  lastEntryIndex(): number {
    return this.lastIndex;
  }

  /**
   * Appends `entries` and then `hardState` (if not empty), as etcd's WAL.Save, and
   * resolves when they are durable. It fsyncs only when Raft requires it (etcd raft's
   * MustSync: entries were appended, or term or vote changed); a change of commit alone
   * may be lost in a crash because it is recomputed from the log. When the segment is
   * full after the append, the log is cut to a new segment (which includes an fsync).
   */
  async save(hardState: HardState, entries: Entry[]): Promise<void> {
    const tail = this.writable();
    if (isEmptyState(hardState) && entries.length === 0) return;
    const mustSync =
      entries.length > 0 || hardState.term !== this.state.term || hardState.vote !== this.state.vote;
    this.checkSave(hardState, entries);

    const records: { type: RecordType; payload: Uint8Array }[] = [];
    for (const e of entries) records.push({ type: RecordType.Entry, payload: encodeEntry(e) });
    if (!isEmptyState(hardState)) records.push({ type: RecordType.State, payload: encodeState(hardState) });
    this.guard(() => this.writeRecords(tail, records));
    if (entries.length > 0) this.lastIndex = entries[entries.length - 1]!.index;
    if (!isEmptyState(hardState)) this.state = { ...hardState };

    if (tail.endBytes >= this.segmentSizeBytes) {
      this.guard(() => this.cut());
      return;
    }
    if (mustSync) await this.syncTail(tail, tail.endBytes);
  }

  /**
   * Records that a snapshot at `marker` exists, and fsyncs (etcd's SaveSnapshot). Write the
   * snapshot file first (Snapshotter.saveSnap), then this record: then every marker in the
   * WAL has its file, and start-up picks the newest file whose marker it finds.
   */
  async saveSnapshot(marker: SnapshotMarker): Promise<void> {
    const tail = this.writable();
    assert(
      Number.isSafeInteger(marker.index) && marker.index >= 0,
      "snapshot index is a non-negative integer",
    );
    // No check of marker.term against the hard state: etcd's server saves a snapshot
    // received from the leader before the hard state of the same Ready.
    this.guard(() =>
      this.writeRecords(tail, [{ type: RecordType.Snapshot, payload: encodeSnapshotMarker(marker) }]),
    );
    // Like etcd: only move the expected next index when the snapshot is ahead of the log.
    if (marker.index > this.lastIndex) this.lastIndex = marker.index;
    await this.syncTail(tail, tail.endBytes);
  }

  /** Resolves when everything written so far is durable. */
  async sync(): Promise<void> {
    const tail = this.writable();
    await this.syncTail(tail, tail.endBytes);
  }

  /**
   * Deletes the segments that hold only entries at or before `index` (a snapshot index):
   * every segment before the last one whose first index is <= `index`, which is kept
   * because it may hold entries after `index` (etcd's ReleaseLockTo keeps "the largest one
   * among them" for the same reason; etcd then purges unlocked files in the background).
   * Oldest first, so a crash midway leaves a contiguous run. Returns the names deleted.
   */
  releaseBefore(index: number): string[] {
    this.writable();
    const segments = listSegments(this.fs, this.dir);
    const keepFrom = searchIndex(segments, index);
    const deleted: string[] = [];
    for (let i = 0; i < keepFrom; i++) {
      const seg = segments[i]!;
      assert(seg.seq < this.tail!.seq, "the tail segment is never released");
      this.fs.unlink(join(this.dir, seg.name));
      deleted.push(seg.name);
    }
    if (deleted.length > 0) this.fs.syncDir(this.dir);
    return deleted;
  }

  /** etcd's name for releaseBefore (there are no file locks here to release). */
  releaseLockTo(index: number): string[] {
    return this.releaseBefore(index);
  }

  /**
   * Flushes and closes. A last state frame carries the final fsync watermark, so damage to
   * the last batch is seen as corruption rather than mistaken for a torn write (segment.ts).
   */
  async close(): Promise<void> {
    if (this.phase === "closed") return;
    const tail = this.tail;
    if (this.phase === "ready" && tail) {
      await this.syncTail(tail, tail.endBytes);
      this.guard(() => {
        this.writeRecords(tail, [{ type: RecordType.State, payload: encodeState(this.state) }]);
        tail.handle.sync();
      });
      tail.durableBytes = tail.endBytes;
    }
    if (tail) {
      if (tail.syncing) await tail.syncing.catch(() => {});
      tail.handle.close();
    }
    this.tail = undefined;
    this.phase = "closed";
  }

  // --- internals ---

  private writable(): Tail {
    if (this.phase === "failed") {
      throw new WalError(WalErrorCode.Failed, `an earlier write or fsync failed: ${String(this.failure)}`, {
        path: this.dir,
      });
    }
    if (this.phase !== "ready") throw new WalError(WalErrorCode.State, `cannot write in phase ${this.phase}`);
    return this.tail!;
  }

  /** Runs an I/O step; an error poisons the WAL (see the top of this file). */
  private guard<T>(step: () => T): T {
    try {
      return step();
    } catch (err) {
      this.fail(err);
      throw err;
    }
  }

  private fail(err: unknown): void {
    if (this.phase === "failed") return;
    this.phase = "failed";
    this.failure = err;
  }

  /** Invariants of what Raft hands us (etcd raft guarantees them; a violation is a bug upstream). */
  private checkSave(hs: HardState, entries: Entry[]): void {
    if (!isEmptyState(hs)) {
      assert(
        hs.term >= this.state.term,
        () => `hard state term went back from ${this.state.term} to ${hs.term}`,
      );
      assert(
        hs.term > this.state.term || this.state.vote === 0 || hs.vote === this.state.vote,
        () => `vote changed from ${this.state.vote} to ${hs.vote} within term ${hs.term}`,
      );
      assert(
        hs.commit >= this.state.commit,
        () => `commit went back from ${this.state.commit} to ${hs.commit}`,
      );
    }
    if (entries.length === 0) return;
    const termMax = Math.max(hs.term, this.state.term);
    const first = entries[0]!;
    assert(
      first.index >= 1 && first.index <= this.lastIndex + 1,
      () => `entry ${first.index} would leave a gap after ${this.lastIndex}`,
    );
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      assert(e.index === first.index + i, () => `entries are not contiguous at ${e.index}`);
      assert(
        i === 0 || e.term >= entries[i - 1]!.term,
        () => `entry ${e.index} has a lower term than its predecessor`,
      );
      assert(
        e.term <= termMax,
        () => `entry ${e.index} has term ${e.term} beyond the current term ${termMax}`,
      );
    }
  }

  /** Encodes the records into one buffer and writes it with one call. */
  private writeRecords(tail: Tail, records: { type: RecordType; payload: Uint8Array }[]): void {
    let total = 0;
    for (const r of records) total += frameBytes(r.payload.length);
    assert(
      tail.endBytes + total <= segmentOffsetBytesMax,
      () => `a batch of ${total} bytes would take the segment past ${segmentOffsetBytesMax} bytes`,
    );
    const buf = new Uint8Array(total);
    let off = 0;
    let crc = tail.lastCrc;
    for (const r of records) {
      crc = encodeFrame(buf, off, r.type, r.payload, tail.durableBytes);
      off += frameBytes(r.payload.length);
    }
    if (this.verify) verifyBatch(buf, records);
    tail.handle.write(buf, tail.endBytes);
    tail.endBytes += total;
    tail.lastCrc = crc;
  }

  /**
   * Group commit: resolves once `target` bytes of `tail` are durable. If an fsync is in
   * flight, wait for it and look again; otherwise start one covering everything written so
   * far, which every caller waiting meanwhile shares.
   */
  private syncTail(tail: Tail, target: number): Promise<void> {
    if (tail.durableBytes >= target) return Promise.resolve();
    if (this.phase === "failed") return Promise.reject(this.writableError());
    if (tail.syncing) return tail.syncing.then(() => this.syncTail(tail, target));
    // Start the fsync one microtask later, so that every save() issued in the same turn of
    // the event loop has written its records first and rides on this one fsync.
    let upTo = 0;
    const syncing = Promise.resolve()
      .then(() => {
        upTo = tail.endBytes;
        return tail.handle.datasyncAsync();
      })
      .then(
        () => {
          tail.syncing = undefined;
          tail.durableBytes = Math.max(tail.durableBytes, upTo);
        },
        (err: unknown) => {
          tail.syncing = undefined;
          this.fail(err);
          throw err;
        },
      );
    tail.syncing = syncing;
    return syncing.then(() => this.syncTail(tail, target));
  }

  private writableError(): WalError {
    return new WalError(WalErrorCode.Failed, `an earlier write or fsync failed: ${String(this.failure)}`, {
      path: this.dir,
    });
  }

  /**
   * Starts the next segment (etcd's cut): the full segment is trimmed to its data and
   * fsynced, then the next one is created whole under a temporary name, fsynced, renamed,
   * and the directory fsynced. Synchronous: it happens once per segment, and no save may
   * interleave with it.
   */
  private cut(): void {
    const old = this.tail!;
    old.handle.truncate(old.endBytes);
    old.handle.sync();
    old.durableBytes = old.endBytes;
    // An fsync of the old file may still be in flight on the threadpool: close after it.
    const handle = old.handle;
    if (old.syncing)
      old.syncing.then(
        () => handle.close(),
        () => handle.close(),
      );
    else handle.close();
    this.tail = this.createSegment(old.seq + 1, this.lastIndex + 1, old.lastCrc);
  }

  private createSegment(seq: number, firstIndex: number, prevCrc: number): Tail {
    const path = join(this.dir, segmentName(seq, firstIndex));
    const tmp = `${path}.tmp`;
    if (this.fs.exists(tmp)) this.fs.unlink(tmp);
    const handle = this.fs.open(tmp, { create: true, exclusive: true });
    // Preallocate, as etcd's file pipeline does: appends within the size leave the file
    // size alone, so fdatasync need not update it. FileSystem has no fallocate, so this is a
    // sparse extension: blocks are still allocated on first write. (Filling the segment
    // with zeros instead measured no faster on our test disk, at 64 MiB of writes a cut.)
    handle.truncate(this.segmentSizeBytes);
    const tail: Tail = {
      seq,
      firstIndex,
      path,
      handle,
      endBytes: 0,
      durableBytes: 0,
      lastCrc: 0,
      syncing: undefined,
    };
    this.writeRecords(tail, [
      { type: RecordType.Crc, payload: encodeCrcRecord({ prevCrc, seq, firstIndex }) },
      { type: RecordType.Metadata, payload: this.metadata },
      { type: RecordType.State, payload: encodeState(this.state) },
    ]);
    handle.sync();
    tail.durableBytes = tail.endBytes;
    this.fs.rename(tmp, path);
    this.fs.syncDir(this.dir);
    return tail;
  }

  /**
   * Snapshot markers in the WAL at `dir` whose index is committed by the hard state saved
   * after them (etcd's ValidSnapshotEntries): the snapshots start-up may restore from.
   * Reads without repairing; a torn tail is ignored.
   */
  static validSnapshotMarkers(fs: FileSystem, dir: string): SnapshotMarker[] {
    const segments = listSegments(fs, dir);
    checkSequence(dir, segments);
    const markers: SnapshotMarker[] = [{ index: 0, term: 0 }];
    let state = emptyState();
    for (let k = 0; k < segments.length; k++) {
      const path = join(dir, segments[k]!.name);
      const handle = fs.open(path, { readOnly: true });
      let buf: Uint8Array;
      try {
        buf = readWhole(handle);
      } finally {
        handle.close();
      }
      const scan = scanSegment(buf, path, k === segments.length - 1);
      for (const frame of scan.frames) {
        if (frame.type === RecordType.Snapshot) {
          const m = decodeSnapshotMarker(frame.payload);
          if (m) markers.push(m);
        } else if (frame.type === RecordType.State) {
          state = decodeState(frame.payload) ?? state;
        }
      }
    }
    return markers.filter((m) => m.index <= state.commit);
  }
}

/** Strict mode: the encoded batch must decode to the records it was made from. */
function verifyBatch(buf: Uint8Array, records: { type: RecordType; payload: Uint8Array }[]): void {
  let off = 0;
  for (const r of records) {
    const p = probeFrame(buf, off);
    assert(p.kind === "frame", () => `encoded frame at ${off} does not decode`);
    assert(p.frame.type === r.type && bytesEqual(p.frame.payload, r.payload), "encoded frame round-trips");
    off = p.frame.endBytes;
  }
  assert(off === buf.length, "the batch is exactly its frames");
}
