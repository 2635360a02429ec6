// Format differential against real bbolt (test/go/bboltcheck): files we write pass bbolt's
// tx.Check() and dump exactly our model; files bbolt writes open here with the same contents.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NodeFileSystem, Rng } from "../../src/io/index.js";
import { DB } from "../../src/storage/index.js";
import {
  bbolt,
  buildBboltcheck,
  dumpDb,
  fillTx,
  haveGoBbolt,
  hex,
  type MBucket,
  modelToJson,
  newBucket,
  utf8,
} from "./helpers.js";

// Without Go and the bbolt source there is no oracle: say so rather than fail.
const suite = haveGoBbolt ? describe : describe.skip;

let bin: string;
let dir: string;
const fs = new NodeFileSystem();

beforeAll(() => {
  if (!haveGoBbolt) return;
  bin = buildBboltcheck();
  dir = mkdtempSync(join(tmpdir(), "regmesh-format-"));
}, 120_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
const fresh = () => join(dir, `db${n++}`);

/** A model with every shape bbolt has: inline and regular buckets, nesting, overflow values, deep trees. */
function richModel(seed: number, keys: number): MBucket {
  const rng = new Rng(seed);
  const root = newBucket();
  const small = newBucket();
  small.entries.set(hex(utf8("a")), utf8("1"));
  small.entries.set(hex(utf8("b")), utf8("2"));
  small.sequence = 7n;
  root.entries.set(hex(utf8("inline")), small);
  root.entries.set(hex(utf8("empty")), newBucket());
  const big = newBucket();
  for (let i = 0; i < keys; i++) {
    const k = utf8(`key/${String(rng.int(1e9)).padStart(9, "0")}/${i}`);
    const v = new Uint8Array(rng.int(300));
    for (let j = 0; j < v.length; j++) v[j] = rng.int(256);
    big.entries.set(hex(k), v);
  }
  big.entries.set(hex(utf8("huge")), new Uint8Array(20000).fill(0xab));
  big.entries.set(hex(utf8("huge2")), new Uint8Array(4097).fill(0xcd));
  const nested = newBucket();
  nested.sequence = 123456789012n;
  const deeper = newBucket();
  deeper.entries.set(hex(utf8("x")), utf8("y"));
  nested.entries.set(hex(utf8("deeper")), deeper);
  for (let i = 0; i < 300; i++) nested.entries.set(hex(utf8(`n${i}`)), new Uint8Array(40).fill(i & 255));
  big.entries.set(hex(utf8("nested")), nested);
  root.entries.set(hex(utf8("big")), big);
  root.entries.set(hex(new Uint8Array([0, 255, 1])), newBucket());
  return root;
}

suite("format: files written here are bbolt files", () => {
  for (const pageSize of [4096, 1024, 16384]) {
    it(`page size ${pageSize}: bbolt check passes and bbolt dumps our model`, async () => {
      const path = fresh();
      const model = richModel(pageSize, 3000);
      const db = await DB.open(path, { fs, pageSize, verify: true });
      await db.update((tx) => fillTx(tx, model));
      expect(await dumpDb(db)).toEqual(modelToJson(model));
      await db.close();
      expect(bbolt(bin, "check", path).trim()).toBe("ok");
      expect(JSON.parse(bbolt(bin, "dump", path))).toEqual(modelToJson(model));
    });
  }

  it("keys of MaxKeySize and multi-megabyte values (overflow leaf and branch pages)", async () => {
    const path = fresh();
    const model = newBucket();
    const b = newBucket();
    for (let i = 0; i < 12; i++) {
      const k = new Uint8Array(32768).fill(0x41 + i);
      b.entries.set(hex(k), new Uint8Array(i * 1000).fill(i));
    }
    b.entries.set(hex(utf8("mega")), new Uint8Array(3 * 1024 * 1024).fill(7));
    model.entries.set(hex(utf8("wide")), b);
    const db = await DB.open(path, { fs, verify: true });
    await db.update((tx) => fillTx(tx, model));
    expect(await dumpDb(db)).toEqual(modelToJson(model));
    await db.close();
    expect(bbolt(bin, "check", path).trim()).toBe("ok");
    expect(JSON.parse(bbolt(bin, "dump", path))).toEqual(modelToJson(model));
  });

  it("after deletes, merges, bucket deletes and sequences over several commits", async () => {
    const path = fresh();
    const model = richModel(99, 4000);
    const db = await DB.open(path, { fs, verify: true });
    await db.update((tx) => fillTx(tx, model));
    const big = model.entries.get(hex(utf8("big"))) as MBucket;
    const keys = [...big.entries.keys()].filter((k) => k.startsWith(hex(utf8("key/"))));
    await db.update((tx) => {
      const b = tx.bucket(utf8("big"))!;
      for (const k of keys.slice(0, 3500)) {
        b.delete(Buffer.from(k, "hex"));
        big.entries.delete(k);
      }
      b.deleteBucket(utf8("nested"));
      big.entries.delete(hex(utf8("nested")));
      expect(b.nextSequence()).toBe(1n);
      big.sequence = 1n;
      tx.deleteBucket(utf8("empty"));
      model.entries.delete(hex(utf8("empty")));
    });
    // The inline bucket grows past pageSize/4 and becomes a regular bucket.
    await db.update((tx) => {
      const b = tx.bucket(utf8("inline"))!;
      const m = model.entries.get(hex(utf8("inline"))) as MBucket;
      for (let i = 0; i < 100; i++) {
        b.put(utf8(`grow${i}`), new Uint8Array(30));
        m.entries.set(hex(utf8(`grow${i}`)), new Uint8Array(30));
      }
    });
    expect(await dumpDb(db)).toEqual(modelToJson(model));
    expect((await db.check()).errors).toEqual([]);
    await db.close();
    expect(bbolt(bin, "check", path).trim()).toBe("ok");
    expect(JSON.parse(bbolt(bin, "dump", path))).toEqual(modelToJson(model));
  });

  it("a freelist of more than 0xFFFF pages uses the count-in-first-element form", async () => {
    const path = fresh();
    const db = await DB.open(path, { fs, pageSize: 1024, noSync: true });
    const value = new Uint8Array(1500).fill(1);
    // Leaves of two 1500-byte values span 3-4 pages: ~70k pages freed by the delete below.
    await db.update((tx) => {
      const b = tx.createBucket(utf8("b"));
      for (let i = 0; i < 46000; i++) b.put(utf8(String(i).padStart(6, "0")), value);
    });
    await db.update((tx) => tx.deleteBucket(utf8("b")));
    await db.update((tx) => {
      tx.createBucket(utf8("c")).put(utf8("k"), utf8("v"));
    });
    const st = db.stats();
    expect(st.freePages + st.pendingPages).toBeGreaterThan(0xffff);
    expect((await db.check()).errors).toEqual([]);
    await db.close();
    expect(bbolt(bin, "check", path).trim()).toBe("ok");
    const reopened = await DB.open(path, { fs });
    expect(reopened.stats().freePages).toBeGreaterThan(0xffff);
    expect((await reopened.check()).errors).toEqual([]);
    await reopened.close();
  });
});

suite("format: compaction", () => {
  it("compactTo writes a file bbolt accepts, with the same contents", async () => {
    const path = fresh();
    const model = richModel(5, 2000);
    const db = await DB.open(path, { fs });
    await db.update((tx) => fillTx(tx, model));
    await db.update((tx) => tx.deleteBucket(utf8("inline")));
    model.entries.delete(hex(utf8("inline")));
    const dst = fresh();
    await db.compactTo(dst, undefined, { txBytesMax: 50_000 });
    await db.close();
    expect(bbolt(bin, "check", dst).trim()).toBe("ok");
    expect(JSON.parse(bbolt(bin, "dump", dst))).toEqual(modelToJson(model));
  });
});

suite("format: snapshot copy", () => {
  it("copyTo while a writer commits gives a file bbolt accepts, with the snapshot's contents", async () => {
    const path = fresh();
    const model = richModel(11, 3000);
    const db = await DB.open(path, { fs });
    await db.update((tx) => fillTx(tx, model));
    const dst = fresh();
    const copying = db.copyTo(dst, { chunkBytes: 8192 });
    // Writers keep going (and free pages) while the copy runs.
    for (let i = 0; i < 5; i++) {
      await db.update((tx) => {
        const b = tx.bucket(utf8("big"))!;
        const c = b.cursor();
        let n = 0;
        for (let e = c.first(); e && n < 200; e = c.next(), n++)
          if (e.value) b.put(e.key, new Uint8Array(50).fill(i));
        b.put(utf8(`new${i}`), utf8("x"));
      });
    }
    const { bytes } = await copying;
    expect(bytes).toBeGreaterThan(0);
    await db.close();
    expect(bbolt(bin, "check", dst).trim()).toBe("ok");
    expect(JSON.parse(bbolt(bin, "dump", dst))).toEqual(modelToJson(model));
    const copy = await DB.open(dst, { fs });
    expect(await dumpDb(copy)).toEqual(modelToJson(model));
    expect((await copy.check()).errors).toEqual([]);
    await copy.close();
  });
});

suite("format: bbolt's files open here", () => {
  it("reads every bucket, key, value and sequence bbolt wrote, then writes a file bbolt still accepts", async () => {
    const path = fresh();
    const model = richModel(7, 5000);
    const big = model.entries.get(hex(utf8("big"))) as MBucket;
    const deletes = [...big.entries.keys()]
      .slice(0, 2000)
      .filter((k) => !(big.entries.get(k) instanceof Object && !(big.entries.get(k) instanceof Uint8Array)));
    const spec = {
      pageSize: 4096,
      root: modelToJson(model),
      deletes: deletes.map((k) => ({ path: [hex(utf8("big"))], k })),
    };
    for (const k of deletes) big.entries.delete(k);
    const specPath = join(dir, "spec.json");
    writeFileSync(specPath, JSON.stringify(spec));
    expect(bbolt(bin, "write", path, specPath).trim()).toBe("ok");
    const db = await DB.open(path, { fs, verify: true });
    expect(await dumpDb(db)).toEqual(modelToJson(model));
    expect((await db.check()).errors).toEqual([]);
    await db.update((tx) => {
      tx.bucket(utf8("big"))!.put(utf8("added"), utf8("here"));
      big.entries.set(hex(utf8("added")), utf8("here"));
    });
    await db.close();
    expect(bbolt(bin, "check", path).trim()).toBe("ok");
    expect(JSON.parse(bbolt(bin, "dump", path))).toEqual(modelToJson(model));
  });
});
