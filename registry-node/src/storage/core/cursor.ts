// bbolt's cursor (cursor.go): a stack of positions from a bucket's root to a leaf. Each
// level is either an on-disk page (read-only, no copy) or a materialized node (when the
// write transaction has touched it). Verbs: first, last, next, prev, seek.

import type { Bucket } from "./bucket.js";
import { compareAt } from "./bytes.js";
import { BRANCH_PAGE_FLAG, BUCKET_LEAF_FLAG, LEAF_PAGE_FLAG } from "./constants.js";
import { ErrIncompatibleValue, ErrTxClosed, ErrTxNotWritable } from "./errors.js";
import type { Node } from "./node.js";
import {
  branchPgid,
  leafFlags,
  leafKey,
  leafKeyOffset,
  leafKeySize,
  leafValue,
  pageCount,
  pageFlags,
} from "./page.js";
import { branchChild, branchSearch, leafLowerBound } from "./search.js";
import { assert, type Pgid } from "./types.js";

class ElemRef {
  constructor(
    public page: Uint8Array | null,
    public node: Node | null,
    public index: number,
  ) {}

  isLeaf(): boolean {
    return this.node ? this.node.isLeaf : (pageFlags(this.page!) & LEAF_PAGE_FLAG) !== 0;
  }

  count(): number {
    return this.node ? this.node.inodes.length : pageCount(this.page!);
  }
}

/** A key with its value; `value` is null when the key names a nested bucket. */
export type Entry = { key: Uint8Array; value: Uint8Array | null };

type Raw = { key: Uint8Array; value: Uint8Array; flags: number } | null;

export class Cursor {
  private stack: ElemRef[] = [];

  constructor(readonly bucket: Bucket) {}

  first(): Entry | null {
    this.bucket.tx.checkOpen();
    this.stack.length = 0;
    const { page, node } = this.bucket.pageNode(this.bucket.root);
    this.stack.push(new ElemRef(page, node, 0));
    this.goFirst();
    // An empty leaf (deletes not yet rebalanced) is skipped.
    if (this.top().count() === 0) return toEntry(this.goNext());
    return toEntry(this.keyValue());
  }

  last(): Entry | null {
    this.bucket.tx.checkOpen();
    this.stack.length = 0;
    const { page, node } = this.bucket.pageNode(this.bucket.root);
    const ref = new ElemRef(page, node, 0);
    ref.index = ref.count() - 1;
    this.stack.push(ref);
    this.goLast();
    if (this.top().count() === 0) return toEntry(this.goPrev());
    return toEntry(this.keyValue());
  }

  next(): Entry | null {
    this.bucket.tx.checkOpen();
    return toEntry(this.goNext());
  }

  prev(): Entry | null {
    this.bucket.tx.checkOpen();
    return toEntry(this.goPrev());
  }

  /** The first entry with key >= `seek`. */
  seek(seek: Uint8Array): Entry | null {
    this.bucket.tx.checkOpen();
    let kv = this.seekRaw(seek);
    const ref = this.top();
    if (ref.index >= ref.count()) kv = this.goNext();
    return toEntry(kv);
  }

  /** Deletes the entry under the cursor (bbolt Cursor.Delete). */
  delete(): void {
    const tx = this.bucket.tx;
    if (tx.closed) throw new ErrTxClosed();
    if (!tx.writable) throw new ErrTxNotWritable();
    const kv = this.keyValue();
    if (!kv) return;
    if (kv.flags & BUCKET_LEAF_FLAG) throw new ErrIncompatibleValue();
    const key = kv.key;
    this.node().del(key);
    // Re-position on the (now materialized) nodes, one before the entry that followed the
    // deleted key, so that next() continues with it: deleting while iterating forward
    // visits every entry once. (After a delete, use next(), not prev().)
    this.seekRaw(key);
    this.top().index--;
  }

  /** @internal Positions at the first key >= seek without skipping to the next leaf. */
  seekRaw(seek: Uint8Array): Raw {
    this.stack.length = 0;
    this.search(seek, this.bucket.root);
    return this.keyValue();
  }

  /**
   * @internal Positions at the first key >= key and says whether it is `key` itself, and
   * its flags, without making views of the key and value (the put/delete hot path).
   */
  seekExact(key: Uint8Array): number {
    this.stack.length = 0;
    this.search(key, this.bucket.root);
    const ref = this.top();
    if (ref.index >= ref.count()) return -1;
    if (ref.node) {
      const inode = ref.node.inodes[ref.index]!;
      return compareAt(key, inode.key, 0, inode.key.length) === 0 ? inode.flags : -1;
    }
    const p = ref.page!;
    return compareAt(key, p, leafKeyOffset(p, ref.index), leafKeySize(p, ref.index)) === 0
      ? leafFlags(p, ref.index)
      : -1;
  }

  private top(): ElemRef {
    return this.stack[this.stack.length - 1]!;
  }

  private childPgid(ref: ElemRef): Pgid {
    return ref.node ? ref.node.inodes[ref.index]!.pgid : branchPgid(ref.page!, ref.index);
  }

  private goFirst(): void {
    for (;;) {
      const ref = this.top();
      if (ref.isLeaf()) break;
      const { page, node } = this.bucket.pageNode(this.childPgid(ref));
      this.stack.push(new ElemRef(page, node, 0));
    }
  }

  private goLast(): void {
    for (;;) {
      const ref = this.top();
      if (ref.isLeaf()) break;
      const { page, node } = this.bucket.pageNode(this.childPgid(ref));
      const next = new ElemRef(page, node, 0);
      next.index = next.count() - 1;
      this.stack.push(next);
    }
  }

  /** @internal */
  goNext(): Raw {
    for (;;) {
      let i = this.stack.length - 1;
      for (; i >= 0; i--) {
        const elem = this.stack[i]!;
        if (elem.index < elem.count() - 1) {
          elem.index++;
          break;
        }
      }
      if (i === -1) return null;
      this.stack.length = i + 1;
      this.goFirst();
      if (this.top().count() === 0) continue;
      return this.keyValue();
    }
  }

  private goPrev(): Raw {
    for (;;) {
      let i = this.stack.length - 1;
      for (; i >= 0; i--) {
        const elem = this.stack[i]!;
        if (elem.index > 0) {
          elem.index--;
          break;
        }
      }
      if (i === -1) {
        this.stack.length = 0;
        return null;
      }
      this.stack.length = i + 1;
      this.goLast();
      if (this.top().count() === 0) continue;
      return this.keyValue();
    }
  }

  private search(key: Uint8Array, pgid: Pgid): void {
    const { page, node } = this.bucket.pageNode(pgid);
    if (page) {
      const f = pageFlags(page);
      assert((f & (BRANCH_PAGE_FLAG | LEAF_PAGE_FLAG)) !== 0, () => `invalid page type: ${pgid}: ${f}`);
    }
    const ref = new ElemRef(page, node, 0);
    this.stack.push(ref);
    if (ref.isLeaf()) {
      this.nsearch(key);
      return;
    }
    if (node) {
      let index = node.search(key);
      const exact =
        index < node.inodes.length &&
        compareAt(key, node.inodes[index]!.key, 0, node.inodes[index]!.key.length) === 0;
      if (!exact && index > 0) index--;
      ref.index = index;
      this.search(key, node.inodes[index]!.pgid);
    } else {
      const index = branchSearch(page!, key);
      ref.index = index;
      this.search(key, branchChild(page!, index));
    }
  }

  /** Leaf level: the first key >= key. */
  private nsearch(key: Uint8Array): void {
    const ref = this.top();
    if (ref.node) {
      ref.index = ref.node.search(key);
      return;
    }
    ref.index = leafLowerBound(ref.page!, key);
  }

  /** @internal */
  keyValue(): Raw {
    const ref = this.top();
    if (ref.count() === 0 || ref.index >= ref.count()) return null;
    if (ref.node) {
      const inode = ref.node.inodes[ref.index]!;
      return { key: inode.key, value: inode.value, flags: inode.flags };
    }
    const p = ref.page!;
    return { key: leafKey(p, ref.index), value: leafValue(p, ref.index), flags: leafFlags(p, ref.index) };
  }

  /** @internal The leaf node under the cursor, materializing the path (bbolt Cursor.node). */
  node(): Node {
    assert(this.stack.length > 0, "accessing a node with a zero-length cursor stack");
    const ref = this.top();
    if (ref.node && ref.isLeaf()) return ref.node;
    let n = this.stack[0]!.node;
    if (!n) n = this.bucket.node(this.bucket.root, null);
    for (let i = 0; i < this.stack.length - 1; i++) {
      assert(!n.isLeaf, "expected branch node");
      n = n.childAt(this.stack[i]!.index);
    }
    assert(n.isLeaf, "expected leaf node");
    return n;
  }
}

function toEntry(kv: Raw): Entry | null {
  if (!kv) return null;
  return { key: kv.key, value: kv.flags & BUCKET_LEAF_FLAG ? null : kv.value };
}
