// The read hot path, specialized: binary search of a branch or leaf page for a key with the
// element fields and the byte comparison inlined (same result as Cursor.search / nsearch,
// without calls or views per probe). Element `pos`/`ksize` fit in 31 bits (a page is at
// most MAX_PAGE_SIZE_BYTES with overflow below 2^31), so `|` arithmetic is exact.

/** bytes.Compare(key, p[off:off+len]) */
function cmp(key: Uint8Array, p: Uint8Array, off: number, len: number): number {
  const klen = key.length;
  const n = Math.min(klen, len);
  for (let i = 0; i < n; i++) {
    const d = key[i]! - p[off + i]!;
    if (d !== 0) return d;
  }
  return klen - len;
}

/** Index of the child of a branch page that may hold `key` (bbolt searchPage). */
export function branchSearch(p: Uint8Array, key: Uint8Array): number {
  const count = p[10]! | (p[11]! << 8);
  let lo = 0;
  let hi = count;
  let exact = false;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const e = 16 + mid * 16;
    const off = e + (p[e]! | (p[e + 1]! << 8) | (p[e + 2]! << 16) | (p[e + 3]! << 24));
    const len = p[e + 4]! | (p[e + 5]! << 8) | (p[e + 6]! << 16) | (p[e + 7]! << 24);
    const c = cmp(key, p, off, len);
    if (c > 0) lo = mid + 1;
    else {
      if (c === 0) exact = true;
      hi = mid;
    }
  }
  return !exact && lo > 0 ? lo - 1 : lo;
}

/** The child page id of branch element i (u64, below 2^53). */
export function branchChild(p: Uint8Array, i: number): number {
  const e = 16 + i * 16 + 8;
  const lo = (p[e]! | (p[e + 1]! << 8) | (p[e + 2]! << 16) | (p[e + 3]! << 24)) >>> 0;
  const hi = (p[e + 4]! | (p[e + 5]! << 8) | (p[e + 6]! << 16) | (p[e + 7]! << 24)) >>> 0;
  return hi * 4294967296 + lo;
}

/** Index of `key` in a leaf page, or -1. */
export function leafFind(p: Uint8Array, key: Uint8Array): number {
  let lo = 0;
  let hi = p[10]! | (p[11]! << 8);
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const e = 16 + mid * 16;
    const off = e + (p[e + 4]! | (p[e + 5]! << 8) | (p[e + 6]! << 16) | (p[e + 7]! << 24));
    const len = p[e + 8]! | (p[e + 9]! << 8) | (p[e + 10]! << 16) | (p[e + 11]! << 24);
    const c = cmp(key, p, off, len);
    if (c > 0) lo = mid + 1;
    else if (c < 0) hi = mid;
    else return mid;
  }
  return -1;
}

/** Index of the first key >= `key` in a leaf page (count when every key is smaller). */
export function leafLowerBound(p: Uint8Array, key: Uint8Array): number {
  let lo = 0;
  let hi = p[10]! | (p[11]! << 8);
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const e = 16 + mid * 16;
    const off = e + (p[e + 4]! | (p[e + 5]! << 8) | (p[e + 6]! << 16) | (p[e + 7]! << 24));
    const len = p[e + 8]! | (p[e + 9]! << 8) | (p[e + 10]! << 16) | (p[e + 11]! << 24);
    if (cmp(key, p, off, len) > 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
