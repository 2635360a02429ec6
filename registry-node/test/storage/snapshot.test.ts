// Readers see a consistent snapshot while writers commit, and the pages they can see are
// not reused until they end (bbolt: pending pages released below the oldest reader's txid).
import { describe, expect, it } from "vitest";
import { MemFileSystem, Rng } from "../../src/io/index.js";
import { DB, type Tx } from "../../src/storage/index.js";
import { dumpTx, seedFrom, utf8 } from "./helpers.js";

const key = (i: number) => utf8(`k${String(i).padStart(6, "0")}`);

function pagesOf(tx: Tx): Set<number> {
  const ids = new Set<number>();
  const walk = (b: import("../../src/storage/index.js").Bucket) => {
    b.forEachPageNode((page) => {
      if (page && b.root !== 0) ids.add(page[0]! + page[1]! * 256 + page[2]! * 65536);
    });
    const c = b.cursor();
    for (let e = c.first(); e; e = c.next()) if (e.value === null) walk(b.bucket(e.key)!);
  };
  walk(tx.root);
  return ids;
}

describe("snapshots", () => {
  it("a long read transaction keeps its snapshot while writers commit; its pages are not reused until it ends", async () => {
    const db = await DB.open("/db", { fs: new MemFileSystem(), verify: true });
    await db.update((tx) => {
      const b = tx.createBucket(utf8("b"));
      for (let i = 0; i < 2000; i++) b.put(key(i), new Uint8Array(64).fill(1));
    });
    const reader = db.begin();
    const snapshot = JSON.stringify(dumpTx(reader));
    const readerPages = pagesOf(reader);
    expect(readerPages.size).toBeGreaterThan(10);

    // The bytes of every page the reader can reach, as the reader first saw them.
    const readerBytes = new Map([...readerPages].map((id) => [id, reader.page(id).slice()] as const));
    for (let round = 0; round < 20; round++) {
      await db.update((tx) => {
        const b = tx.bucket(utf8("b"))!;
        for (let i = round * 100; i < round * 100 + 100; i++) b.delete(key(i));
        for (let i = 0; i < 50; i++) b.put(key(10000 + round * 50 + i), new Uint8Array(64).fill(2));
      });
      // No page the reader can reach was reused: on disk each is still what the reader saw.
      const changed = [...readerBytes].filter(([id, bytes]) => !Buffer.from(db.readPage(id)).equals(bytes));
      expect(changed.map(([id]) => id)).toEqual([]);
      expect(JSON.stringify(dumpTx(reader))).toBe(snapshot);
    }
    expect(db.stats().pendingPages).toBeGreaterThan(0);
    reader.rollback();
    // The next writer may now reuse what the reader held.
    await db.update((tx) => {
      tx.bucket(utf8("b"))!.put(key(99999), utf8("x"));
    });
    expect(db.stats().pendingPages).toBeLessThan(readerPages.size);
    expect((await db.check()).errors).toEqual([]);
    await db.close();
  });

  it("a reader started mid-commit sees the previous commit; the freelist holds pages back per reader txid", async () => {
    const db = await DB.open("/db", { fs: new MemFileSystem() });
    await db.update((tx) => {
      tx.createBucket(utf8("b")).put(utf8("a"), utf8("1"));
    });
    const writer = await db.beginWrite();
    writer.bucket(utf8("b"))!.put(utf8("a"), utf8("2"));
    const during = db.begin();
    const commit = writer.commit();
    expect(during.bucket(utf8("b"))!.get(utf8("a"))).toEqual(utf8("1"));
    await commit;
    expect(during.bucket(utf8("b"))!.get(utf8("a"))).toEqual(utf8("1"));
    during.rollback();
    expect(await db.view((tx) => tx.bucket(utf8("b"))!.get(utf8("a")))).toEqual(utf8("2"));
    await db.close();
  });

  it("batch coalesces concurrent updates into one commit; a failing call fails alone", async () => {
    const db = await DB.open("/db", { fs: new MemFileSystem() });
    await db.update((tx) => void tx.createBucket(utf8("b")));
    const before = db.stats().commits;
    const calls = [];
    for (let i = 0; i < 50; i++) {
      calls.push(
        db.batch((tx) => {
          if (i === 7) throw new Error("boom");
          tx.bucket(utf8("b"))!.put(key(i), utf8("v"));
        }),
      );
    }
    const results = await Promise.allSettled(calls);
    expect(results.filter((r) => r.status === "rejected")).toHaveLength(1);
    expect(db.stats().commits - before).toBeLessThanOrEqual(3);
    expect(await db.view((tx) => tx.bucket(utf8("b"))!.get(key(7)))).toBeNull();
    expect(await db.view((tx) => tx.bucket(utf8("b"))!.get(key(8)))).toEqual(utf8("v"));
    await db.close();
  });
});

describe("snapshots under interleaving", () => {
  it("many readers opened and closed at random while writers commit each keep their snapshot (seeded)", async () => {
    const seed = seedFrom(2024);
    const rng = new Rng(seed);
    const db = await DB.open("/db", { fs: new MemFileSystem(), pageSize: 1024, verify: true });
    await db.update((tx) => void tx.createBucket(utf8("b")));
    const readers: { tx: Tx; want: string }[] = [];
    for (let step = 0; step < 300; step++) {
      const r = rng.int(10);
      if (r < 3) {
        const tx = db.begin();
        readers.push({ tx, want: JSON.stringify(dumpTx(tx)) });
      } else if (r < 5 && readers.length > 0) {
        const [gone] = readers.splice(rng.int(readers.length), 1);
        expect(JSON.stringify(dumpTx(gone!.tx)), `seed ${seed} step ${step}`).toBe(gone!.want);
        gone!.tx.rollback();
      } else {
        await db.update((tx) => {
          const b = tx.bucket(utf8("b"))!;
          for (let i = 0; i < 1 + rng.int(40); i++) {
            const k = key(rng.int(3000));
            if (rng.int(3) === 0) b.delete(k);
            else b.put(k, new Uint8Array(rng.int(120)).fill(step & 255));
          }
        });
      }
    }
    for (const { tx, want } of readers) {
      expect(JSON.stringify(dumpTx(tx)), `seed ${seed}`).toBe(want);
      tx.rollback();
    }
    expect((await db.check()).errors).toEqual([]);
    await db.close();
  });
});
