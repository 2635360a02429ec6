// Bad input gives typed errors with stable codes, bbolt's message text, and leaves the file untouched.
import { describe, expect, it } from "vitest";
import { FaultFileSystem, MemFileSystem } from "../../src/io/index.js";
import {
  DB,
  ErrBucketExists,
  ErrIncompatibleValue,
  encodeMeta,
  MAX_KEY_SIZE_BYTES,
  newMeta,
  StorageError,
} from "../../src/storage/index.js";
import { utf8 } from "./helpers.js";

const code = (c: string) => expect.objectContaining({ code: c });

function fileBytes(fs: MemFileSystem, path: string): Uint8Array {
  const h = fs.open(path);
  const b = new Uint8Array(h.size());
  h.read(b, 0);
  h.close();
  return b;
}

describe("storage errors", () => {
  it("keys, values, buckets and transactions: codes and bbolt's messages; the file is untouched", async () => {
    const mem = new MemFileSystem();
    const db = await DB.open("/db", { fs: mem });
    await db.update((tx) => {
      tx.createBucket(utf8("b")).put(utf8("k"), utf8("v"));
    });
    await db.close();
    const before = fileBytes(mem, "/db");
    const again = await DB.open("/db", { fs: mem });
    const attempts: [string, string, (tx: import("../../src/storage/index.js").Tx) => void][] = [
      [
        "STORAGE_ERR_KEY_REQUIRED",
        "key required",
        (tx) => tx.bucket(utf8("b"))!.put(new Uint8Array(0), utf8("v")),
      ],
      [
        "STORAGE_ERR_KEY_TOO_LARGE",
        "key too large",
        (tx) => tx.bucket(utf8("b"))!.put(new Uint8Array(MAX_KEY_SIZE_BYTES + 1), utf8("v")),
      ],
      [
        "STORAGE_ERR_BUCKET_NAME_REQUIRED",
        "bucket name required",
        (tx) => tx.createBucket(new Uint8Array(0)),
      ],
      ["STORAGE_ERR_BUCKET_EXISTS", "bucket already exists", (tx) => tx.createBucket(utf8("b"))],
      ["STORAGE_ERR_BUCKET_NOT_FOUND", "bucket not found", (tx) => tx.deleteBucket(utf8("nope"))],
      [
        "STORAGE_ERR_INCOMPATIBLE_VALUE",
        "incompatible value",
        (tx) => {
          const b = tx.bucket(utf8("b"))!;
          b.createBucket(utf8("sub"));
          b.put(utf8("sub"), utf8("x"));
        },
      ],
      [
        "STORAGE_ERR_INCOMPATIBLE_VALUE",
        "incompatible value",
        (tx) => tx.bucket(utf8("b"))!.createBucket(utf8("k")),
      ],
    ];
    for (const [c, msg, fn] of attempts) {
      await expect(again.update(fn)).rejects.toThrow(expect.objectContaining({ code: c, message: msg }));
    }
    await expect(again.view((tx) => tx.bucket(utf8("b"))!.put(utf8("k"), utf8("v")))).rejects.toThrow(
      expect.objectContaining({ code: "STORAGE_ERR_TX_NOT_WRITABLE", message: "tx not writable" }),
    );
    await expect(again.view((tx) => tx.createBucket(utf8("c")))).rejects.toThrow(
      code("STORAGE_ERR_TX_NOT_WRITABLE"),
    );
    const tx = again.begin();
    const b = tx.bucket(utf8("b"))!;
    tx.rollback();
    expect(() => b.cursor()).toThrow(
      expect.objectContaining({ code: "STORAGE_ERR_TX_CLOSED", message: "tx closed" }),
    );
    const wtx = await again.beginWrite();
    wtx.rollback();
    await expect(wtx.commit()).rejects.toThrow(code("STORAGE_ERR_TX_CLOSED"));
    expect(new ErrBucketExists()).toBeInstanceOf(StorageError);
    expect(new ErrIncompatibleValue().code).toBe("STORAGE_ERR_INCOMPATIBLE_VALUE");
    await again.close();
    expect(() => again.begin()).toThrow(
      expect.objectContaining({ code: "STORAGE_ERR_DATABASE_NOT_OPEN", message: "database not open" }),
    );
    expect(fileBytes(mem, "/db")).toEqual(before);
  });

  it("oversized values are refused before anything is written", async () => {
    const db = await DB.open("/db", { fs: new MemFileSystem() });
    // A view standing in for a 2 GiB buffer: only its length is read.
    const huge = { length: 2 ** 31 - 1 } as unknown as Uint8Array;
    await expect(db.update((tx) => tx.createBucket(utf8("b")).put(utf8("k"), huge))).rejects.toThrow(
      expect.objectContaining({ code: "STORAGE_ERR_VALUE_TOO_LARGE", message: "value too large" }),
    );
    await db.close();
  });

  it("files that are not bbolt, of another version or with a bad page size are refused untouched", async () => {
    const mem = new MemFileSystem();
    const write = (path: string, bytes: Uint8Array) => {
      const h = mem.open(path, { create: true });
      h.write(bytes, 0);
      h.close();
    };
    write("/text", new TextEncoder().encode("hello, this is not a database at all".repeat(400)));
    await expect(DB.open("/text", { fs: mem })).rejects.toThrow(
      expect.objectContaining({ code: "STORAGE_ERR_INVALID", message: "invalid database" }),
    );
    const v1 = new Uint8Array(16384);
    for (let i = 0; i < 2; i++) encodeMeta(v1.subarray(4096 * i), { ...newMeta(4096, i), version: 1 });
    write("/v1", v1);
    await expect(DB.open("/v1", { fs: mem })).rejects.toThrow(
      expect.objectContaining({ code: "STORAGE_ERR_VERSION_MISMATCH", message: "version mismatch" }),
    );
    const ps = new Uint8Array(16384);
    for (let i = 0; i < 2; i++) encodeMeta(ps.subarray(4096 * i), { ...newMeta(4096, i), pageSize: 1000 });
    write("/ps", ps);
    await expect(DB.open("/ps", { fs: mem })).rejects.toThrow(code("STORAGE_ERR_INVALID_PAGE_SIZE"));
    await expect(DB.open("/db-new", { fs: mem, pageSize: 3000 })).rejects.toThrow(
      code("STORAGE_ERR_INVALID_PAGE_SIZE"),
    );
    expect(fileBytes(mem, "/v1")).toEqual(v1);
    expect(fileBytes(mem, "/ps")).toEqual(ps);
    expect(mem.exists("/db-new")).toBe(false);
    expect(mem.exists("/v1.lock")).toBe(false);
  });

  it("after a failed fsync in a commit, writes are refused (reads go on) until a reopen", async () => {
    const mem = new MemFileSystem();
    let failNext = false;
    // A file system whose next fdatasync fails with EIO.
    const flaky: import("../../src/io/index.js").FileSystem = Object.create(mem);
    flaky.open = (path, opts) => {
      const h = mem.open(path, opts);
      const orig = h.datasyncAsync.bind(h);
      h.datasyncAsync = () => {
        if (failNext) {
          failNext = false;
          return Promise.reject(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }));
        }
        return orig();
      };
      return h;
    };
    const db = await DB.open("/db", { fs: flaky });
    await db.update((tx) => void tx.createBucket(utf8("b")).put(utf8("k"), utf8("1")));
    failNext = true;
    await expect(db.update((tx) => tx.bucket(utf8("b"))!.put(utf8("k"), utf8("2")))).rejects.toThrow(
      expect.objectContaining({ code: "EIO" }),
    );
    await expect(db.update(() => {})).rejects.toThrow(code("STORAGE_ERR_FAILED"));
    expect(await db.view((tx) => tx.bucket(utf8("b"))!.get(utf8("k")))).toEqual(utf8("1"));
    await db.close();
    const again = await DB.open("/db", { fs: mem });
    expect((await again.check()).errors).toEqual([]);
    await again.close();
  });

  it("REGMESH_STORAGE_VERIFY=1 checks every commit and refuses one that would commit a corrupt tree", async () => {
    const mem = new MemFileSystem();
    const db = await DB.open("/db", { fs: mem });
    await db.update((tx) => {
      const b = tx.createBucket(utf8("b"));
      for (let i = 100; i < 600; i++) b.put(utf8(`k${i}`), utf8("v"));
    });
    const txid = db.currentMeta().txid;
    await db.close();
    // Corrupt the order of keys inside a committed leaf page: "k150" becomes "k950".
    const bytes = fileBytes(mem, "/db");
    const at = Buffer.from(bytes).indexOf("k150");
    const h = mem.open("/db");
    h.write(utf8("k950"), at);
    h.close();
    const saved = process.env.REGMESH_STORAGE_VERIFY;
    process.env.REGMESH_STORAGE_VERIFY = "1";
    try {
      const again = await DB.open("/db", { fs: mem });
      await expect(again.update((tx) => tx.createBucket(utf8("other")))).rejects.toThrow(
        expect.objectContaining({
          code: "STORAGE_ERR_CORRUPT",
          message: expect.stringMatching(/keys out of order/),
        }),
      );
      await again.close();
    } finally {
      if (saved === undefined) delete process.env.REGMESH_STORAGE_VERIFY;
      else process.env.REGMESH_STORAGE_VERIFY = saved;
    }
    // The refused commit wrote no meta.
    const after = await DB.open("/db", { fs: mem });
    expect(after.currentMeta().txid).toBe(txid);
    expect((await after.check()).errors.join("\n")).toMatch(/keys out of order/);
    await after.close();
  });

  it("a second open of a held database is a typed lock error", async () => {
    const fs = new FaultFileSystem(new MemFileSystem());
    const db = await DB.open("/db", { fs });
    await expect(DB.open("/db", { fs })).rejects.toThrow(code("STORAGE_ERR_LOCKED"));
    await db.close();
    const again = await DB.open("/db", { fs });
    await again.close();
  });
});
