// The storage engine: bbolt's on-disk format (version 2), byte for byte, so the registry's
// data file is an etcd backend file. Pure parts (pages, meta, freelist, nodes, buckets,
// cursors, transactions, check) are in ./core; the shell (./db.ts) owns the file, the page
// cache, the lock file and the commit I/O.
//
//   const db = await DB.open(path);                          // exclusive (<path>.lock)
//   await db.update((tx) => tx.createBucketIfNotExists(k).put(key, value));  // one writer
//   const v = await db.view((tx) => tx.bucket(k)?.get(key)); // snapshot readers
//   await db.batch((tx) => ...);                             // coalesced small updates
//   for (const e of bucket.prefix(p)) ...; bucket.range(start, end); bucket.cursor()
//   await db.check(); db.stats(); await db.compactTo(dst, onProgress); await db.copyTo(dst);
//
// Bytes returned by get/cursors are views of cached pages: valid after the transaction
// (pages are never mutated in place) but read-only, as in bbolt.
export * from "./core/index.js";
export { DB, type DbStats, growSize, type OpenOptions } from "./db.js";
export { PageCache } from "./page-cache.js";
