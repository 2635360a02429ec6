// An ordered set of keys for the in-memory key index. Keys are "binary strings" (latin1:
// one char per byte), so JavaScript's string order is bytewise order, as etcd's btree uses.
//
// The set is a list of sorted chunks (as Python's sortedcontainers): a lookup is a binary
// search over chunk heads then within one chunk, an insert moves at most one chunk's
// elements, and a chunk splits when it doubles. This keeps inserts cheap at a million keys,
// where one flat sorted array would move megabytes per new key.

const chunkSizeMax = 1024;

export class SortedKeys {
  private chunks: string[][] = [];
  /** First key of each chunk, for the binary search over chunks. */
  private heads: string[] = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Index of the chunk that holds `key` or would hold it. */
  private chunkFor(key: string): number {
    const heads = this.heads;
    let lo = 0;
    let hi = heads.length - 1;
    if (hi < 0) return -1;
    if (key < heads[0]!) return 0;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (heads[mid]! <= key) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Adds `key`; returns false when it was already present. */
  add(key: string): boolean {
    if (this.chunks.length === 0) {
      this.chunks.push([key]);
      this.heads.push(key);
      this.count = 1;
      return true;
    }
    const c = this.chunkFor(key);
    const chunk = this.chunks[c]!;
    const i = lowerBound(chunk, key);
    if (chunk[i] === key) return false;
    chunk.splice(i, 0, key);
    if (i === 0) this.heads[c] = key;
    this.count += 1;
    if (chunk.length > chunkSizeMax * 2) {
      const tail = chunk.splice(chunkSizeMax);
      this.chunks.splice(c + 1, 0, tail);
      this.heads.splice(c + 1, 0, tail[0]!);
    }
    return true;
  }

  /** Removes `key`; returns false when it was absent. */
  delete(key: string): boolean {
    const c = this.chunkFor(key);
    if (c < 0) return false;
    const chunk = this.chunks[c]!;
    const i = lowerBound(chunk, key);
    if (chunk[i] !== key) return false;
    chunk.splice(i, 1);
    this.count -= 1;
    if (chunk.length === 0) {
      this.chunks.splice(c, 1);
      this.heads.splice(c, 1);
    } else if (i === 0) {
      this.heads[c] = chunk[0]!;
    }
    return true;
  }

  has(key: string): boolean {
    const c = this.chunkFor(key);
    if (c < 0) return false;
    const chunk = this.chunks[c]!;
    return chunk[lowerBound(chunk, key)] === key;
  }

  /**
   * Visits keys in [start, end) in order; `end` undefined means no upper bound.
   * The visitor returns false to stop.
   */
  ascend(start: string, end: string | undefined, visit: (key: string) => boolean): void {
    let c = this.chunkFor(start);
    if (c < 0) return;
    let i = lowerBound(this.chunks[c]!, start);
    for (; c < this.chunks.length; c++, i = 0) {
      const chunk = this.chunks[c]!;
      for (; i < chunk.length; i++) {
        const key = chunk[i]!;
        if (end !== undefined && key >= end) return;
        if (!visit(key)) return;
      }
    }
  }

  /** Visits keys in [start, end) from the last to the first. */
  descend(start: string, end: string | undefined, visit: (key: string) => boolean): void {
    const last = end === undefined ? this.chunks.length - 1 : this.chunkFor(end);
    for (let c = last; c >= 0; c--) {
      const chunk = this.chunks[c]!;
      const from = c === last && end !== undefined ? lowerBound(chunk, end) - 1 : chunk.length - 1;
      for (let i = from; i >= 0; i--) {
        const key = chunk[i]!;
        if (key < start) return;
        if (!visit(key)) return;
      }
    }
  }

  /** Builds the set from keys already sorted and unique (start-up restore). */
  static fromSorted(keys: string[]): SortedKeys {
    const s = new SortedKeys();
    for (let i = 0; i < keys.length; i += chunkSizeMax) {
      const chunk = keys.slice(i, i + chunkSizeMax);
      s.chunks.push(chunk);
      s.heads.push(chunk[0]!);
    }
    s.count = keys.length;
    return s;
  }
}

function lowerBound(arr: string[], key: string): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (arr[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
