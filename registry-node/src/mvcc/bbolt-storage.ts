// mvcc's Storage over the bbolt-format engine (../storage): the registry's data file,
// <data-dir>/member/snap/db as in etcd, readable by etcd and bbolt themselves.
//
// Reads use one long-lived read transaction, renewed after each commit, rather than a
// new one per get: a read transaction is cheap but not free, and the buffered backend
// reads through here for every value it does not hold itself.

import { closeSync, fsyncSync, openSync, readdirSync, renameSync, rmSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { DB, type OpenOptions, type Tx } from "../storage/index.js";
import type { Storage, StorageReadTx, StorageWriteTx } from "./backend.js";

const name = (bucket: string) => Buffer.from(bucket);

function readTx(tx: Tx): StorageReadTx {
  return {
    get(bucket, key) {
      return tx.bucket(name(bucket))?.get(key) ?? undefined;
    },
    scan(bucket, start, end, f) {
      const b = tx.bucket(name(bucket));
      if (b === null) return;
      const c = b.cursor();
      for (let e = c.seek(start); e !== null; e = c.next()) {
        if (end !== undefined && Buffer.compare(e.key, end) >= 0) return;
        if (e.value === null) continue; // a nested bucket, not a value
        if (!f(e.key, e.value)) return;
      }
    },
  };
}

function writeTx(tx: Tx): StorageWriteTx {
  return {
    ...readTx(tx),
    createBucket(bucket) {
      tx.createBucketIfNotExists(name(bucket));
    },
    put(bucket, key, value) {
      tx.bucket(name(bucket))!.put(key, value);
    },
    delete(bucket, key) {
      tx.bucket(name(bucket))?.delete(key);
    },
  };
}

export class BboltStorage implements Storage {
  private reader: Tx;
  private defrags = 0;

  private constructor(
    private db: DB,
    readonly path: string,
    private readonly opts: OpenOptions,
  ) {
    this.reader = db.begin();
  }

  static async open(path: string, opts: OpenOptions = {}): Promise<BboltStorage> {
    // Leftovers of a defragmentation interrupted by a crash: a partial copy, or the lock of
    // a copy that had already replaced the file. Neither is ever the data.
    const dir = dirname(path);
    const prefix = `${basename(path)}.defrag.`;
    for (const name of readdirSync(dir))
      if (name.startsWith(prefix)) rmSync(join(dir, name), { force: true });
    return new BboltStorage(await DB.open(path, opts), path, opts);
  }

  /**
   * Copies every bucket into a fresh file, opens it, switches readers to it at once, then
   * closes the old file and moves the new one into its place (open descriptors follow a
   * rename). The caller guarantees no commit runs meanwhile (BufferedBackend.exclusive).
   * Until the next restart the open file's lock is `<db>.defrag.N.lock`.
   */
  async defragment(onProgress?: (p: { bytesCopied: number; keysCopied: number }) => void): Promise<void> {
    const tmp = `${this.path}.defrag.${process.pid}.${++this.defrags}`;
    await this.db.compactTo(tmp, onProgress);
    const next = await DB.open(tmp, this.opts);
    const old = this.db;
    const oldReader = this.reader;
    this.db = next;
    this.reader = next.begin();
    oldReader.rollback();
    await old.close();
    renameSync(tmp, this.path);
  }

  view<T>(f: (tx: StorageReadTx) => T): T {
    return f(readTx(this.reader));
  }

  async update(f: (tx: StorageWriteTx) => void): Promise<void> {
    await this.db.update((tx) => f(writeTx(tx)));
    // Readers move to the new state; the old snapshot's pages become reusable.
    const old = this.reader;
    this.reader = this.db.begin();
    old.rollback();
  }

  /** Closes the file, writes `data` (a whole bbolt file) in its place, durably, and reopens it. */
  async replaceWith(data: Uint8Array): Promise<void> {
    this.reader.rollback();
    await this.db.close();
    const tmp = `${this.path}.install`;
    const fd = openSync(tmp, "w");
    try {
      writeSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    this.db = await DB.open(this.path, this.opts);
    this.reader = this.db.begin();
  }

  /**
   * Closes the file, renames `path` (a whole bbolt file, fsynced, in the same directory)
   * over it, and reopens it. Opening checks the meta pages: a file that is not a valid
   * bbolt file is refused there.
   */
  async replaceWithFile(path: string): Promise<void> {
    this.reader.rollback();
    await this.db.close();
    renameSync(path, this.path);
    const dir = openSync(dirname(this.path), "r");
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    this.db = await DB.open(this.path, this.opts);
    this.reader = this.db.begin();
  }

  snapshotTo(path: string): Promise<{ bytes: number }> {
    return this.db.copyTo(path);
  }

  sizeBytes(): number {
    return this.db.stats().fileSizeBytes;
  }

  async close(): Promise<void> {
    this.reader.rollback();
    await this.db.close();
  }
}
