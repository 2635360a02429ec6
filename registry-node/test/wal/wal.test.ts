import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FaultFileSystem, MemFileSystem, SimulatedCrashError } from "../../src/io/index.js";
import type { Entry } from "../../src/raft/types.js";
import { frameHeaderBytes } from "../../src/wal/constants.js";
import { WalError, WalErrorCode } from "../../src/wal/errors.js";
import {
  encodeCrcRecord,
  encodeEntry,
  encodeFrame,
  encodeState,
  frameBytes,
  probeFrame,
  RecordType,
  segmentName,
} from "../../src/wal/record.js";
import { listSegments, Wal } from "../../src/wal/wal.js";
import {
  CountingFs,
  type Disk,
  ent,
  ents,
  hs,
  indexOfBytes,
  memDisk,
  nodeDisk,
  patchFile,
  readFile,
  text,
} from "./helpers.js";

const meta = text('{"nodeId":1,"clusterId":7}');
const seg = { segmentSizeBytes: 1024 };

function expectWalError(fn: () => unknown, code: string): WalError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(WalError);
    expect((err as WalError).code).toBe(code);
    return err as WalError;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
}

/** Saves entries 1..n of term 1 in batches of `batch`, committing as it goes. */
async function fill(wal: Wal, n: number, batch: number, term = 1): Promise<Entry[]> {
  const all: Entry[] = [];
  await wal.save(hs(term, 1, 0), []);
  for (let i = 1; i <= n; i += batch) {
    const b = ents(i, Math.min(n, i + batch - 1), term);
    await wal.save(hs(term, 1, Math.max(0, i - 1)), b);
    all.push(...b);
  }
  return all;
}

for (const [name, makeDisk] of [
  ["mem", memDisk],
  ["node", nodeDisk],
] as [string, () => Disk][]) {
  describe(`Wal round trip (${name} file system)`, () => {
    it("returns exactly what was saved, across several segments", async () => {
      const d = makeDisk();
      try {
        const wal = Wal.create(d.fs, d.dir, meta, seg);
        const saved = await fill(wal, 120, 7);
        await wal.save(hs(1, 1, 120), []);
        await wal.close();
        expect(listSegments(d.fs, d.dir).length).toBeGreaterThan(3);

        const back = Wal.open(d.fs, d.dir, { index: 0, term: 0 }, seg);
        const r = back.readAll();
        expect(r.repair).toBeUndefined();
        expect(r.metadata).toEqual(meta);
        expect(r.hardState).toEqual(hs(1, 1, 120));
        expect(r.entries).toEqual(saved);
        // Appending continues where the log ended, and survives another reopen.
        await back.save(hs(2, 3, 120), ents(121, 130, 2));
        await back.close();
        const again = Wal.open(d.fs, d.dir, { index: 0, term: 0 }, seg).readAll();
        expect(again.entries).toEqual([...saved, ...ents(121, 130, 2)]);
        expect(again.hardState).toEqual(hs(2, 3, 120));
      } finally {
        d.done();
      }
    });

    it("resolves a new leader's overwrite of the uncommitted suffix as etcd's ReadAll does", async () => {
      const d = makeDisk();
      try {
        const wal = Wal.create(d.fs, d.dir, meta, seg);
        await wal.save(hs(1, 1, 3), ents(1, 30, 1));
        // A new leader of term 2 replaces entries 11.. with its own, in a later segment.
        await wal.save(hs(2, 2, 10), ents(11, 14, 2));
        // And a leader of term 3 replaces 13.. once more.
        await wal.save(hs(3, 3, 12), ents(13, 20, 3));
        await wal.close();
        const r = Wal.open(d.fs, d.dir, { index: 0, term: 0 }, seg).readAll();
        expect(r.entries).toEqual([...ents(1, 10, 1), ...ents(11, 12, 2), ...ents(13, 20, 3)]);
        expect(r.hardState).toEqual(hs(3, 3, 12));
      } finally {
        d.done();
      }
    });
  });
}

describe("Wal segments and preallocation", () => {
  it("names segments <seq>-<firstIndex>.wal and preallocates them; zeros there are not corruption", async () => {
    const d = memDisk();
    const wal = Wal.create(d.fs, d.dir, meta, seg);
    await fill(wal, 40, 5);
    const segs = listSegments(d.fs, d.dir);
    expect(segs[0]!.name).toBe("0000000000000000-0000000000000000.wal");
    for (let i = 1; i < segs.length; i++) {
      expect(segs[i]!.seq).toBe(i);
      expect(segs[i]!.firstIndex).toBeGreaterThan(segs[i - 1]!.firstIndex);
    }
    const last = join(d.dir, segs[segs.length - 1]!.name);
    expect(readFile(d.fs, last).length).toBe(seg.segmentSizeBytes);
    // Crash without close: the preallocated zeros follow the last record.
    const r = Wal.open(d.fs, d.dir, { index: 0, term: 0 }, seg).readAll();
    expect(r.repair).toBeUndefined();
    expect(r.entries.length).toBe(40);
  });

  it("refuses to create over an existing WAL, and to open an empty directory", () => {
    const d = memDisk();
    Wal.create(d.fs, d.dir, meta, seg);
    expectWalError(() => Wal.create(d.fs, d.dir, meta, seg), WalErrorCode.Exists);
    d.fs.mkdir("/data/empty");
    expectWalError(() => Wal.open(d.fs, "/data/empty", { index: 0, term: 0 }), WalErrorCode.FileNotFound);
  });

  it("does one fsync per save with entries, none for a commit-only hard state, and shares one among concurrent saves", async () => {
    const d = memDisk();
    const fs = new CountingFs(d.fs);
    const wal = Wal.create(fs, d.dir, meta, { segmentSizeBytes: 1024 * 1024 });
    fs.syncs = 0;
    await wal.save(hs(1, 1, 0), ents(1, 64, 1));
    expect(fs.syncs).toBe(1);
    await wal.save(hs(1, 1, 64), []); // commit only: etcd raft's MustSync is false
    expect(fs.syncs).toBe(1);
    await wal.save(hs(2, 0, 64), []); // term changed: must sync
    expect(fs.syncs).toBe(2);
    const pending: Promise<void>[] = [];
    for (let i = 65; i < 75; i++) pending.push(wal.save(hs(2, 0, 64), [ent(i, 2)]));
    await Promise.all(pending);
    expect(fs.syncs).toBe(3); // ten saves issued in one turn share a single fsync
    await wal.close();
    expect(Wal.open(d.fs, d.dir, { index: 0, term: 0 }).readAll().entries.length).toBe(74);
  });

  it("asserts index continuity and term monotonicity of what Raft hands it", async () => {
    const d = memDisk();
    const wal = Wal.create(d.fs, d.dir, meta, seg);
    await wal.save(hs(2, 1, 0), ents(1, 5, 2));
    await expect(wal.save(hs(2, 1, 0), [ent(7, 2)])).rejects.toMatchObject({ code: WalErrorCode.Assertion });
    await expect(wal.save(hs(2, 1, 0), [ent(6, 2), ent(8, 2)])).rejects.toMatchObject({
      code: "WAL_ERR_ASSERTION",
    });
    await expect(wal.save(hs(2, 1, 0), [ent(6, 2), ent(7, 1)])).rejects.toMatchObject({
      code: "WAL_ERR_ASSERTION",
    });
    await expect(wal.save(hs(1, 1, 0), [])).rejects.toMatchObject({ code: "WAL_ERR_ASSERTION" });
    await expect(wal.save(hs(2, 1, 0), [ent(6, 3)])).rejects.toMatchObject({ code: "WAL_ERR_ASSERTION" });
    // An assertion does not poison the WAL: nothing was written.
    await wal.save(hs(2, 1, 0), [ent(6, 2)]);
    await wal.close();
    expect(
      Wal.open(d.fs, d.dir, { index: 0, term: 0 })
        .readAll()
        .entries.map((e) => e.index),
    ).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it("refuses a missing segment in the middle", async () => {
    const d = memDisk();
    const wal = Wal.create(d.fs, d.dir, meta, seg);
    await fill(wal, 60, 5);
    await wal.close();
    const segs = listSegments(d.fs, d.dir);
    d.fs.unlink(join(d.dir, segs[1]!.name));
    expectWalError(() => Wal.open(d.fs, d.dir, { index: 0, term: 0 }, seg), WalErrorCode.Sequence);
  });
});

describe("Wal torn tails and corruption", () => {
  it("cuts a torn last record in the last segment, and the repair is durable", async () => {
    const d = memDisk();
    const wal = Wal.create(d.fs, d.dir, meta, seg);
    await wal.save(hs(1, 1, 0), ents(1, 3, 1));
    const segs = listSegments(d.fs, d.dir);
    const path = join(d.dir, segs[segs.length - 1]!.name);
    await wal.close();
    const endAfterClose = findEnd(readFile(d.fs, path));
    // A record whose header landed and whose payload did not: CRC wrong, zeros after.
    const torn = new Uint8Array(frameBytes(100));
    encodeFrame(torn, 0, RecordType.Entry, new Uint8Array(100).fill(9), endAfterClose);
    torn.fill(0, frameHeaderBytes + 40);
    patchFile(d.fs, path, endAfterClose, torn);
    const r = Wal.open(d.fs, d.dir, { index: 0, term: 0 }, seg).readAll();
    expect(r.repair).toMatchObject({ path, offsetBytes: endAfterClose });
    expect(r.entries).toEqual(ents(1, 3, 1));
    const again = Wal.open(d.fs, d.dir, { index: 0, term: 0 }, seg).readAll();
    expect(again.repair).toBeUndefined();
    expect(again.entries).toEqual(ents(1, 3, 1));
  });

  it("refuses a flipped byte in the middle of the last segment, naming the file and offset", async () => {
    const d = memDisk();
    const wal = Wal.create(d.fs, d.dir, meta, { segmentSizeBytes: 64 * 1024 });
    await fill(wal, 30, 1);
    await wal.close();
    const segs = listSegments(d.fs, d.dir);
    expect(segs.length).toBe(1);
    const path = join(d.dir, segs[0]!.name);
    const at = indexOfBytes(readFile(d.fs, path), text("e5t1:"));
    expect(at).toBeGreaterThan(0);
    patchFile(d.fs, path, at + 3, text("X"));
    const err = expectWalError(
      () => Wal.open(d.fs, d.dir, { index: 0, term: 0 }).readAll(),
      "WAL_ERR_CRC_MISMATCH",
    );
    expect(err.path).toBe(path);
    expect(err.offsetBytes).toBeLessThan(at);
    expect(err.offsetBytes).toBeGreaterThan(at - 64);
    expect(err.message).toContain(path);
    expect(err.message).toContain(`at offset ${err.offsetBytes}`);
  });

  it("refuses damage to the last batch once close() has recorded the final fsync watermark", async () => {
    const d = memDisk();
    const wal = Wal.create(d.fs, d.dir, meta, { segmentSizeBytes: 64 * 1024 });
    await fill(wal, 10, 10);
    await wal.close();
    const path = join(d.dir, listSegments(d.fs, d.dir)[0]!.name);
    patchFile(d.fs, path, indexOfBytes(readFile(d.fs, path), text("e10t1:")), text("Z"));
    expectWalError(() => Wal.open(d.fs, d.dir, { index: 0, term: 0 }).readAll(), WalErrorCode.CrcMismatch);
  });

  it("refuses corruption in a segment that is not the last", async () => {
    const d = memDisk();
    const wal = Wal.create(d.fs, d.dir, meta, seg);
    await fill(wal, 60, 3);
    const segs = listSegments(d.fs, d.dir);
    expect(segs.length).toBeGreaterThan(2);
    const path = join(d.dir, segs[0]!.name);
    // The last entry of the first segment: nothing follows it in that file.
    const buf = readFile(d.fs, path);
    const lastEntry = lastFrameOfType(buf, RecordType.Entry);
    patchFile(d.fs, path, lastEntry + frameHeaderBytes + 30, text("!"));
    const err = expectWalError(
      () => Wal.open(d.fs, d.dir, { index: 0, term: 0 }, seg).readAll(),
      "WAL_ERR_CRC_MISMATCH",
    );
    expect(err.message).toContain(`${path} at offset ${lastEntry}`);
  });

  it("refuses a damaged segment header, which was fsynced when the segment was made", async () => {
    const d = memDisk();
    Wal.create(d.fs, d.dir, meta, seg);
    const path = join(d.dir, listSegments(d.fs, d.dir)[0]!.name);
    patchFile(d.fs, path, frameHeaderBytes + 2, text("?"));
    const err = expectWalError(
      () => Wal.open(d.fs, d.dir, { index: 0, term: 0 }, seg).readAll(),
      "WAL_ERR_CRC_MISMATCH",
    );
    expect(err.offsetBytes).toBe(0);
  });
});

describe("Wal snapshots and release", () => {
  it("opens at a snapshot, releases segments wholly before it, and reopens", async () => {
    const d = memDisk();
    const wal = Wal.create(d.fs, d.dir, meta, seg);
    const saved = await fill(wal, 100, 4);
    await wal.save(hs(1, 1, 100), []);
    await wal.saveSnapshot({ index: 50, term: 1 });
    const before = listSegments(d.fs, d.dir);
    const deleted = wal.releaseBefore(50);
    expect(deleted.length).toBeGreaterThan(0);
    const after = listSegments(d.fs, d.dir);
    expect(after.length).toBe(before.length - deleted.length);
    expect(after[0]!.firstIndex).toBeLessThanOrEqual(50);
    expect(after[1]!.firstIndex).toBeGreaterThan(50);
    await wal.save(hs(1, 1, 100), ents(101, 110, 1));
    await wal.close();

    const r = Wal.open(d.fs, d.dir, { index: 50, term: 1 }, seg).readAll();
    expect(r.entries).toEqual([...saved.slice(50), ...ents(101, 110, 1)]);
    expect(Wal.validSnapshotMarkers(d.fs, d.dir)).toEqual([
      { index: 0, term: 0 },
      { index: 50, term: 1 },
    ]);
    expectWalError(() => Wal.open(d.fs, d.dir, { index: 0, term: 0 }, seg), WalErrorCode.FileNotFound);
    expectWalError(
      () => Wal.open(d.fs, d.dir, { index: 60, term: 1 }, seg).readAll(),
      "WAL_ERR_SNAPSHOT_NOT_FOUND",
    );
    expectWalError(
      () => Wal.open(d.fs, d.dir, { index: 50, term: 2 }, seg).readAll(),
      "WAL_ERR_SNAPSHOT_MISMATCH",
    );
  });

  it("continues after a snapshot that is ahead of the log (a follower installing the leader's snapshot)", async () => {
    const d = memDisk();
    const wal = Wal.create(d.fs, d.dir, meta, seg);
    await wal.save(hs(3, 2, 5), ents(1, 5, 1));
    await wal.saveSnapshot({ index: 40, term: 3 });
    await wal.save(hs(3, 2, 40), ents(41, 45, 3));
    wal.releaseBefore(40);
    await wal.close();
    const r = Wal.open(d.fs, d.dir, { index: 40, term: 3 }, seg).readAll();
    expect(r.entries).toEqual(ents(41, 45, 3));
  });
});

/** Offset where the data of a segment ends (the first zero header). */
function findEnd(buf: Uint8Array): number {
  let off = 0;
  for (;;) {
    const p = probeFrame(buf, off);
    if (p.kind !== "frame") return off;
    off = p.frame.endBytes;
  }
}

function lastFrameOfType(buf: Uint8Array, type: RecordType): number {
  let off = 0;
  let found = -1;
  for (;;) {
    const p = probeFrame(buf, off);
    if (p.kind !== "frame") return found;
    if (p.frame.type === type) found = off;
    off = p.frame.endBytes;
  }
}

/** Writes a segment file frame by frame, as a hand-made (or tampered) WAL. */
function craftSegment(
  d: Disk,
  seq: number,
  firstIndex: number,
  frames: { type: RecordType; payload: Uint8Array }[],
): { lastCrc: number; offsets: number[] } {
  let size = 0;
  for (const f of frames) size += frameBytes(f.payload.length);
  const buf = new Uint8Array(size);
  let off = 0;
  let lastCrc = 0;
  const offsets: number[] = [];
  for (const f of frames) {
    offsets.push(off);
    lastCrc = encodeFrame(buf, off, f.type, f.payload, off);
    off += frameBytes(f.payload.length);
  }
  d.fs.mkdir(d.dir, { recursive: true });
  const path = join(d.dir, segmentName(seq, firstIndex));
  if (d.fs.exists(path)) d.fs.unlink(path);
  const h = d.fs.open(path, { create: true });
  h.write(buf, 0);
  h.close();
  return { lastCrc, offsets };
}

function header(seq: number, firstIndex: number, prevCrc: number, m = meta) {
  return [
    { type: RecordType.Crc, payload: encodeCrcRecord({ prevCrc, seq, firstIndex }) },
    { type: RecordType.Metadata, payload: m },
    { type: RecordType.State, payload: encodeState(hs(0, 0, 0)) },
  ];
}

const entryFrame = (i: number, t: number) => ({ type: RecordType.Entry, payload: encodeEntry(ent(i, t)) });

describe("Wal refuses logs that break Raft's invariants", () => {
  it("an entry that leaves a gap (etcd's ErrSliceOutOfRange)", () => {
    const d = memDisk();
    const { offsets } = craftSegment(d, 0, 0, [
      ...header(0, 0, 0),
      entryFrame(1, 1),
      entryFrame(2, 1),
      entryFrame(5, 1),
    ]);
    const err = expectWalError(
      () => Wal.open(d.fs, d.dir, { index: 0, term: 0 }).readAll(),
      WalErrorCode.IndexGap,
    );
    expect(err.offsetBytes).toBe(offsets[5]);
  });

  it("a term that goes back along the log", () => {
    const d = memDisk();
    craftSegment(d, 0, 0, [...header(0, 0, 0), entryFrame(1, 2), entryFrame(2, 1)]);
    expectWalError(() => Wal.open(d.fs, d.dir, { index: 0, term: 0 }).readAll(), WalErrorCode.Corrupt);
  });

  it("segments with different metadata, and a broken crc chain between segments", () => {
    const d = memDisk();
    const a = craftSegment(d, 0, 0, [...header(0, 0, 0), entryFrame(1, 1)]);
    craftSegment(d, 1, 2, [...header(1, 2, a.lastCrc, text("other")), entryFrame(2, 1)]);
    expectWalError(
      () => Wal.open(d.fs, d.dir, { index: 0, term: 0 }).readAll(),
      WalErrorCode.MetadataConflict,
    );
    craftSegment(d, 1, 2, [...header(1, 2, a.lastCrc + 1), entryFrame(2, 1)]);
    expectWalError(() => Wal.open(d.fs, d.dir, { index: 0, term: 0 }).readAll(), WalErrorCode.CrcMismatch);
    craftSegment(d, 1, 2, [...header(1, 2, a.lastCrc), entryFrame(2, 1)]);
    expect(Wal.open(d.fs, d.dir, { index: 0, term: 0 }).readAll().entries).toEqual(ents(1, 2, 1));
  });
});

describe("Wal overwrite across a cut, then a snapshot at the overwritten index", () => {
  it("drops the stale entries after the snapshot that the overwrite replaced", async () => {
    const d = memDisk();
    const wal = Wal.create(d.fs, d.dir, meta, seg);
    await wal.save(hs(1, 1, 2), ents(1, 12, 1));
    expect(listSegments(d.fs, d.dir).length).toBeGreaterThan(1);
    // A leader of term 2 replaces entry 9 (and everything after it) in the next segment.
    await wal.save(hs(2, 2, 2), [ent(9, 2)]);
    await wal.save(hs(2, 2, 9), []);
    await wal.saveSnapshot({ index: 9, term: 2 });
    await wal.close();
    const r = Wal.open(d.fs, d.dir, { index: 9, term: 2 }, seg).readAll();
    expect(r.entries).toEqual([]);
    const all = Wal.open(d.fs, d.dir, { index: 0, term: 0 }, seg).readAll();
    expect(all.entries).toEqual([...ents(1, 8, 1), ent(9, 2)]);
  });
});

describe("Wal failures", () => {
  it("a crash at any step of create leaves no WAL or a whole one", () => {
    for (let n = 0; n < 12; n++) {
      const fs = new FaultFileSystem(new MemFileSystem(), { seed: n });
      fs.crashAfter(n, n % 2 === 0 ? "tear" : "drop");
      let created = true;
      try {
        Wal.create(fs, "/wal", meta, seg);
      } catch (err) {
        expect(err).toBeInstanceOf(SimulatedCrashError);
        created = false;
      }
      fs.restart(n);
      if (Wal.exists(fs, "/wal")) {
        const r = Wal.open(fs, "/wal", { index: 0, term: 0 }, seg).readAll();
        expect(r.metadata).toEqual(meta);
      } else {
        expect(created).toBe(false);
        Wal.create(fs, "/wal", meta, seg);
        expect(fs.readdir("/wal")).toEqual(["0000000000000000-0000000000000000.wal"]);
      }
    }
  });

  it("an fsync error poisons the WAL: no retry, every later call fails with WAL_ERR_FAILED", async () => {
    const d = memDisk();
    let failSyncs = false;
    const fs = new CountingFs(d.fs);
    const open = fs.open.bind(fs);
    fs.open = (path, opts) => {
      const h = open(path, opts);
      return {
        ...h,
        datasyncAsync: () =>
          failSyncs
            ? Promise.reject(Object.assign(new Error("EIO: i/o error"), { code: "EIO" }))
            : h.datasyncAsync(),
      };
    };
    const wal = Wal.create(fs, d.dir, meta, seg);
    await wal.save(hs(1, 1, 0), ents(1, 2, 1));
    failSyncs = true;
    await expect(wal.save(hs(1, 1, 0), ents(3, 3, 1))).rejects.toMatchObject({ code: "EIO" });
    failSyncs = false;
    await expect(wal.save(hs(1, 1, 0), ents(4, 4, 1))).rejects.toMatchObject({ code: WalErrorCode.Failed });
    await expect(wal.sync()).rejects.toMatchObject({ code: WalErrorCode.Failed });
    await wal.close();
    expect(Wal.open(d.fs, d.dir, { index: 0, term: 0 }, seg).readAll().entries.length).toBeGreaterThanOrEqual(
      2,
    );
  });
});
