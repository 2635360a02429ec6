// Snapshot metadata files, after etcd's snapshotter (etcdserver/api/snap/snapshotter.go).
//
// A file `<term:016x>-<index:016x>.snap` in the snap directory records that the state
// machine was snapshotted at (index, term) with a given ConfState. The state machine's data
// itself (the registry's bbolt file) is the snapshot body and lives elsewhere; this file
// may carry a small opaque payload besides (etcd keeps the whole v2 store in it).
//
// Layout (little-endian):
//
//   offset  size  field
//        0     4  magic        "RMSN"
//        4     2  version      1
//        6     2  reserved     zero
//        8     4  crc          CRC32C of bytes [12, end)
//       12     4  bodyBytes    length of what follows
//       16     8  term
//       24     8  index
//       32     4  voterCount
//       36     4  learnerCount
//       40   8*n  voters, then learners (u64 each)
//        .     4  dataBytes
//        .     4  reserved     zero
//        .     d  data
//
// etcd writes the file in place and fsyncs it, so a crash can leave a partial file, which a
// later load finds broken. We write a temporary file, fsync, rename, and fsync the
// directory, so a snapshot file is either whole or absent; load still checks the CRC and
// renames a bad file to `.broken` (etcd does the same) so that start-up moves on to the
// next older one and an operator can look at the bad one.

import { join } from "node:path";
import { crc32c } from "@node-rs/crc32";
import type { FileSystem } from "../io/types.js";
import type { Snapshot, SnapshotMetadata } from "../raft/types.js";
import { confStateMembersMax, snapDataBytesMax } from "./constants.js";
import { assert, WalError, WalErrorCode } from "./errors.js";
import { readU64, type SnapshotMarker, writeU64 } from "./record.js";

const MAGIC = 0x4e534d52; // "RMSN" read as a little-endian u32
const VERSION = 1;
const HEADER_BYTES = 16;
const SNAP_NAME = /^([0-9a-f]{16})-([0-9a-f]{16})\.snap$/;

export function snapName(term: number, index: number): string {
  return `${term.toString(16).padStart(16, "0")}-${index.toString(16).padStart(16, "0")}.snap`;
}

export function encodeSnapFile(s: Snapshot): Uint8Array {
  const { metadata, data } = s;
  const { voters, learners } = metadata.confState;
  assert(
    data.length <= snapDataBytesMax,
    () => `snapshot data of ${data.length} bytes exceeds ${snapDataBytesMax}`,
  );
  assert(voters.length + learners.length <= confStateMembersMax, "too many members in the ConfState");
  const bodyBytes = 24 + 8 * (voters.length + learners.length) + 8 + data.length;
  const out = new Uint8Array(HEADER_BYTES + bodyBytes);
  const v = new DataView(out.buffer);
  v.setUint32(0, MAGIC, true);
  v.setUint16(4, VERSION, true);
  v.setUint32(12, bodyBytes, true);
  writeU64(v, 16, metadata.term);
  writeU64(v, 24, metadata.index);
  v.setUint32(32, voters.length, true);
  v.setUint32(36, learners.length, true);
  let off = 40;
  for (const id of [...voters, ...learners]) {
    writeU64(v, off, id);
    off += 8;
  }
  v.setUint32(off, data.length, true);
  off += 8;
  out.set(data, off);
  v.setUint32(8, crc32c(out.subarray(12)) >>> 0, true);
  return out;
}

/** Decodes a snapshot file; returns a reason string when it is broken. */
export function decodeSnapFile(buf: Uint8Array): Snapshot | string {
  if (buf.length === 0) return "empty file"; // etcd ErrEmptySnapshot
  if (buf.length < HEADER_BYTES + 32) return "file too short";
  const v = new DataView(buf.buffer, buf.byteOffset, buf.length);
  if (v.getUint32(0, true) !== MAGIC) return "bad magic";
  if (v.getUint16(4, true) !== VERSION) return `unknown version ${v.getUint16(4, true)}`;
  const bodyBytes = v.getUint32(12, true);
  if (HEADER_BYTES + bodyBytes !== buf.length) return "length does not match the file size";
  if (v.getUint32(8, true) !== crc32c(buf.subarray(12)) >>> 0) return "crc mismatch";
  const term = readU64(v, 16);
  const index = readU64(v, 24);
  const nv = v.getUint32(32, true);
  const nl = v.getUint32(36, true);
  if (term < 0 || index < 0 || nv + nl > confStateMembersMax) return "bad metadata";
  let off = 40;
  if (off + 8 * (nv + nl) + 8 > buf.length) return "bad metadata";
  const ids: number[] = [];
  for (let i = 0; i < nv + nl; i++, off += 8) ids.push(readU64(v, off));
  if (ids.some((id) => id < 0)) return "bad member id";
  const dataBytes = v.getUint32(off, true);
  off += 8;
  if (off + dataBytes !== buf.length) return "bad data length";
  const metadata: SnapshotMetadata = {
    term,
    index,
    confState: { voters: ids.slice(0, nv), learners: ids.slice(nv) },
  };
  return { metadata, data: buf.slice(off) };
}

export class Snapshotter {
  constructor(
    private readonly fs: FileSystem,
    readonly dir: string,
  ) {
    fs.mkdir(dir, { recursive: true });
    // A temporary file is what a crash during saveSnap leaves: never a snapshot.
    for (const name of fs.readdir(dir)) if (name.endsWith(".snap.tmp")) fs.unlink(join(dir, name));
  }

  /**
   * Writes the snapshot's metadata (and its data, which should be small or empty: the
   * bbolt file is the real body) durably. An empty snapshot (index 0) is not saved, as in
   * etcd. Returns the file's path.
   */
  saveSnap(snapshot: Snapshot): string | undefined {
    if (snapshot.metadata.index === 0) return undefined;
    const name = snapName(snapshot.metadata.term, snapshot.metadata.index);
    const path = join(this.dir, name);
    const tmp = `${path}.tmp`;
    const bytes = encodeSnapFile(snapshot);
    if (this.fs.exists(tmp)) this.fs.unlink(tmp);
    const h = this.fs.open(tmp, { create: true, exclusive: true });
    try {
      h.write(bytes, 0);
      h.sync();
    } finally {
      h.close();
    }
    this.fs.rename(tmp, path);
    this.fs.syncDir(this.dir);
    return path;
  }

  /** Snapshot file names, newest first (etcd's snapNames, sorted in reverse). */
  snapNames(): string[] {
    return this.fs
      .readdir(this.dir)
      .filter((n) => SNAP_NAME.test(n))
      .sort()
      .reverse();
  }

  /** The newest valid snapshot, or undefined when there is none. Broken files become `.broken`. */
  loadNewest(): Snapshot | undefined {
    return this.loadMatching(() => true);
  }

  /** Like loadNewest, throwing WAL_ERR_NO_SNAPSHOT instead of returning undefined (etcd's Load). */
  load(): Snapshot {
    const s = this.loadNewest();
    if (!s) throw new WalError(WalErrorCode.NoSnapshot, "no valid snapshot file", { path: this.dir });
    return s;
  }

  /**
   * The newest valid snapshot whose (index, term) is among `markers` (etcd's
   * LoadNewestAvailable with the WAL's valid snapshot entries): a snapshot file written
   * just before a crash, whose WAL record did not make it, is not used.
   */
  loadNewestAvailable(markers: SnapshotMarker[]): Snapshot | undefined {
    const want = new Set(markers.map((m) => `${m.term}/${m.index}`));
    return this.loadMatching((term, index) => want.has(`${term}/${index}`));
  }

  /** Deletes all but the newest `keep` snapshot files (etcd purges old .snap files likewise). */
  purge(keep: number): string[] {
    assert(Number.isInteger(keep) && keep >= 1, "keep at least one snapshot");
    const old = this.snapNames().slice(keep);
    for (const name of old) this.fs.unlink(join(this.dir, name));
    if (old.length > 0) this.fs.syncDir(this.dir);
    return old;
  }

  /** Reads one snapshot file by name; a broken file throws WAL_ERR_SNAP_CORRUPT. */
  read(name: string): Snapshot {
    const path = join(this.dir, name);
    const got = this.readSnap(path);
    if (typeof got === "string") throw new WalError(WalErrorCode.SnapCorrupt, got, { path });
    return got;
  }

  private loadMatching(accept: (term: number, index: number) => boolean): Snapshot | undefined {
    for (const name of this.snapNames()) {
      const m = SNAP_NAME.exec(name)!;
      const term = Number.parseInt(m[1]!, 16);
      const index = Number.parseInt(m[2]!, 16);
      if (!accept(term, index)) continue;
      const path = join(this.dir, name);
      const got = this.readSnap(path);
      if (typeof got !== "string" && got.metadata.term === term && got.metadata.index === index) return got;
      // etcd: "failed to read a snap file" then renames it with the .broken suffix.
      this.fs.rename(path, `${path}.broken`);
      this.fs.syncDir(this.dir);
    }
    return undefined;
  }

  private readSnap(path: string): Snapshot | string {
    const h = this.fs.open(path, { readOnly: true });
    try {
      const size = h.size();
      const buf = new Uint8Array(size);
      if (h.read(buf, 0) !== size) return "short read";
      return decodeSnapFile(buf);
    } finally {
      h.close();
    }
  }
}
