// bbolt's bucket (bucket.go): a B+tree of keys inside a transaction. A bucket is stored as
// a value with BUCKET_LEAF_FLAG in its parent: a 16-byte header {root pgid u64, sequence
// u64}, followed, for an inline bucket (root = 0), by the bucket's single leaf page. A bucket
// stays inline while its leaf is smaller than pageSize/4 and holds no nested bucket.
import { compareAt, equal, keyString, put64, put64big, u64, u64big } from "./bytes.js";
import {
  BUCKET_HEADER_SIZE,
  BUCKET_LEAF_FLAG,
  DEFAULT_FILL_PERCENT,
  LEAF_ELEMENT_SIZE,
  LEAF_PAGE_FLAG,
  MAX_KEY_SIZE_BYTES,
  MAX_VALUE_SIZE_BYTES,
  PAGE_HEADER_SIZE,
} from "./constants.js";
import { Cursor, type Entry } from "./cursor.js";
import {
  ErrBucketExists,
  ErrBucketNameRequired,
  ErrBucketNotFound,
  ErrIncompatibleValue,
  ErrKeyRequired,
  ErrKeyTooLarge,
  ErrTxClosed,
  ErrTxNotWritable,
  ErrValueTooLarge,
} from "./errors.js";
import { Node } from "./node.js";
import { branchPgid, leafFlags, leafValue, pageCount, pageFlags, pageOverflow } from "./page.js";
import { branchChild, branchSearch, leafFind } from "./search.js";
import type { Tx } from "./tx.js";
import { assert, type Pgid } from "./types.js";

export class Bucket {
  root: Pgid = 0;
  sequence = 0n;
  /** The inline page of an inline bucket (a view into the parent's value). */
  page: Uint8Array | null = null;
  rootNode: Node | null = null;
  /** Materialized nodes by page id (write transactions only). */
  readonly nodes = new Map<Pgid, Node>();
  /** Opened child buckets by name. */
  readonly buckets = new Map<string, Bucket>();
  /** Split threshold (bbolt Bucket.FillPercent); raise it for append-mostly loads. */
  fillPercent = DEFAULT_FILL_PERCENT;

  constructor(readonly tx: Tx) {}

  cursor(): Cursor {
    this.tx.checkOpen();
    return new Cursor(this);
  }

  /** The value of `key`, or null when absent or when it names a nested bucket. */
  get(key: Uint8Array): Uint8Array | null {
    this.tx.checkOpen();
    // Fast path for untouched trees (every read transaction): descend the pages directly,
    // without a cursor stack. Same search as Cursor.search / nsearch.
    if (this.nodes.size === 0 && this.rootNode === null) {
      const tx = this.tx;
      const host = tx.pages.size === 0 ? tx.host : null;
      let p = this.root === 0 ? this.page! : host ? host.readPage(this.root) : tx.page(this.root);
      while ((p[8]! & LEAF_PAGE_FLAG) === 0) {
        const child = branchChild(p, branchSearch(p, key));
        p = host ? host.readPage(child) : tx.page(child);
      }
      const i = leafFind(p, key);
      if (i < 0 || leafFlags(p, i) & BUCKET_LEAF_FLAG) return null;
      return leafValue(p, i);
    }
    const kv = new Cursor(this).seekRaw(key);
    if (!kv || kv.flags & BUCKET_LEAF_FLAG || !equal(kv.key, key)) return null;
    return kv.value;
  }

  put(key: Uint8Array, value: Uint8Array): void {
    this.checkWritable();
    if (key.length === 0) throw new ErrKeyRequired();
    if (key.length > MAX_KEY_SIZE_BYTES) throw new ErrKeyTooLarge();
    if (value.length > MAX_VALUE_SIZE_BYTES) throw new ErrValueTooLarge();
    const c = new Cursor(this);
    const flags = c.seekExact(key);
    if (flags >= 0 && flags & BUCKET_LEAF_FLAG) throw new ErrIncompatibleValue();
    // Copies: the caller may reuse its buffers before the commit writes them.
    const k = key.slice();
    c.node().put(k, k, value.slice(), 0, 0);
  }

  delete(key: Uint8Array): void {
    this.checkWritable();
    const c = new Cursor(this);
    const flags = c.seekExact(key);
    if (flags < 0) return;
    if (flags & BUCKET_LEAF_FLAG) throw new ErrIncompatibleValue();
    c.node().del(key);
  }

  /** The nested bucket `name`, or null. */
  bucket(name: Uint8Array): Bucket | null {
    const cached = this.buckets.get(keyString(name));
    if (cached) return cached;
    const kv = new Cursor(this).seekRaw(name);
    if (!kv || !equal(kv.key, name) || (kv.flags & BUCKET_LEAF_FLAG) === 0) return null;
    const child = this.openBucket(kv.value);
    this.buckets.set(keyString(name), child);
    return child;
  }

  private openBucket(value: Uint8Array): Bucket {
    const child = new Bucket(this.tx);
    assert(value.length >= BUCKET_HEADER_SIZE, "bucket value shorter than its header");
    child.root = u64(value, 0);
    child.sequence = u64big(value, 8);
    if (child.root === 0) child.page = value.subarray(BUCKET_HEADER_SIZE);
    return child;
  }

  createBucket(name: Uint8Array): Bucket {
    this.checkWritable();
    if (name.length === 0) throw new ErrBucketNameRequired();
    if (name.length > MAX_KEY_SIZE_BYTES) throw new ErrKeyTooLarge();
    const c = new Cursor(this);
    const kv = c.seekRaw(name);
    if (kv && equal(kv.key, name)) {
      if (kv.flags & BUCKET_LEAF_FLAG) throw new ErrBucketExists();
      throw new ErrIncompatibleValue();
    }
    const fresh = new Bucket(this.tx);
    fresh.rootNode = new Node(fresh, null);
    fresh.rootNode.isLeaf = true;
    const value = fresh.writeInline();
    const k = name.slice();
    c.node().put(k, k, value, 0, BUCKET_LEAF_FLAG);
    // A bucket with a sub-bucket cannot stay inline: drop the inline page so the rest of the
    // transaction treats this bucket as a regular one (bbolt does the same).
    this.page = null;
    return this.bucket(name)!;
  }

  createBucketIfNotExists(name: Uint8Array): Bucket {
    try {
      return this.createBucket(name);
    } catch (err) {
      if (err instanceof ErrBucketExists) return this.bucket(name)!;
      throw err;
    }
  }

  deleteBucket(name: Uint8Array): void {
    this.checkWritable();
    const c = new Cursor(this);
    const kv = c.seekRaw(name);
    if (!kv || !equal(kv.key, name)) throw new ErrBucketNotFound();
    if ((kv.flags & BUCKET_LEAF_FLAG) === 0) throw new ErrIncompatibleValue();
    const child = this.bucket(name)!;
    // Nested buckets first, so their pages are freed too.
    const names: Uint8Array[] = [];
    child.forEachRaw((k, flags) => {
      if (flags & BUCKET_LEAF_FLAG) names.push(k);
    });
    for (const n of names) child.deleteBucket(n);
    this.buckets.delete(keyString(name));
    child.nodes.clear();
    child.rootNode = null;
    child.free();
    c.node().del(name);
  }

  /** bbolt Bucket.Sequence. */
  getSequence(): bigint {
    return this.sequence;
  }

  setSequence(v: bigint): void {
    this.checkWritable();
    // Materialize the root so the bucket is written at commit.
    if (!this.rootNode) this.node(this.root, null);
    this.sequence = BigInt.asUintN(64, v);
  }

  nextSequence(): bigint {
    this.checkWritable();
    if (!this.rootNode) this.node(this.root, null);
    this.sequence = BigInt.asUintN(64, this.sequence + 1n);
    return this.sequence;
  }

  /** Calls fn for every entry in key order; value is null for nested buckets. */
  forEach(fn: (key: Uint8Array, value: Uint8Array | null) => void): void {
    const c = this.cursor();
    for (let e: Entry | null = c.first(); e; e = c.next()) fn(e.key, e.value);
  }

  /**
   * Entries with start <= key < end, in key order (end null: to the last key). A generator:
   * stop early by breaking out of the loop. Valid while the transaction is open.
   */
  *range(start: Uint8Array, end: Uint8Array | null): Generator<Entry> {
    const c = this.cursor();
    for (let e = c.seek(start); e; e = c.next()) {
      if (end && compareAt(e.key, end, 0, end.length) >= 0) return;
      yield e;
    }
  }

  /** Entries whose key starts with `prefix`, in key order. */
  *prefix(prefix: Uint8Array): Generator<Entry> {
    const c = this.cursor();
    for (let e = c.seek(prefix); e; e = c.next()) {
      if (e.key.length < prefix.length || compareAt(prefix, e.key, 0, prefix.length) !== 0) return;
      yield e;
    }
  }

  private forEachRaw(fn: (key: Uint8Array, flags: number) => void): void {
    const c = new Cursor(this);
    const first = c.first();
    if (!first) return;
    let raw = c.keyValue();
    while (raw) {
      fn(raw.key, raw.flags);
      raw = c.goNext();
    }
  }

  private checkWritable(): void {
    if (this.tx.closed) throw new ErrTxClosed();
    if (!this.tx.writable) throw new ErrTxNotWritable();
  }

  /** @internal The page or node for pgid (bbolt Bucket.pageNode). */
  pageNode(id: Pgid): { page: Uint8Array | null; node: Node | null } {
    if (this.root === 0) {
      assert(id === 0, () => `inline bucket non-zero page access(2): ${id} != 0`);
      if (this.rootNode) return { page: null, node: this.rootNode };
      return { page: this.page, node: null };
    }
    const n = this.nodes.get(id);
    if (n) return { page: null, node: n };
    return { page: this.tx.page(id), node: null };
  }

  /** @internal Materializes the node for pgid under parent (bbolt Bucket.node). */
  node(id: Pgid, parent: Node | null): Node {
    assert(this.tx.writable, "tx must be writable to materialize nodes");
    const cached = this.nodes.get(id);
    if (cached) return cached;
    const n = new Node(this, parent);
    if (!parent) this.rootNode = n;
    else parent.children.push(n);
    const p = this.page ?? this.tx.page(id);
    n.read(p);
    this.nodes.set(id, n);
    return n;
  }

  /** @internal bbolt Bucket.rebalance. */
  rebalance(): void {
    // A node merged away earlier in this loop has left the map: skip it (Go's map range
    // does not yield entries deleted during the iteration).
    for (const n of [...this.nodes.values()]) if (this.nodes.get(n.pgid) === n) n.rebalance();
    for (const child of this.buckets.values()) child.rebalance();
  }

  /** @internal Writes this bucket and its children to dirty pages (bbolt Bucket.spill). */
  spill(): void {
    // Children first: their headers (or inline pages) are values in this bucket.
    const names = [...this.buckets.keys()].sort();
    for (const name of names) {
      const child = this.buckets.get(name)!;
      let value: Uint8Array;
      if (child.inlineable()) {
        child.free();
        value = child.writeInline();
      } else {
        child.spill();
        value = new Uint8Array(BUCKET_HEADER_SIZE);
        put64(value, 0, child.root);
        put64big(value, 8, child.sequence);
      }
      // An opened but untouched child keeps its stored value.
      if (!child.rootNode) continue;
      const key = latin1Bytes(name);
      const c = new Cursor(this);
      const kv = c.seekRaw(key);
      assert(kv && equal(kv.key, key), () => `misplaced bucket header: ${name}`);
      assert(kv.flags & BUCKET_LEAF_FLAG, () => `unexpected bucket header flag: ${kv.flags}`);
      c.node().put(key, key, value, 0, BUCKET_LEAF_FLAG);
    }
    if (!this.rootNode) return;
    this.rootNode.spill();
    this.rootNode = this.rootNode.root();
    assert(this.rootNode.pgid < this.tx.meta.pgid, "root pgid above high water mark");
    this.root = this.rootNode.pgid;
  }

  /** @internal bbolt Bucket.inlineable: a single small leaf without sub-buckets. */
  inlineable(): boolean {
    const n = this.rootNode;
    if (!n?.isLeaf) return false;
    let size = PAGE_HEADER_SIZE;
    for (const inode of n.inodes) {
      size += LEAF_ELEMENT_SIZE + inode.key.length + inode.value.length;
      if (inode.flags & BUCKET_LEAF_FLAG) return false;
      if (size > this.maxInlineBucketSize()) return false;
    }
    return true;
  }

  private maxInlineBucketSize(): number {
    return Math.floor(this.tx.pageSize / 4);
  }

  /** @internal The value of an inline bucket: header {root 0, sequence} + its leaf page. */
  writeInline(): Uint8Array {
    const n = this.rootNode!;
    const value = new Uint8Array(BUCKET_HEADER_SIZE + n.size());
    put64big(value, 8, this.sequence);
    n.write(value.subarray(BUCKET_HEADER_SIZE));
    return value;
  }

  /** @internal Frees every page of this bucket (bbolt Bucket.free). */
  free(): void {
    if (this.root === 0) return;
    const tx = this.tx;
    this.forEachPageNode((page, node) => {
      if (page) tx.freelist.free(tx.meta.txid, this.pgidOf(page), pageOverflow(page));
      else node!.free();
    });
    this.root = 0;
  }

  private pgidOf(page: Uint8Array): Pgid {
    return u64(page, 0);
  }

  /** @internal Visits every page or node of the tree, root first. */
  forEachPageNode(fn: (page: Uint8Array | null, node: Node | null, depth: number) => void): void {
    if (this.page) {
      fn(this.page, null, 0);
      return;
    }
    this.visit(this.root, 0, fn);
  }

  private visit(
    id: Pgid,
    depth: number,
    fn: (page: Uint8Array | null, node: Node | null, depth: number) => void,
  ) {
    const { page, node } = this.pageNode(id);
    fn(page, node, depth);
    if (page) {
      if (pageFlags(page) & LEAF_PAGE_FLAG) return;
      const count = pageCount(page);
      for (let i = 0; i < count; i++) this.visit(branchPgid(page, i), depth + 1, fn);
    } else if (!node!.isLeaf) {
      for (const inode of node!.inodes) this.visit(inode.pgid, depth + 1, fn);
    }
  }
}

function latin1Bytes(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
  return b;
}
