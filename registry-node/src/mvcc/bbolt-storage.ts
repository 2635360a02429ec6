// mvcc's Storage over the bbolt-format engine (../storage): the registry's data file,
// <data-dir>/member/snap/db as in etcd, readable by etcd and bbolt themselves.
//
// Reads use one long-lived read transaction, renewed after each commit, rather than a
// new one per get: a read transaction is cheap but not free, and the buffered backend
// reads through here for every value it does not hold itself.

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

  private constructor(readonly db: DB) {
    this.reader = db.begin();
  }

  static async open(path: string, opts: OpenOptions = {}): Promise<BboltStorage> {
    return new BboltStorage(await DB.open(path, opts));
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
