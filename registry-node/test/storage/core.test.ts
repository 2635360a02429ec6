// The pure core, piece by piece: meta encoding and validation, the freelist page (with the
// count-overflow form), page layouts, file growth, the page cache, compaction.
import { describe, expect, it } from "vitest";
import { MemFileSystem } from "../../src/io/index.js";
import {
  DB,
  decodeMeta,
  encodeMeta,
  Freelist,
  fnv64a,
  growSize,
  MAGIC,
  newMeta,
  PageCache,
  PGID_NO_FREELIST,
  page,
  validateMeta,
} from "../../src/storage/index.js";
import { dumpDb, utf8 } from "./helpers.js";

describe("meta", () => {
  it("round-trips, checksums with FNV-64a and validates magic, version and checksum", () => {
    const buf = new Uint8Array(4096);
    const m = { ...newMeta(4096, 7), root: { root: 9, sequence: 5n }, pgid: 40, freelist: 12 };
    const sum = encodeMeta(buf, m);
    expect(page.pageId(buf)).toBe(1); // txid 7 goes to meta page 7 % 2
    expect(page.pageFlags(buf)).toBe(0x04);
    const d = decodeMeta(buf);
    expect(d).toEqual({ ...m, checksum: sum });
    expect(d.magic).toBe(MAGIC);
    expect(validateMeta(buf, d)).toBeNull();
    const torn = buf.slice();
    torn[16 + 48] = 8; // txid byte, covered by the checksum
    expect(validateMeta(torn, decodeMeta(torn))?.code).toBe("STORAGE_ERR_CHECKSUM");
    // FNV-64a of "" and of "a" (Go's hash/fnv test vectors).
    expect(fnv64a(new Uint8Array(0), 0, 0)).toBe(0xcbf29ce484222325n);
    expect(fnv64a(utf8("a"), 0, 1)).toBe(0xaf63dc4c8601ec8cn);
  });

  it("maps bbolt's all-ones freelist id (NoFreelistSync) to PGID_NO_FREELIST and back", () => {
    const buf = new Uint8Array(4096);
    encodeMeta(buf, { ...newMeta(4096, 2), freelist: PGID_NO_FREELIST });
    expect([...buf.subarray(16 + 32, 16 + 40)]).toEqual(new Array(8).fill(255));
    expect(decodeMeta(buf).freelist).toBe(PGID_NO_FREELIST);
  });
});

describe("freelist", () => {
  it("allocates the first contiguous run, frees per txid and releases below a txid", () => {
    const f = new Freelist();
    f.readIds([3, 4, 6, 7, 8, 12]);
    expect(f.allocate(3)).toBe(6);
    expect(f.ids).toEqual([3, 4, 12]);
    expect(f.allocate(5)).toBe(0);
    f.free(10, 20, 1);
    f.free(11, 30, 0);
    expect(() => f.free(11, 21, 0)).toThrow(/already freed/);
    expect(f.count()).toBe(6);
    f.release(10);
    expect(f.ids).toEqual([3, 4, 12, 20, 21]);
    expect(f.pendingCount()).toBe(1);
  });

  it("writes 0xFFFF or more ids with the count in the first element, and reads them back", () => {
    for (const n of [0, 5, 0xfffe, 0xffff, 70000]) {
      const f = new Freelist();
      f.readIds(Array.from({ length: n }, (_, i) => i * 2 + 2));
      const buf = new Uint8Array(Math.ceil(f.size() / 4096) * 4096);
      f.write(buf);
      expect(page.pageCount(buf)).toBe(Math.min(n, 0xffff));
      const g = new Freelist();
      g.read(buf);
      expect(g.ids).toEqual(f.ids);
      expect(f.size()).toBe(16 + 8 * (n >= 0xffff ? n + 1 : n));
    }
  });
});

describe("shell pieces", () => {
  it("grows the file by doubling up to the step, then by steps", () => {
    expect(growSize(16384, 20000)).toBe(32768);
    expect(growSize(32768, 100_000)).toBe(131072);
    expect(growSize(64 * 2 ** 20, 64 * 2 ** 20 + 1)).toBe(128 * 2 ** 20);
    expect(growSize(128 * 2 ** 20, 129 * 2 ** 20)).toBe(192 * 2 ** 20);
  });

  it("the page cache stays within its byte limit and gives hot pages a second chance", () => {
    const c = new PageCache(4 * 4096);
    for (let i = 0; i < 4; i++) c.put(i, new Uint8Array(4096));
    c.get(0);
    c.put(4, new Uint8Array(4096));
    expect(c.size).toBeLessThanOrEqual(4 * 4096);
    expect(c.get(0)).toBeDefined();
    expect(c.get(1)).toBeUndefined();
    // Pages that are views into one buffer count that buffer once, in full, while any is cached.
    const slabbed = new PageCache(1 << 20);
    const slab = new Uint8Array(8 * 4096);
    slabbed.put(10, slab.subarray(0, 4096));
    slabbed.put(11, slab.subarray(4096, 8192));
    expect(slabbed.size).toBe(8 * 4096);
    slabbed.delete(10);
    expect(slabbed.size).toBe(8 * 4096);
    slabbed.delete(11);
    expect(slabbed.size).toBe(0);
  });

  it("compactTo copies buckets, keys and sequences into a file without free pages", async () => {
    const fs = new MemFileSystem();
    const db = await DB.open("/src", { fs });
    await db.update((tx) => {
      const b = tx.createBucket(utf8("b"));
      b.setSequence(42n);
      for (let i = 0; i < 3000; i++) b.put(utf8(`k${i}`), new Uint8Array(100).fill(i & 255));
      b.createBucket(utf8("nested")).put(utf8("x"), utf8("y"));
    });
    await db.update((tx) => {
      const b = tx.bucket(utf8("b"))!;
      for (let i = 0; i < 2500; i++) b.delete(utf8(`k${i}`));
    });
    const progress: number[] = [];
    await db.compactTo("/dst", (p) => progress.push(p.keysCopied), { txBytesMax: 10_000 });
    expect(progress.length).toBeGreaterThan(1);
    const dst = await DB.open("/dst", { fs });
    expect(JSON.stringify(await dumpDb(dst))).toBe(JSON.stringify(await dumpDb(db)));
    expect((await dst.check()).errors).toEqual([]);
    expect(dst.stats().highWaterPgid).toBeLessThan(db.stats().highWaterPgid);
    await dst.close();
    await db.close();
  });
});

describe("cursors", () => {
  it("first, last, next, prev, seek, delete under the cursor, range and prefix", async () => {
    const db = await DB.open("/db", { fs: new MemFileSystem() });
    const keys = Array.from({ length: 500 }, (_, i) => `k${String(i).padStart(3, "0")}`);
    await db.update((tx) => {
      const b = tx.createBucket(utf8("b"));
      for (const k of keys) b.put(utf8(k), utf8(k));
      b.createBucket(utf8("k250x"));
    });
    const dec = (e: { key: Uint8Array } | null) => (e ? new TextDecoder().decode(e.key) : null);
    await db.view((tx) => {
      const c = tx.bucket(utf8("b"))!.cursor();
      expect(dec(c.first())).toBe("k000");
      expect(dec(c.prev())).toBeNull();
      expect(dec(c.last())).toBe("k499");
      expect(dec(c.next())).toBeNull();
      expect(dec(c.seek(utf8("k250")))).toBe("k250");
      const sub = c.next();
      expect(dec(sub)).toBe("k250x");
      expect(sub!.value).toBeNull(); // a nested bucket
      expect(dec(c.seek(utf8("k2505")))).toBe("k250x");
      expect(dec(c.seek(utf8("z")))).toBeNull();
      const b = tx.bucket(utf8("b"))!;
      expect([...b.range(utf8("k100"), utf8("k105"))].map(dec)).toEqual([
        "k100",
        "k101",
        "k102",
        "k103",
        "k104",
      ]);
      expect([...b.prefix(utf8("k25"))].map(dec)).toEqual([...keys.slice(250, 260), "k250x"].sort());
    });
    await db.update((tx) => {
      const c = tx.bucket(utf8("b"))!.cursor();
      // Consecutive deletes: every key from k100 to k399 (a run spanning many leaves).
      for (let e = c.seek(utf8("k100")); e && dec(e)! < "k400"; e = c.next()) if (e.value) c.delete();
    });
    const left = await db.view((tx) => [...tx.bucket(utf8("b"))!.range(utf8("k"), null)].map(dec));
    expect(left).toEqual([...keys.slice(0, 100), "k250x", ...keys.slice(400)]);
    expect((await db.check()).errors).toEqual([]);
    await db.close();
  });
});
