import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FaultFileSystem, MemFileSystem } from "../../src/io/index.js";
import type { Entry, HardState, Snapshot } from "../../src/raft/types.js";
import { WalErrorCode } from "../../src/wal/errors.js";
import { loadIntoStorage, RaftDiskStorage, restoreRaftLog } from "../../src/wal/raft-log-store.js";
import { decodeSnapFile, encodeSnapFile, Snapshotter, snapName } from "../../src/wal/snapshotter.js";
import { Wal } from "../../src/wal/wal.js";
import { ents, hs, memDisk, nodeDisk, patchFile, readFile, text } from "./helpers.js";

function snap(index: number, term: number, data = new Uint8Array(0)): Snapshot {
  return { metadata: { index, term, confState: { voters: [1, 2, 3], learners: [4] } }, data };
}

describe("Snapshotter (snapshot metadata files)", () => {
  it("round-trips metadata and small data through the file format", () => {
    const s = snap(2 ** 40 + 5, 9, text("small"));
    expect(decodeSnapFile(encodeSnapFile(s))).toEqual(s);
    const bytes = encodeSnapFile(s);
    bytes[bytes.length - 1]! ^= 1;
    expect(decodeSnapFile(bytes)).toBe("crc mismatch");
    expect(decodeSnapFile(new Uint8Array(0))).toBe("empty file");
  });

  for (const [name, make] of [
    ["mem", memDisk],
    ["node", nodeDisk],
  ] as const) {
    it(`names files <term>-<index>.snap, loads the newest valid one and renames a broken one (${name})`, () => {
      const d = make();
      try {
        const dir = join(d.dir, "..", "snap");
        const sn = new Snapshotter(d.fs, dir);
        expect(sn.loadNewest()).toBeUndefined();
        expect(sn.saveSnap(snap(0, 0))).toBeUndefined();
        sn.saveSnap(snap(10, 1));
        sn.saveSnap(snap(20, 2));
        const newest = sn.saveSnap(snap(30, 2))!;
        expect(newest).toBe(join(dir, snapName(2, 30)));
        expect(sn.snapNames()).toEqual([snapName(2, 30), snapName(2, 20), snapName(1, 10)]);
        expect(sn.loadNewest()?.metadata.index).toBe(30);

        patchFile(d.fs, newest, 20, text("\xff"));
        expect(sn.loadNewest()).toEqual(snap(20, 2));
        expect(d.fs.readdir(dir)).toContain(`${snapName(2, 30)}.broken`);
        expect(() => sn.read(`${snapName(2, 30)}.broken`)).toThrow(
          expect.objectContaining({ code: WalErrorCode.SnapCorrupt }),
        );
        // Only snapshots the WAL vouches for are used.
        expect(sn.loadNewestAvailable([{ index: 10, term: 1 }])?.metadata.index).toBe(10);
        expect(sn.loadNewestAvailable([{ index: 20, term: 3 }])).toBeUndefined();
        expect(sn.purge(1)).toEqual([snapName(1, 10)]);
        expect(sn.load().metadata.index).toBe(20);
      } finally {
        d.done();
      }
    });
  }

  it("a crash while saving leaves no partial snapshot file", () => {
    const fs = new FaultFileSystem(new MemFileSystem());
    const sn = new Snapshotter(fs, "/snap");
    sn.saveSnap(snap(5, 1));
    fs.crashAfter(1, "tear");
    expect(() => sn.saveSnap(snap(9, 1, new Uint8Array(4000).fill(7)))).toThrow();
    fs.restart(3);
    const again = new Snapshotter(fs, "/snap");
    expect(again.loadNewest()?.metadata.index).toBe(5);
    expect(again.snapNames()).toEqual([snapName(1, 5)]);
    expect(fs.readdir("/snap")).toEqual([snapName(1, 5)]);
  });
});

class FakeStorage {
  snapshot: Snapshot | undefined;
  hardState: HardState | undefined;
  entries: Entry[] = [];
  applySnapshot(s: Snapshot) {
    this.snapshot = s;
  }
  setHardState(h: HardState) {
    this.hardState = h;
  }
  append(e: Entry[]) {
    this.entries.push(...e);
  }
}

describe("restoreRaftLog: start-up from snapshot metadata + WAL", () => {
  it("creates on first start, then restarts from the newest snapshot the WAL vouches for", async () => {
    const d = memDisk();
    const paths = { walDir: d.dir, snapDir: "/data/snap", segmentSizeBytes: 1024 };
    const first = restoreRaftLog(d.fs, paths, text("node-1"));
    expect(first.created).toBe(true);
    const { wal, snapshotter } = first;
    const disk = RaftDiskStorage.from(first);
    for (let i = 1; i <= 60; i += 5) await disk.save(hs(2, 1, 0), ents(i, i + 4, 2));
    await disk.save(hs(2, 1, 40), []);
    const segmentsBefore = d.fs.readdir(d.dir).length;
    // Snapshot file first, then the WAL record, then release (etcd's order).
    await disk.saveSnap(snap(40, 2));
    expect(d.fs.readdir(d.dir).length).toBeLessThan(segmentsBefore);
    await disk.save(hs(2, 1, 55), ents(61, 70, 2));
    // A snapshot file whose WAL record never made it (crash in between) is ignored.
    snapshotter.saveSnap(snap(55, 2));
    await wal.close();

    const back = restoreRaftLog(d.fs, paths);
    expect(back.created).toBe(false);
    expect(back.snapshot?.metadata.index).toBe(40);
    expect(back.metadata).toEqual(text("node-1"));
    expect(back.hardState).toEqual(hs(2, 1, 55));
    expect(back.entries).toEqual(ents(41, 70, 2));
    const storage = new FakeStorage();
    loadIntoStorage(storage, back);
    expect(storage.snapshot?.metadata).toEqual(snap(40, 2).metadata);
    expect(storage.entries.map((e) => e.index)).toEqual(ents(41, 70, 2).map((e) => e.index));
    await back.wal.close();
    expect(Wal.validSnapshotMarkers(d.fs, d.dir)).toEqual([
      { index: 0, term: 0 },
      { index: 40, term: 2 },
    ]);
    expect(readFile(d.fs, join("/data/snap", snapName(2, 40))).length).toBeGreaterThan(0);
  });
});
