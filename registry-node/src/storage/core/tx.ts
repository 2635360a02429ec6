// bbolt's transaction (tx.go), minus the I/O: a read transaction is a meta snapshot plus a
// page source; a write transaction also allocates pages and, at commit, turns its dirty
// nodes into a CommitPlan (dirty pages + the new meta) that the shell writes in order:
// pages, fsync, meta, fsync.

import { Bucket } from "./bucket.js";
import { put32, put64 } from "./bytes.js";
import { META_SIZE, PAGE_HEADER_SIZE, PGID_NO_FREELIST, SLAB_BYTES } from "./constants.js";
import type { Cursor } from "./cursor.js";
import { ErrTxClosed, ErrTxNotWritable } from "./errors.js";
import type { Freelist } from "./freelist.js";
import { copyMeta, encodeMeta, type Meta } from "./meta.js";
import { pageOverflow } from "./page.js";
import { assert, type Pgid } from "./types.js";

/** What a transaction needs from its database. */
export interface TxHost {
  readonly pageSize: number;
  /** A committed page with its overflow pages (starting at the page header). */
  readPage(id: Pgid): Uint8Array;
  /** The database freelist: write transactions allocate from and free into it. */
  readonly freelist: Freelist;
  /** Writes a write transaction's plan (the shell's I/O) and closes it. */
  commit(tx: Tx): Promise<void>;
  /** Closes a transaction without committing it. */
  release(tx: Tx): void;
  /**
   * A slab of SLAB_BYTES for dirty pages (the shell pools them). Its contents are whatever a
   * previous transaction left: each page is zeroed as it is cut from it (allocate).
   */
  takeSlab?(): Uint8Array;
}

/** Everything the shell must write for a commit, in order. */
export type CommitPlan = {
  /** Dirty pages sorted by id; each buffer spans the page and its overflow. */
  pages: { id: Pgid; buf: Uint8Array }[];
  /** The meta page (one page), to write at offset meta.txid % 2 * pageSize after the pages are durable. */
  metaPage: Uint8Array;
  meta: Meta;
};

export class Tx {
  closed = false;
  readonly meta: Meta;
  readonly root: Bucket;
  readonly pageSize: number;
  /** Pages allocated by this write transaction. */
  readonly pages = new Map<Pgid, Uint8Array>();
  /** Dirty pages are cut from slabs: one allocation per ~1 MiB instead of one per page. */
  private slab: Uint8Array = new Uint8Array(0);
  private slabUsed = 0;
  /** Slabs this transaction cut pages from: the shell takes them back once the pages are written. */
  readonly slabs: Uint8Array[] = [];

  constructor(
    readonly host: TxHost,
    meta: Meta,
    readonly writable: boolean,
  ) {
    this.meta = copyMeta(meta);
    // A writer commits the next txid (bbolt beginRWTx: tx.meta.txid += 1).
    if (writable) this.meta.txid += 1;
    this.pageSize = host.pageSize;
    this.root = new Bucket(this);
    this.root.root = this.meta.root.root;
    this.root.sequence = this.meta.root.sequence;
  }

  get id(): number {
    return this.meta.txid;
  }

  get freelist(): Freelist {
    return this.host.freelist;
  }

  checkOpen(): void {
    if (this.closed) throw new ErrTxClosed();
  }

  page(id: Pgid): Uint8Array {
    const dirty = this.pages.get(id);
    if (dirty) return dirty;
    if (id >= this.meta.pgid)
      assert(false, () => `page ${id} at or above the high water mark ${this.meta.pgid}`);
    return this.host.readPage(id);
  }

  /** Allocates `count` contiguous pages from the freelist or the end of the file. */
  allocate(count: number): { id: Pgid; buf: Uint8Array } {
    let id = this.freelist.allocate(count);
    if (id === 0) {
      id = this.meta.pgid;
      this.meta.pgid += count;
    }
    const bytes = count * this.pageSize;
    let buf: Uint8Array;
    if (bytes >= SLAB_BYTES / 4) buf = new Uint8Array(bytes);
    else {
      if (this.slabUsed + bytes > this.slab.length) {
        this.slab = this.host.takeSlab ? this.host.takeSlab() : new Uint8Array(SLAB_BYTES);
        assert(this.slab.length === SLAB_BYTES, "slab of the wrong size");
        this.slabs.push(this.slab);
        this.slabUsed = 0;
      }
      buf = this.slab.subarray(this.slabUsed, this.slabUsed + bytes);
      // Zeroing only what is cut, not the whole 1 MiB slab when it is taken: a commit of a
      // few pages (the usual backend batch) paid for the full slab before (profiled ~2% of
      // a one-in-flight put run, all of it inside the event loop's commit turn).
      buf.fill(0);
      this.slabUsed += bytes;
    }
    put64(buf, 0, id);
    put32(buf, 12, count - 1);
    this.pages.set(id, buf);
    return { id, buf };
  }

  bucket(name: Uint8Array): Bucket | null {
    this.checkOpen();
    return this.root.bucket(name);
  }

  createBucket(name: Uint8Array): Bucket {
    return this.root.createBucket(name);
  }

  createBucketIfNotExists(name: Uint8Array): Bucket {
    return this.root.createBucketIfNotExists(name);
  }

  deleteBucket(name: Uint8Array): void {
    this.root.deleteBucket(name);
  }

  /** A cursor over the top-level bucket names (values are null). */
  cursor(): Cursor {
    return this.root.cursor();
  }

  /** Commits a write transaction: prepareCommit, then the shell writes pages, fsync, meta, fsync. */
  commit(): Promise<void> {
    if (this.closed) return Promise.reject(new ErrTxClosed());
    if (!this.writable) return Promise.reject(new ErrTxNotWritable());
    return this.host.commit(this);
  }

  /** Ends the transaction; a write transaction's changes are discarded and the file is untouched. */
  rollback(): void {
    if (this.closed) return;
    this.closed = true;
    this.host.release(this);
  }

  /** bbolt tx.Commit before the I/O: rebalance, spill, free the old freelist, write the new one. */
  prepareCommit(): CommitPlan {
    this.checkOpen();
    if (!this.writable) throw new ErrTxNotWritable();
    this.root.rebalance();
    this.root.spill();
    this.meta.root.root = this.root.root;
    this.meta.root.sequence = this.root.sequence;

    if (this.meta.freelist !== PGID_NO_FREELIST) {
      this.freelist.free(this.meta.txid, this.meta.freelist, pageOverflow(this.page(this.meta.freelist)));
    }
    // bbolt commitFreelist: allocating may shrink the freelist, so this can overestimate, never under.
    const { id, buf } = this.allocate(Math.floor(this.freelist.size() / this.pageSize) + 1);
    this.freelist.write(buf);
    this.meta.freelist = id;

    const ids = [...this.pages.keys()].sort((a, b) => a - b);
    const pages = ids.map((pid) => ({ id: pid, buf: this.pages.get(pid)! }));
    for (const p of pages) assert(p.id > 1 && p.id < this.meta.pgid, () => `dirty page ${p.id} out of range`);
    const metaPage = new Uint8Array(this.pageSize);
    this.meta.checksum = encodeMeta(metaPage, this.meta);
    assert(PAGE_HEADER_SIZE + META_SIZE <= this.pageSize, "meta does not fit a page");
    return { pages, metaPage, meta: copyMeta(this.meta) };
  }
}
