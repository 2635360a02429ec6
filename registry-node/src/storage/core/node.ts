// bbolt's node (node.go): the in-memory, mutable form of a page, materialized when a write
// transaction touches it. Verbs as in bbolt: `read` (page -> node), `write` (node -> page),
// `split`, `spill` (write dirty nodes to freshly allocated pages, bottom up), `rebalance`
// (merge an under-filled node into a sibling).

import type { Bucket } from "./bucket.js";
import { compare, put16, put32, put64 } from "./bytes.js";
import {
  BRANCH_ELEMENT_SIZE,
  BRANCH_PAGE_FLAG,
  LEAF_ELEMENT_SIZE,
  LEAF_PAGE_FLAG,
  MAX_FILL_PERCENT,
  MAX_PAGE_COUNT,
  MIN_FILL_PERCENT,
  MIN_KEYS_PER_PAGE,
  PAGE_HEADER_SIZE,
} from "./constants.js";
import {
  branchKey,
  branchPgid,
  leafFlags,
  leafKey,
  leafValue,
  pageCount,
  pageFlags,
  pageId,
  pageOverflow,
} from "./page.js";
import { assert, type Pgid } from "./types.js";

/** An element of a node: a key with its value (leaf) or child page (branch). */
export type Inode = { flags: number; pgid: Pgid; key: Uint8Array; value: Uint8Array };

const EMPTY = new Uint8Array(0);
/** bbolt's format is little endian; the u32 fast path of write() needs a little-endian host. */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Copies src into dst at off; a plain loop beats TypedArray.set for short keys. Returns the end. */
function copyInto(dst: Uint8Array, src: Uint8Array, off: number): number {
  const n = src.length;
  if (n > 64) dst.set(src, off);
  else for (let i = 0; i < n; i++) dst[off + i] = src[i]!;
  return off + n;
}

export class Node {
  isLeaf = false;
  unbalanced = false;
  spilled = false;
  /** The key this node is filed under in its parent (its first key when it was read). */
  key: Uint8Array | null = null;
  pgid: Pgid = 0;
  /** Overflow of the page this node was read from: needed to free that page. */
  overflow = 0;
  parent: Node | null;
  children: Node[] = [];
  inodes: Inode[] = [];

  constructor(
    readonly bucket: Bucket,
    parent: Node | null,
  ) {
    this.parent = parent;
  }

  root(): Node {
    let n: Node = this;
    while (n.parent) n = n.parent;
    return n;
  }

  /** bbolt node.minKeys(). */
  minKeys(): number {
    return this.isLeaf ? 1 : 2;
  }

  /** Bytes of the page form: header + elements + keys (+ values). */
  size(): number {
    let sz = PAGE_HEADER_SIZE;
    const elsz = this.isLeaf ? LEAF_ELEMENT_SIZE : BRANCH_ELEMENT_SIZE;
    for (const i of this.inodes) sz += elsz + i.key.length + i.value.length;
    return sz;
  }

  sizeLessThan(v: number): boolean {
    let sz = PAGE_HEADER_SIZE;
    const elsz = this.isLeaf ? LEAF_ELEMENT_SIZE : BRANCH_ELEMENT_SIZE;
    for (const i of this.inodes) {
      sz += elsz + i.key.length + i.value.length;
      if (sz >= v) return false;
    }
    return true;
  }

  childAt(index: number): Node {
    assert(!this.isLeaf, () => `invalid childAt(${index}) on a leaf node`);
    return this.bucket.node(this.inodes[index]!.pgid, this);
  }

  childIndex(child: Node): number {
    return this.search(child.key!);
  }

  /** Index of the first inode whose key is >= key. */
  search(key: Uint8Array): number {
    let lo = 0;
    let hi = this.inodes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compare(this.inodes[mid]!.key, key) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  nextSibling(): Node | null {
    if (!this.parent) return null;
    const i = this.parent.childIndex(this);
    if (i >= this.parent.inodes.length - 1) return null;
    return this.parent.childAt(i + 1);
  }

  prevSibling(): Node | null {
    if (!this.parent) return null;
    const i = this.parent.childIndex(this);
    if (i === 0) return null;
    return this.parent.childAt(i - 1);
  }

  /** Inserts or replaces the inode filed under oldKey (bbolt node.put). */
  put(oldKey: Uint8Array, newKey: Uint8Array, value: Uint8Array, pgid: Pgid, flags: number): void {
    assert(
      pgid < this.bucket.tx.meta.pgid,
      `pgid (${pgid}) above high water mark (${this.bucket.tx.meta.pgid})`,
    );
    assert(oldKey.length > 0, "put: zero-length old key");
    assert(newKey.length > 0, "put: zero-length new key");
    const index = this.search(oldKey);
    const exact = index < this.inodes.length && compare(this.inodes[index]!.key, oldKey) === 0;
    const inode: Inode = { flags, pgid, key: newKey, value };
    if (exact) this.inodes[index] = inode;
    else this.inodes.splice(index, 0, inode);
  }

  del(key: Uint8Array): void {
    const index = this.search(key);
    if (index >= this.inodes.length || compare(this.inodes[index]!.key, key) !== 0) return;
    this.inodes.splice(index, 1);
    this.unbalanced = true;
  }

  /** Fills the node from a page (leaf or branch). Keys and values stay views of the page. */
  read(p: Uint8Array): void {
    this.pgid = pageId(p);
    this.overflow = pageOverflow(p);
    const flags = pageFlags(p);
    assert(
      (flags & (LEAF_PAGE_FLAG | BRANCH_PAGE_FLAG)) !== 0,
      `node.read: page ${this.pgid} is not a leaf or branch`,
    );
    this.isLeaf = (flags & LEAF_PAGE_FLAG) !== 0;
    const count = pageCount(p);
    const inodes: Inode[] = new Array(count);
    if (this.isLeaf) {
      for (let i = 0; i < count; i++) {
        inodes[i] = { flags: leafFlags(p, i), pgid: 0, key: leafKey(p, i), value: leafValue(p, i) };
      }
    } else {
      for (let i = 0; i < count; i++)
        inodes[i] = { flags: 0, pgid: branchPgid(p, i), key: branchKey(p, i), value: EMPTY };
    }
    this.inodes = inodes;
    this.key = count > 0 ? inodes[0]!.key : null;
  }

  /** Writes flags, count, elements, keys and values into `p` (id and overflow are the caller's). */
  write(p: Uint8Array): void {
    const count = this.inodes.length;
    assert(count < MAX_PAGE_COUNT, () => `inode overflow: ${count} (pgid=${this.pgid})`);
    put16(p, 8, this.isLeaf ? LEAF_PAGE_FLAG : BRANCH_PAGE_FLAG);
    put16(p, 10, count);
    if (count === 0) return;
    const elsz = this.isLeaf ? LEAF_ELEMENT_SIZE : BRANCH_ELEMENT_SIZE;
    const dataStart = PAGE_HEADER_SIZE + elsz * count;
    let data = dataStart;
    // Element fields through a u32 view when the page is 4-byte aligned (always, for pages
    // cut from a slab) on a little-endian host: a quarter of the stores of put32.
    const words =
      LITTLE_ENDIAN && (p.byteOffset & 3) === 0
        ? new Uint32Array(p.buffer, p.byteOffset, p.length >>> 2)
        : null;
    for (let i = 0; i < count; i++) {
      const item = this.inodes[i]!;
      if (item.key.length === 0) assert(false, "write: zero-length inode key");
      const e = PAGE_HEADER_SIZE + i * elsz;
      if (this.isLeaf) {
        if (words) {
          const w = e >>> 2;
          words[w] = item.flags;
          words[w + 1] = data - e;
          words[w + 2] = item.key.length;
          words[w + 3] = item.value.length;
        } else {
          put32(p, e, item.flags);
          put32(p, e + 4, data - e);
          put32(p, e + 8, item.key.length);
          put32(p, e + 12, item.value.length);
        }
      } else {
        put32(p, e, data - e);
        put32(p, e + 4, item.key.length);
        put64(p, e + 8, item.pgid);
      }
      data += item.key.length + item.value.length;
    }
    assert(data <= p.length, "write: node larger than its page");
    // Keys and values, in element order. Inodes read from one page lie back to back in
    // that page (k0 v0 k1 v1 ...): such runs are copied with one call instead of two per
    // element, which is most of the cost of rewriting a leaf that gained one key.
    data = dataStart;
    let i = 0;
    while (i < count) {
      const first = this.inodes[i]!.key;
      const buf = first.buffer;
      const runStart = first.byteOffset;
      let runEnd = runStart;
      let j = i;
      for (; j < count; j++) {
        const item = this.inodes[j]!;
        if (item.key.buffer !== buf || item.key.byteOffset !== runEnd) break;
        const kEnd = runEnd + item.key.length;
        if (item.value.length > 0 && (item.value.buffer !== buf || item.value.byteOffset !== kEnd)) break;
        runEnd = kEnd + item.value.length;
      }
      if (j > i + 1) {
        p.set(new Uint8Array(buf, runStart, runEnd - runStart), data);
        data += runEnd - runStart;
        i = j;
      } else {
        const item = this.inodes[i]!;
        data = copyInto(p, item.key, data);
        if (item.value.length > 0) data = copyInto(p, item.value, data);
        i++;
      }
    }
  }

  /**
   * Breaks the node into page-sized nodes (bbolt node.split / splitTwo / splitIndex). bbolt
   * re-slices the remainder after every cut; Go slices share memory, JavaScript's copy, so
   * the cut points are found first and each chunk is copied once (linear, not quadratic).
   */
  split(pageSize: number): Node[] {
    let fill = this.bucket.fillPercent;
    if (fill < MIN_FILL_PERCENT) fill = MIN_FILL_PERCENT;
    else if (fill > MAX_FILL_PERCENT) fill = MAX_FILL_PERCENT;
    const threshold = Math.floor(pageSize * fill);
    const all = this.inodes;
    const cuts: number[] = [];
    let start = 0;
    while (all.length - start > MIN_KEYS_PER_PAGE * 2 && !this.sizeLessThanFrom(start, pageSize)) {
      start += this.splitIndexFrom(start, threshold);
      cuts.push(start);
    }
    if (cuts.length === 0) return [this];
    // A root that splits gets a new parent.
    if (!this.parent) {
      this.parent = new Node(this.bucket, null);
      this.parent.children.push(this);
    }
    const nodes: Node[] = [this];
    this.inodes = all.slice(0, cuts[0]);
    for (let i = 0; i < cuts.length; i++) {
      const next = new Node(this.bucket, this.parent);
      next.isLeaf = this.isLeaf;
      next.inodes = all.slice(cuts[i], i + 1 < cuts.length ? cuts[i + 1] : all.length);
      this.parent.children.push(next);
      nodes.push(next);
    }
    return nodes;
  }

  private sizeLessThanFrom(start: number, v: number): boolean {
    let sz = PAGE_HEADER_SIZE;
    const elsz = this.isLeaf ? LEAF_ELEMENT_SIZE : BRANCH_ELEMENT_SIZE;
    for (let i = start; i < this.inodes.length; i++) {
      const inode = this.inodes[i]!;
      sz += elsz + inode.key.length + inode.value.length;
      if (sz >= v) return false;
    }
    return true;
  }

  /** bbolt splitIndex over inodes[start:]: the length of the first chunk. */
  private splitIndexFrom(start: number, threshold: number): number {
    let sz = PAGE_HEADER_SIZE;
    let index = 0;
    const elsz = this.isLeaf ? LEAF_ELEMENT_SIZE : BRANCH_ELEMENT_SIZE;
    const n = this.inodes.length - start;
    for (let i = 0; i < n - MIN_KEYS_PER_PAGE; i++) {
      index = i;
      const inode = this.inodes[start + i]!;
      const elsize = elsz + inode.key.length + inode.value.length;
      if (i >= MIN_KEYS_PER_PAGE && sz + elsize > threshold) break;
      sz += elsize;
    }
    return index;
  }

  /** Writes this subtree's dirty nodes to new pages, children first (bbolt node.spill). */
  spill(): void {
    const tx = this.bucket.tx;
    if (this.spilled) return;
    // Children can materialize siblings while they spill: re-read the length every time.
    this.children.sort((a, b) => compare(a.inodes[0]!.key, b.inodes[0]!.key));
    for (let i = 0; i < this.children.length; i++) this.children[i]!.spill();
    this.children = [];

    const nodes = this.split(tx.pageSize);
    for (const node of nodes) {
      if (node.pgid > 0) {
        tx.freelist.free(tx.meta.txid, node.pgid, node.overflow);
        node.pgid = 0;
      }
      const count = Math.ceil(node.size() / tx.pageSize);
      const { id, buf } = tx.allocate(count);
      assert(id < tx.meta.pgid, () => `pgid (${id}) above high water mark (${tx.meta.pgid})`);
      node.pgid = id;
      node.overflow = count - 1;
      node.write(buf);
      node.spilled = true;
      if (node.parent) {
        const key = node.key ?? node.inodes[0]!.key;
        node.parent.put(key, node.inodes[0]!.key, EMPTY, node.pgid, 0);
        node.key = node.inodes[0]!.key;
        assert(node.key.length > 0, "spill: zero-length node key");
      }
    }
    // A root that split has a new parent, which must be spilled too.
    if (this.parent && this.parent.pgid === 0) {
      this.children = [];
      this.parent.spill();
    }
  }

  /** Merges an under-filled node into a sibling (bbolt node.rebalance). */
  rebalance(): void {
    if (!this.unbalanced) return;
    this.unbalanced = false;
    const bucket = this.bucket;
    const threshold = Math.floor(bucket.tx.pageSize / 4);
    if (this.size() > threshold && this.inodes.length > this.minKeys()) return;

    if (!this.parent) {
      // A root branch with one child collapses into that child.
      if (!this.isLeaf && this.inodes.length === 1) {
        const child = bucket.node(this.inodes[0]!.pgid, this);
        this.isLeaf = child.isLeaf;
        this.inodes = child.inodes;
        this.children = child.children;
        for (const inode of this.inodes) {
          const c = bucket.nodes.get(inode.pgid);
          if (c) c.parent = this;
        }
        child.parent = null;
        bucket.nodes.delete(child.pgid);
        child.free();
      }
      return;
    }

    // An empty node is removed from its parent.
    if (this.inodes.length === 0) {
      this.parent.del(this.key!);
      this.parent.removeChild(this);
      bucket.nodes.delete(this.pgid);
      this.free();
      this.parent.rebalance();
      return;
    }

    assert(this.parent.inodes.length > 1, "parent must have at least 2 children");
    if (this.parent.childIndex(this) === 0) {
      const target = this.nextSibling()!;
      for (const inode of target.inodes) {
        const c = bucket.nodes.get(inode.pgid);
        if (c) {
          c.parent!.removeChild(c);
          c.parent = this;
          this.children.push(c);
        }
      }
      this.inodes = this.inodes.concat(target.inodes);
      this.parent.del(target.key!);
      this.parent.removeChild(target);
      bucket.nodes.delete(target.pgid);
      target.free();
    } else {
      const target = this.prevSibling()!;
      for (const inode of this.inodes) {
        const c = bucket.nodes.get(inode.pgid);
        if (c) {
          c.parent!.removeChild(c);
          c.parent = target;
          target.children.push(c);
        }
      }
      target.inodes = target.inodes.concat(this.inodes);
      this.parent.del(this.key!);
      this.parent.removeChild(this);
      bucket.nodes.delete(this.pgid);
      this.free();
    }
    this.parent.rebalance();
  }

  removeChild(target: Node): void {
    const i = this.children.indexOf(target);
    if (i >= 0) this.children.splice(i, 1);
  }

  /** Returns this node's page to the freelist (pending for this tx). */
  free(): void {
    if (this.pgid !== 0) {
      this.bucket.tx.freelist.free(this.bucket.tx.meta.txid, this.pgid, this.overflow);
      this.pgid = 0;
    }
  }
}
