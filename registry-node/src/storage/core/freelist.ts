// bbolt's freelist (freelist.go, the "array" type): the sorted ids of free pages, plus the
// pages freed by each write transaction that may still be visible to an open reader
// ("pending", keyed by the txid that freed them). A page freed by tx N is reusable once no
// open reader has a txid < N: `release(minReaderTxid - 1)`, as bbolt's db.freePages does.
// On disk (a page with FREELIST_PAGE_FLAG) the free and pending ids are written together,
// sorted, as u64s after the header; when there are 0xFFFF or more, header.count is 0xFFFF
// and the first u64 holds the real count.
import { put16, put64, u64 } from "./bytes.js";
import { FREELIST_PAGE_FLAG, MAX_PAGE_COUNT, PAGE_HEADER_SIZE } from "./constants.js";
import { pageCount, pageFlags } from "./page.js";
import { assert, type Pgid, type Txid } from "./types.js";

export class Freelist {
  /** Free page ids, sorted ascending. */
  ids: Pgid[] = [];
  /** Pages freed per txid, not yet reusable. */
  pending = new Map<Txid, Pgid[]>();
  /** Every free or pending id: catches double frees (bbolt panics "page %d already freed"). */
  private cache = new Set<Pgid>();

  clone(): Freelist {
    const f = new Freelist();
    f.ids = this.ids.slice();
    for (const [t, ids] of this.pending) f.pending.set(t, ids.slice());
    f.cache = new Set(this.cache);
    return f;
  }

  freeCount(): number {
    return this.ids.length;
  }

  pendingCount(): number {
    let n = 0;
    for (const ids of this.pending.values()) n += ids.length;
    return n;
  }

  count(): number {
    return this.freeCount() + this.pendingCount();
  }

  isFree(id: Pgid): boolean {
    return this.cache.has(id);
  }

  /** Bytes of the on-disk form (bbolt freelist.size()). */
  size(): number {
    let n = this.count();
    if (n >= MAX_PAGE_COUNT) n++;
    return PAGE_HEADER_SIZE + 8 * n;
  }

  /** Allocates `n` contiguous free pages; 0 when there is no such run (bbolt array allocate). */
  allocate(n: number): Pgid {
    assert(n >= 1, "allocate at least one page");
    const ids = this.ids;
    let initial = 0;
    let previd = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      assert(id > 1, () => `invalid page allocation: ${id}`);
      if (previd === 0 || id - previd !== 1) initial = id;
      if (id - initial + 1 === n) {
        ids.splice(i - n + 1, n);
        for (let j = 0; j < n; j++) this.cache.delete(initial + j);
        return initial;
      }
      previd = id;
    }
    return 0;
  }

  /** Frees page `id` and its `overflow` pages on behalf of `txid`. */
  free(txid: Txid, id: Pgid, overflow: number): void {
    assert(id > 1, () => `cannot free page 0 or 1: ${id}`);
    let list = this.pending.get(txid);
    if (!list) this.pending.set(txid, (list = []));
    for (let p = id; p <= id + overflow; p++) {
      assert(!this.cache.has(p), () => `page ${p} already freed`);
      list.push(p);
      this.cache.add(p);
    }
  }

  /** Moves pages pending for every txid <= `txid` to the free ids. */
  release(txid: Txid): void {
    let moved: Pgid[] = [];
    for (const [t, ids] of this.pending) {
      if (t <= txid) {
        moved = moved.concat(ids);
        this.pending.delete(t);
      }
    }
    if (moved.length === 0) return;
    this.ids = mergeSorted(
      this.ids,
      moved.sort((a, b) => a - b),
    );
  }

  /** All free and pending ids, sorted (bbolt copyall). */
  all(): Pgid[] {
    const pend: Pgid[] = [];
    for (const ids of this.pending.values()) for (const id of ids) pend.push(id);
    return mergeSorted(
      this.ids,
      pend.sort((a, b) => a - b),
    );
  }

  /** Loads the ids of a freelist page (everything becomes free: no reader survives a reopen). */
  read(page: Uint8Array): void {
    assert((pageFlags(page) & FREELIST_PAGE_FLAG) !== 0, "invalid freelist page");
    let count = pageCount(page);
    let idx = 0;
    if (count === MAX_PAGE_COUNT) {
      count = u64(page, PAGE_HEADER_SIZE);
      idx = 1;
    }
    const ids: Pgid[] = new Array(count);
    for (let i = 0; i < count; i++) ids[i] = u64(page, PAGE_HEADER_SIZE + (idx + i) * 8);
    ids.sort((a, b) => a - b);
    this.readIds(ids);
  }

  readIds(ids: Pgid[]): void {
    this.ids = ids;
    this.pending.clear();
    this.cache = new Set(ids);
  }

  /** Writes the freelist into a zeroed page buffer of size() or more bytes (flags, count, ids). */
  write(page: Uint8Array): void {
    const ids = this.all();
    const n = ids.length;
    assert(page.length >= this.size(), "freelist page too small");
    put16(page, 8, FREELIST_PAGE_FLAG);
    let o = PAGE_HEADER_SIZE;
    if (n < MAX_PAGE_COUNT) put16(page, 10, n);
    else {
      put16(page, 10, MAX_PAGE_COUNT);
      put64(page, o, n);
      o += 8;
    }
    for (const id of ids) {
      put64(page, o, id);
      o += 8;
    }
  }
}

function mergeSorted(a: Pgid[], b: Pgid[]): Pgid[] {
  if (b.length === 0) return a;
  if (a.length === 0) return b;
  const out: Pgid[] = new Array(a.length + b.length);
  let i = 0;
  let j = 0;
  let k = 0;
  while (i < a.length && j < b.length) out[k++] = a[i]! <= b[j]! ? a[i++]! : b[j++]!;
  while (i < a.length) out[k++] = a[i++]!;
  while (j < b.length) out[k++] = b[j++]!;
  return out;
}
