// The storage engine's shell: the file, the page cache, the lock, the writer queue and
// the commit I/O. Every decision (B+tree, freelist, meta, check) is in ./core.
//
// Commit order (bbolt tx.Commit): rebalance, spill, free the old freelist, write the new one
// (core: Tx.prepareCommit), grow the file, write dirty pages, fdatasync, [verify], write the
// meta page at txid % 2, fdatasync. A crash before the second fdatasync leaves the previous
// meta in charge; a torn meta fails its checksum and open falls back to the other one.
import { defaultFileSystem, type FileHandle, type FileSystem } from "../io/index.js";
import type { Bucket } from "./core/bucket.js";
import { type CheckResult, checkSnapshot } from "./core/check.js";
import {
  BATCH_DELAY_MS,
  BATCH_SIZE_MAX,
  COMPACT_TX_BYTES_MAX,
  DEFAULT_PAGE_SIZE_BYTES,
  GROW_MIN_BYTES,
  GROW_STEP_BYTES,
  LEAF_PAGE_FLAG,
  MAX_PAGE_SIZE_BYTES,
  MIN_PAGE_SIZE_BYTES,
  PAGE_CACHE_BYTES_MAX,
  PAGE_HEADER_SIZE,
  PGID_NO_FREELIST,
  SLAB_BYTES,
  SLAB_POOL_BYTES_MAX,
} from "./core/constants.js";
import {
  ErrCorrupt,
  ErrDatabaseNotOpen,
  ErrDatabaseReadOnly,
  ErrFailed,
  ErrInvalid,
  ErrInvalidPageSize,
  type StorageError,
} from "./core/errors.js";
import { Freelist } from "./core/freelist.js";
import {
  copyMeta,
  decodeMeta,
  encodeMeta,
  isValidPageSize,
  type Meta,
  newMeta,
  validateMeta,
} from "./core/meta.js";
import { pageFlags, pageId, pageOverflow } from "./core/page.js";
import { Tx, type TxHost } from "./core/tx.js";
import type { Pgid, Txid } from "./core/types.js";
import { acquireLock, type LockHandle } from "./lock.js";
import { PageCache } from "./page-cache.js";

export type OpenOptions = {
  /** File layer (default: the process's, see io/index.ts). */
  fs?: FileSystem;
  /** Page size of a new file (default 4096); an existing file keeps its own. */
  pageSize?: number;
  readOnly?: boolean;
  /** Skip fsync (bbolt NoSync): only for tests and bulk loads that can be redone. */
  noSync?: boolean;
  /** Run check() on every commit before its meta is written (default: REGMESH_STORAGE_VERIFY=1). */
  verify?: boolean;
  /** Page cache limit in bytes (default PAGE_CACHE_BYTES_MAX). */
  cacheBytesMax?: number;
  /** Where operational log lines go (default console.warn). */
  log?: (msg: string) => void;
};

export type DbStats = {
  pageSize: number;
  txid: Txid;
  highWaterPgid: Pgid;
  fileSizeBytes: number;
  freePages: number;
  pendingPages: number;
  openReadTxs: number;
  /** Bytes below the high-water mark (etcd's dbSize counts the file; this is bbolt tx.Size()). */
  sizeBytes: number;
  /** sizeBytes minus free and pending pages (etcd's dbSizeInUse). */
  sizeInUseBytes: number;
  cacheBytes: number;
  cacheHits: number;
  cacheMisses: number;
  commits: number;
};

type BatchCall = { fn: (tx: Tx) => unknown; resolve: () => void; reject: (err: unknown) => void };

export class DB implements TxHost {
  readonly path: string;
  pageSize: number;
  freelist = new Freelist();
  private meta!: Meta;
  private file: FileHandle;
  private fileSize: number;
  private readonly cache: PageCache;
  private readonly readers = new Map<Txid, number>();
  private writerTail: Promise<void> = Promise.resolve();
  private writerRelease: (() => void) | null = null;
  private writer: Tx | null = null;
  private freelistBackup: Freelist | null = null;
  private opened = true;
  private commits = 0;
  private batchCalls: BatchCall[] = [];
  private batchTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly slabPool: Uint8Array[] = [];
  /** Set when a commit failed after its I/O began: the file may hold that commit's meta. */
  private failure: unknown = null;

  private constructor(
    readonly fs: FileSystem,
    path: string,
    file: FileHandle,
    private readonly lock: LockHandle | null,
    private readonly opts: OpenOptions,
  ) {
    this.path = path;
    this.file = file;
    this.fileSize = file.size();
    this.pageSize = opts.pageSize ?? DEFAULT_PAGE_SIZE_BYTES;
    this.cache = new PageCache(opts.cacheBytesMax ?? PAGE_CACHE_BYTES_MAX);
  }

  static async open(path: string, opts: OpenOptions = {}): Promise<DB> {
    const fs = opts.fs ?? defaultFileSystem();
    const log = opts.log ?? ((m: string) => console.warn(m));
    if (opts.pageSize !== undefined && !isValidPageSize(opts.pageSize)) {
      throw new ErrInvalidPageSize(
        `${opts.pageSize}: want a power of two in [${MIN_PAGE_SIZE_BYTES}, ${MAX_PAGE_SIZE_BYTES}]`,
      );
    }
    const lock = opts.readOnly ? null : acquireLock(fs, `${path}.lock`, log);
    let file: FileHandle | null = null;
    try {
      file = fs.open(path, opts.readOnly ? { readOnly: true } : { create: true });
      const db = new DB(fs, path, file, lock, { ...opts, log });
      if (db.fileSize === 0) {
        if (opts.readOnly) throw new ErrInvalid("empty file");
        db.init();
      }
      db.load();
      return db;
    } catch (err) {
      file?.close();
      lock?.release();
      throw err;
    }
  }

  /** A new file: two metas, an empty freelist (page 2) and an empty root leaf (page 3). */
  private init(): void {
    const ps = this.pageSize;
    const buf = new Uint8Array(ps * 4);
    for (let i = 0; i < 2; i++) encodeMeta(buf.subarray(ps * i, ps * (i + 1)), newMeta(ps, i));
    const fl = buf.subarray(ps * 2);
    fl[0] = 2;
    new Freelist().write(fl);
    const leaf = buf.subarray(ps * 3);
    leaf[0] = 3;
    leaf[8] = LEAF_PAGE_FLAG;
    this.file.write(buf, 0);
    this.file.sync();
    this.fileSize = this.file.size();
  }

  /** Picks the page size and the newest valid meta, then loads the freelist. */
  private load(): void {
    const head = new Uint8Array(PAGE_HEADER_SIZE + 64);
    if (this.file.read(head, 0) < head.length) throw new ErrInvalid("file too small");
    const m0 = decodeMeta(head);
    const firstErr: StorageError | null = validateMeta(head, m0);
    let pageSize = firstErr ? 0 : m0.pageSize;
    if (!pageSize) {
      // Meta 0 is torn or invalid: find meta 1 at every possible page size (bbolt does too).
      for (let ps = MIN_PAGE_SIZE_BYTES; ps <= MAX_PAGE_SIZE_BYTES; ps *= 2) {
        const b = new Uint8Array(head.length);
        if (this.file.read(b, ps) < b.length) break;
        const m1 = decodeMeta(b);
        if (!validateMeta(b, m1) && m1.pageSize === ps) {
          pageSize = ps;
          break;
        }
      }
      if (!pageSize) throw firstErr!;
    }
    this.pageSize = pageSize;
    const metas: { meta: Meta; err: StorageError | null }[] = [];
    for (let i = 0; i < 2; i++) {
      const b = new Uint8Array(pageSize);
      this.file.read(b, i * pageSize);
      const meta = decodeMeta(b);
      let err = validateMeta(b, meta);
      if (!err && meta.pageSize !== pageSize) err = new ErrInvalid("meta page sizes differ");
      if (!err && (meta.root.root >= meta.pgid || meta.freelist >= meta.pgid))
        err = new ErrInvalid("meta out of bounds");
      if (!err && meta.pgid * pageSize > this.fileSize)
        err = new ErrInvalid("file shorter than its high water mark");
      metas.push({ meta, err });
    }
    metas.sort((a, b) => (b.meta.txid || 0) - (a.meta.txid || 0));
    const good = metas.find((m) => !m.err);
    if (!good) throw metas[0]!.err ?? firstErr ?? new ErrInvalid();
    this.meta = good.meta;
    this.freelist = new Freelist();
    if (this.meta.freelist === PGID_NO_FREELIST) this.freelist.readIds(this.unreachablePages());
    else this.freelist.read(this.readPage(this.meta.freelist));
  }

  /**
   * Pages below the high-water mark that no bucket reaches: the freelist of a file written
   * with NoFreelistSync (etcd's default). Walks every page, as bbolt does on such an open.
   */
  private unreachablePages(): Pgid[] {
    const used = new Set<Pgid>([0, 1]);
    const tx = new Tx(this, this.meta, false);
    const walk = (b: Bucket) => {
      b.forEachPageNode((page) => {
        if (!page || b.root === 0) return;
        const id = pageId(page);
        for (let i = 0; i <= pageOverflow(page); i++) used.add(id + i);
      });
      const c = b.cursor();
      for (let e = c.first(); e; e = c.next()) {
        if (e.value === null) walk(b.bucket(e.key)!);
      }
    };
    walk(tx.root);
    const free: Pgid[] = [];
    for (let i = 2; i < this.meta.pgid; i++) if (!used.has(i)) free.push(i);
    return free;
  }

  private checkOpen(): void {
    if (!this.opened) throw new ErrDatabaseNotOpen();
  }

  /** @internal TxHost: a committed page with its overflow, through the cache. */
  readPage(id: Pgid): Uint8Array {
    const hit = this.cache.get(id);
    if (hit) return hit;
    this.checkOpen();
    const ps = this.pageSize;
    let buf = new Uint8Array(ps);
    if (this.file.read(buf, id * ps) < ps) throw new ErrInvalid(`page ${id} beyond the end of the file`);
    const overflow = pageOverflow(buf);
    if (overflow > 0) {
      const big = new Uint8Array((overflow + 1) * ps);
      big.set(buf);
      const want = overflow * ps;
      if (this.file.read(big.subarray(ps), (id + 1) * ps) < want)
        throw new ErrInvalid(`page ${id} overflow beyond the end of the file`);
      buf = big;
    }
    // Meta pages 0 and 1 carry their id too; a mismatch means a torn or misplaced page.
    if (pageId(buf) !== id)
      throw new ErrInvalid(`page ${id} has id ${pageId(buf)} (flags ${pageFlags(buf)})`);
    this.cache.put(id, buf);
    return buf;
  }

  /** A read transaction on the last committed state. End it with tx.rollback(). */
  begin(): Tx {
    this.checkOpen();
    const tx = new Tx(this, this.meta, false);
    this.readers.set(tx.id, (this.readers.get(tx.id) ?? 0) + 1);
    return tx;
  }

  /** The write transaction (one at a time; waits for the previous one). */
  async beginWrite(): Promise<Tx> {
    this.checkOpen();
    if (this.opts.readOnly) throw new ErrDatabaseReadOnly();
    if (this.failure) throw new ErrFailed(String(this.failure));
    await this.lockWriter();
    try {
      this.checkOpen();
    } catch (err) {
      this.unlockWriter();
      throw err;
    }
    // Pages freed by tx N are reusable once no reader has a txid < N (bbolt db.freePages).
    let minReader = Number.POSITIVE_INFINITY;
    for (const t of this.readers.keys()) if (t < minReader) minReader = t;
    this.freelist.release(minReader === Number.POSITIVE_INFINITY ? this.meta.txid : minReader - 1);
    this.freelistBackup = this.freelist.clone();
    const tx = new Tx(this, this.meta, true);
    this.writer = tx;
    return tx;
  }

  private async lockWriter(): Promise<void> {
    const prev = this.writerTail;
    let release!: () => void;
    this.writerTail = new Promise<void>((r) => (release = r));
    await prev;
    this.writerRelease = release;
  }

  private unlockWriter(): void {
    const r = this.writerRelease;
    this.writerRelease = null;
    r?.();
  }

  /** @internal TxHost: a slab for dirty pages (the transaction zeroes the pages it cuts). */
  takeSlab(): Uint8Array {
    return this.slabPool.pop() ?? new Uint8Array(SLAB_BYTES);
  }

  /** Takes back a finished write transaction's slabs: nothing refers to them any more. */
  private recycleSlabs(tx: Tx): void {
    for (const slab of tx.slabs.splice(0)) {
      if ((this.slabPool.length + 1) * SLAB_BYTES <= SLAB_POOL_BYTES_MAX) this.slabPool.push(slab);
    }
    tx.pages.clear();
  }

  /** @internal TxHost */
  release(tx: Tx): void {
    if (!tx.writable) {
      const n = (this.readers.get(tx.id) ?? 1) - 1;
      if (n <= 0) this.readers.delete(tx.id);
      else this.readers.set(tx.id, n);
      return;
    }
    if (this.writer !== tx) return;
    this.recycleSlabs(tx);
    // Rollback: the freelist goes back to what it was; nothing was written.
    this.freelist = this.freelistBackup!;
    this.freelistBackup = null;
    this.writer = null;
    this.unlockWriter();
  }

  /** @internal TxHost: the commit I/O. */
  async commit(tx: Tx): Promise<void> {
    if (this.writer !== tx) throw new ErrDatabaseNotOpen("not the current writer");
    let ioStarted = false;
    try {
      const plan = tx.prepareCommit();
      ioStarted = true;
      const ps = this.pageSize;
      const need = plan.meta.pgid * ps;
      if (need > this.fileSize) {
        const size = growSize(this.fileSize, need);
        this.file.truncate(size);
        this.fileSize = size;
      }
      this.writePages(plan.pages);
      if (!this.opts.noSync) await this.file.datasyncAsync();
      if (this.opts.verify ?? process.env.REGMESH_STORAGE_VERIFY === "1") {
        const dirty = new Map(plan.pages.map((p) => [p.id, p.buf] as const));
        const result = checkSnapshot(
          plan.meta,
          (id) => dirty.get(id) ?? this.readPage(id),
          this.freelist.all(),
        );
        if (result.errors.length > 0) throw new ErrCorrupt(result.errors.slice(0, 20).join("; "));
      }
      this.file.write(plan.metaPage, (plan.meta.txid % 2) * ps);
      if (!this.opts.noSync) await this.file.datasyncAsync();
      // The written pages go to the cache as they are (views into the commit's slabs, which
      // the cache counts in full while any page of them is cached; see page-cache.ts).
      for (const p of plan.pages) this.cache.put(p.id, p.buf);
      tx.slabs.length = 0;
      tx.pages.clear();
      this.meta = plan.meta;
      this.commits++;
      tx.closed = true;
      this.freelistBackup = null;
      this.writer = null;
      this.unlockWriter();
    } catch (err) {
      // After a failed write or fsync the disk may hold this commit's meta while memory does
      // not, and reusing its pages could then corrupt it: refuse further writes (etcd panics
      // on a failed fsync; a reopen reads whichever meta is valid). Reads stay possible.
      if (ioStarted && !(err instanceof ErrCorrupt)) this.failure = err;
      tx.closed = true;
      this.release(tx);
      throw err;
    }
  }

  /**
   * Writes dirty pages; runs of consecutive page ids go out as one write. Pages cut one
   * after the other from the same slab (the usual case when the file grows) are already
   * adjacent in memory and are written without a copy.
   */
  private writePages(pages: { id: Pgid; buf: Uint8Array }[]): void {
    const ps = this.pageSize;
    let i = 0;
    while (i < pages.length) {
      const first = pages[i]!;
      let j = i + 1;
      let end = first.id + first.buf.length / ps;
      let adjacent = true;
      while (j < pages.length && pages[j]!.id === end) {
        const prev = pages[j - 1]!.buf;
        const cur = pages[j]!.buf;
        adjacent &&= cur.buffer === prev.buffer && cur.byteOffset === prev.byteOffset + prev.length;
        end += cur.length / ps;
        j++;
      }
      if (j === i + 1) this.file.write(first.buf, first.id * ps);
      else if (adjacent) {
        this.file.write(
          new Uint8Array(first.buf.buffer, first.buf.byteOffset, (end - first.id) * ps),
          first.id * ps,
        );
      } else {
        const run = new Uint8Array((end - first.id) * ps);
        let off = 0;
        for (let k = i; k < j; k++) {
          run.set(pages[k]!.buf, off);
          off += pages[k]!.buf.length;
        }
        this.file.write(run, first.id * ps);
      }
      i = j;
    }
  }

  /** Runs fn in a read transaction on a consistent snapshot. */
  async view<T>(fn: (tx: Tx) => T | Promise<T>): Promise<T> {
    const tx = this.begin();
    try {
      return await fn(tx);
    } finally {
      tx.rollback();
    }
  }

  /** Runs fn in the write transaction and commits it; a throw rolls back. */
  async update<T>(fn: (tx: Tx) => T | Promise<T>): Promise<T> {
    const tx = await this.beginWrite();
    let result: T;
    try {
      result = await fn(tx);
    } catch (err) {
      tx.rollback();
      throw err;
    }
    await tx.commit();
    return result;
  }

  /**
   * Coalesces concurrent small updates into one commit (bbolt DB.Batch): calls arriving
   * within BATCH_DELAY_MS, up to BATCH_SIZE_MAX, share a transaction. A call that throws is
   * taken out and rerun alone, so it fails by itself; fn may therefore run more than once.
   */
  batch(fn: (tx: Tx) => unknown): Promise<void> {
    this.checkOpen();
    return new Promise<void>((resolve, reject) => {
      this.batchCalls.push({ fn, resolve, reject });
      if (this.batchCalls.length >= BATCH_SIZE_MAX) void this.runBatch();
      else if (!this.batchTimer) this.batchTimer = setTimeout(() => void this.runBatch(), BATCH_DELAY_MS);
    });
  }

  private async runBatch(): Promise<void> {
    if (this.batchTimer) clearTimeout(this.batchTimer);
    this.batchTimer = null;
    const calls = this.batchCalls;
    this.batchCalls = [];
    while (calls.length > 0) {
      let failed = -1;
      try {
        await this.update(async (tx) => {
          for (let i = 0; i < calls.length; i++) {
            failed = i;
            await calls[i]!.fn(tx);
          }
          failed = -1;
        });
        for (const c of calls) c.resolve();
        return;
      } catch (err) {
        if (failed < 0) {
          for (const c of calls) c.reject(err);
          return;
        }
        const [solo] = calls.splice(failed, 1);
        this.update(solo!.fn).then(solo!.resolve, solo!.reject);
      }
    }
  }

  /** bbolt Tx.Check on the last committed state: every page reachable once or free, keys ordered. */
  async check(): Promise<CheckResult> {
    this.checkOpen();
    await this.lockWriter();
    try {
      return checkSnapshot(this.meta, (id) => this.readPage(id), this.freelist.all());
    } finally {
      this.unlockWriter();
    }
  }

  stats(): DbStats {
    return {
      pageSize: this.pageSize,
      txid: this.meta.txid,
      highWaterPgid: this.meta.pgid,
      fileSizeBytes: this.fileSize,
      freePages: this.freelist.freeCount(),
      pendingPages: this.freelist.pendingCount(),
      openReadTxs: [...this.readers.values()].reduce((a, b) => a + b, 0),
      sizeBytes: this.meta.pgid * this.pageSize,
      sizeInUseBytes: (this.meta.pgid - this.freelist.count()) * this.pageSize,
      cacheBytes: this.cache.size,
      cacheHits: this.cache.hits,
      cacheMisses: this.cache.misses,
      commits: this.commits,
    };
  }

  /**
   * Writes a consistent copy of the last committed state to a new file (bbolt Tx.WriteTo):
   * both meta pages from the snapshot's meta (txid, and txid - 1 in page 1), then the file
   * from page 2 to the high-water mark, read under a read transaction so no page it can
   * reach is reused meanwhile. Free pages may hold anything. This is what a Raft snapshot
   * or the Maintenance.Snapshot stream sends; writers keep committing while it runs.
   */
  async copyTo(
    dstPath: string,
    opts: { fs?: FileSystem; chunkBytes?: number } = {},
  ): Promise<{ bytes: number }> {
    const tx = this.begin();
    const fs = opts.fs ?? this.fs;
    let out: FileHandle | null = null;
    try {
      out = fs.open(dstPath, { create: true, exclusive: true });
      const ps = this.pageSize;
      for (let i = 0; i < 2; i++) {
        const page = new Uint8Array(ps);
        encodeMeta(page, { ...tx.meta, root: { ...tx.meta.root }, txid: tx.meta.txid - i });
        page.fill(0, 0, 8);
        page[0] = i; // bbolt writes page ids 0 and 1 whatever the txids are
        out.write(page, i * ps);
      }
      const end = tx.meta.pgid * ps;
      const chunk = Math.max(ps, Math.floor((opts.chunkBytes ?? 1 << 20) / ps) * ps);
      const buf = new Uint8Array(chunk);
      for (let off = 2 * ps; off < end; off += chunk) {
        const n = Math.min(chunk, end - off);
        const view = buf.subarray(0, n);
        this.checkOpen();
        if (this.file.read(view, off) < n)
          throw new ErrInvalid(`file shorter than its high water mark at ${off}`);
        out.write(view, off);
        // Let the event loop (and writers) run between chunks.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      await out.syncAsync();
      return { bytes: end };
    } finally {
      out?.close();
      tx.rollback();
    }
  }

  /** A copy of the committed meta (for tests and tools). */
  currentMeta(): Meta {
    return copyMeta(this.meta);
  }

  /**
   * Copies every bucket, key and sequence into a new file at `dstPath` (bbolt compact.go),
   * committing every COMPACT_TX_BYTES_MAX bytes; the copy has no free pages. This is what
   * defragment calls; the caller swaps the files.
   */
  async compactTo(
    dstPath: string,
    onProgress?: (p: { bytesCopied: number; keysCopied: number }) => void,
    opts: { fs?: FileSystem; txBytesMax?: number } = {},
  ): Promise<void> {
    const dst = await DB.open(dstPath, {
      fs: opts.fs ?? this.fs,
      pageSize: this.pageSize,
      log: this.opts.log,
    });
    const txBytesMax = opts.txBytesMax ?? COMPACT_TX_BYTES_MAX;
    const src = this.begin();
    let out = await dst.beginWrite();
    let bytesInTx = 0;
    let bytesCopied = 0;
    let keysCopied = 0;
    try {
      const resolve = (path: Uint8Array[]): Bucket => {
        let b: Bucket = out.root;
        for (const name of path) b = b.bucket(name)!;
        return b;
      };
      const copy = async (from: Bucket, path: Uint8Array[]): Promise<void> => {
        const c = from.cursor();
        for (let e = c.first(); e; e = c.next()) {
          if (bytesInTx >= txBytesMax) {
            await out.commit();
            onProgress?.({ bytesCopied, keysCopied });
            out = await dst.beginWrite();
            bytesInTx = 0;
          }
          const into = resolve(path);
          if (e.value === null) {
            const child = from.bucket(e.key)!;
            const made = into.createBucket(e.key);
            if (child.sequence !== 0n) made.setSequence(child.sequence);
            await copy(child, [...path, e.key]);
          } else {
            into.put(e.key, e.value);
            keysCopied++;
            bytesInTx += e.key.length + e.value.length;
            bytesCopied += e.key.length + e.value.length;
          }
        }
      };
      await copy(src.root, []);
      await out.commit();
      onProgress?.({ bytesCopied, keysCopied });
    } catch (err) {
      out.rollback();
      throw err;
    } finally {
      src.rollback();
      await dst.close();
    }
  }

  /** Closes the file and releases the lock; waits for the writer. Open read txs end with it. */
  async close(): Promise<void> {
    if (!this.opened) return;
    if (this.batchCalls.length > 0) await this.runBatch();
    await this.lockWriter();
    this.opened = false;
    this.cache.clear();
    try {
      this.file.close();
    } finally {
      this.unlockWriter();
      this.lock?.release();
    }
  }
}

/** File growth: double from GROW_MIN_BYTES up to GROW_STEP_BYTES, then add GROW_STEP_BYTES. */
export function growSize(current: number, need: number): number {
  let s = Math.max(current, GROW_MIN_BYTES);
  while (s < need) s = s < GROW_STEP_BYTES ? s * 2 : s + GROW_STEP_BYTES;
  return s;
}
