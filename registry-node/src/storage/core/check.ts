// bbolt's consistency check (tx.go Tx.Check), as a pure walk over a snapshot: every page
// below the high-water mark is reachable exactly once or free, no page is both, every
// page is in bounds and of the right type, and keys are strictly ordered within a page and
// within the bounds their parent branch gives them. Messages are bbolt's where it has one.
import { compare, u64 } from "./bytes.js";
import { BRANCH_PAGE_FLAG, BUCKET_HEADER_SIZE, BUCKET_LEAF_FLAG, LEAF_PAGE_FLAG } from "./constants.js";
import type { Meta } from "./meta.js";
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
  pageType,
} from "./page.js";
import type { Pgid } from "./types.js";

export type CheckStats = {
  branchPages: number;
  leafPages: number;
  overflowPages: number;
  freePages: number;
  buckets: number;
  inlineBuckets: number;
  keys: number;
  maxDepth: number;
};

export type CheckResult = { errors: string[]; stats: CheckStats };

export function checkSnapshot(meta: Meta, readPage: (id: Pgid) => Uint8Array, freeIds: Pgid[]): CheckResult {
  const errors: string[] = [];
  const stats: CheckStats = {
    branchPages: 0,
    leafPages: 0,
    overflowPages: 0,
    freePages: freeIds.length,
    buckets: 0,
    inlineBuckets: 0,
    keys: 0,
    maxDepth: 0,
  };
  const freed = new Set<Pgid>();
  for (const id of freeIds) {
    if (freed.has(id)) errors.push(`page ${id}: already freed`);
    freed.add(id);
  }
  const reachable = new Set<Pgid>([0, 1]);
  if (meta.freelist >= 0) {
    const fl = readPage(meta.freelist);
    for (let i = 0; i <= pageOverflow(fl); i++) reachable.add(meta.freelist + i);
  }

  const walkTree = (root: Pgid, inline: Uint8Array | null) => {
    const visit = (p: Uint8Array, depth: number, lo: Uint8Array | null, hi: Uint8Array | null) => {
      if (depth > stats.maxDepth) stats.maxDepth = depth;
      const flags = pageFlags(p);
      const count = pageCount(p);
      if (!inline) {
        const id = pageId(p);
        if (id > meta.pgid) errors.push(`page ${id}: out of bounds: ${meta.pgid}`);
        for (let i = 0; i <= pageOverflow(p); i++) {
          const pid = id + i;
          if (reachable.has(pid)) errors.push(`page ${pid}: multiple references`);
          reachable.add(pid);
          if (freed.has(pid)) errors.push(`page ${pid}: reachable freed`);
        }
        stats.overflowPages += pageOverflow(p);
      }
      if (flags & BRANCH_PAGE_FLAG) {
        stats.branchPages++;
        if (count === 0) errors.push(`page ${pageId(p)}: empty branch page`);
        let prev: Uint8Array | null = null;
        for (let i = 0; i < count; i++) {
          const k = branchKey(p, i);
          if (prev && compare(prev, k) >= 0) errors.push(`page ${pageId(p)}: keys out of order at ${i}`);
          if (lo && i === 0 && compare(k, lo) < 0)
            errors.push(`page ${pageId(p)}: key below its parent's bound`);
          if (hi && compare(k, hi) >= 0) errors.push(`page ${pageId(p)}: key above its parent's bound`);
          prev = k;
          const next = i + 1 < count ? branchKey(p, i + 1) : hi;
          visit(readPage(branchPgid(p, i)), depth + 1, k, next);
        }
      } else if (flags & LEAF_PAGE_FLAG) {
        stats.leafPages++;
        let prev: Uint8Array | null = null;
        for (let i = 0; i < count; i++) {
          const k = leafKey(p, i);
          if (prev && compare(prev, k) >= 0) errors.push(`page ${pageId(p)}: keys out of order at ${i}`);
          if (lo && compare(k, lo) < 0) errors.push(`page ${pageId(p)}: key below its parent's bound`);
          if (hi && compare(k, hi) >= 0) errors.push(`page ${pageId(p)}: key above its parent's bound`);
          prev = k;
          if (leafFlags(p, i) & BUCKET_LEAF_FLAG) {
            const v = leafValue(p, i);
            if (v.length < BUCKET_HEADER_SIZE) {
              errors.push(`page ${pageId(p)}: bucket value too short`);
              continue;
            }
            stats.buckets++;
            const childRoot = u64(v, 0);
            if (childRoot === 0) {
              stats.inlineBuckets++;
              walkTree(0, v.subarray(BUCKET_HEADER_SIZE));
            } else walkTree(childRoot, null);
          } else stats.keys++;
        }
      } else {
        errors.push(`page ${pageId(p)}: invalid type: ${pageType(flags)}`);
      }
    };
    if (inline) visit(inline, 0, null, null);
    else if (root >= meta.pgid) errors.push(`page ${root}: out of bounds: ${meta.pgid}`);
    else visit(readPage(root), 0, null, null);
  };

  walkTree(meta.root.root, null);
  for (let i = 0; i < meta.pgid; i++) {
    if (!reachable.has(i) && !freed.has(i)) errors.push(`page ${i}: unreachable unfreed`);
  }
  for (const id of freed)
    if (id >= meta.pgid) errors.push(`page ${id}: free page out of bounds: ${meta.pgid}`);
  return { errors, stats };
}
