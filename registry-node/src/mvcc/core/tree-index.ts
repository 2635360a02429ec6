// The in-memory index from keys to their revisions (etcd's mvcc/index.go): which revision
// of each key a read at a given revision sees. Values live in the backend's `key` bucket,
// found by revision; this index holds no values.
//
// Keys are binary strings (latin1, one char per byte). Ranges follow etcd's convention:
// `end` undefined reads the single key; `end` "" reads every key >= `key`; otherwise
// [key, end).

import { type KeyAt, KeyIndex, RevisionNotFoundError } from "./key-index.js";
import { type Revision, revCompare } from "./revision.js";
import { SortedKeys } from "./sorted-keys.js";

export class TreeIndex {
  private readonly byKey = new Map<string, KeyIndex>();
  private order = new SortedKeys();

  get size(): number {
    return this.byKey.size;
  }

  /** The key's state at main revision `atRev`; throws RevisionNotFoundError when it did not exist. */
  get(key: string, atRev: number): KeyAt {
    const at = this.byKey.get(key)?.find(atRev);
    if (at === undefined) throw new RevisionNotFoundError();
    return at;
  }

  /** The key's index entry, if the key has any history. */
  keyIndex(key: string): KeyIndex | undefined {
    return this.byKey.get(key);
  }

  put(key: string, rev: Revision): void {
    let ki = this.byKey.get(key);
    if (ki === undefined) {
      ki = new KeyIndex(key);
      this.byKey.set(key, ki);
      this.order.add(key);
    }
    ki.put(rev);
  }

  /** Adds a key index rebuilt from the backend at start-up. */
  insert(ki: KeyIndex): void {
    if (this.byKey.has(ki.key)) throw new Error(`mvcc: key ${JSON.stringify(ki.key)} inserted twice`);
    this.byKey.set(ki.key, ki);
    this.order.add(ki.key);
  }

  tombstone(key: string, rev: Revision): void {
    const ki = this.byKey.get(key);
    if (ki === undefined) throw new RevisionNotFoundError();
    ki.tombstone(rev);
  }

  /** Visits key indexes in range order; stop by returning false. */
  private visit(key: string, end: string, f: (ki: KeyIndex) => boolean): void {
    this.order.ascend(key, end === "" ? undefined : end, (k) => f(this.byKey.get(k)!));
  }

  /** Keys and their revisions visible at `atRev`, in key order, at most `limit` (0: all). */
  range(
    key: string,
    end: string | undefined,
    atRev: number,
    limit = 0,
  ): { keys: string[]; revs: Revision[] } {
    const keys: string[] = [];
    const revs: Revision[] = [];
    if (end === undefined) {
      const at = this.byKey.get(key)?.find(atRev);
      if (at !== undefined) {
        keys.push(key);
        revs.push(at.modified);
      }
      return { keys, revs };
    }
    this.visit(key, end, (ki) => {
      const at = ki.find(atRev);
      if (at !== undefined) {
        keys.push(ki.key);
        revs.push(at.modified);
      }
      return limit <= 0 || keys.length < limit;
    });
    return { keys, revs };
  }

  /** How many keys in the range exist at `atRev`. */
  count(key: string, end: string | undefined, atRev: number): number {
    if (end === undefined) return this.range(key, end, atRev).keys.length;
    let n = 0;
    this.visit(key, end, (ki) => {
      if (ki.find(atRev) !== undefined) n += 1;
      return true;
    });
    return n;
  }

  /** Every revision of keys in the range since main revision `rev`, in revision order (watch catch-up). */
  rangeSince(key: string, end: string | undefined, rev: number): Revision[] {
    if (end === undefined) {
      const ki = this.byKey.get(key);
      return ki === undefined || ki.isEmpty() ? [] : ki.since(rev);
    }
    const revs: Revision[] = [];
    this.visit(key, end, (ki) => {
      if (!ki.isEmpty()) for (const r of ki.since(rev)) revs.push(r);
      return true;
    });
    return revs.sort(revCompare);
  }

  /**
   * Compacts every key's history at `rev`; keys left with no history leave the index.
   * Returns the revisions (as revKey strings) whose backend entries must be kept.
   */
  compact(rev: number): Set<string> {
    const available = new Set<string>();
    const emptied: string[] = [];
    for (const ki of this.byKey.values()) {
      ki.compact(rev, available);
      if (ki.isEmpty()) emptied.push(ki.key);
    }
    for (const k of emptied) {
      this.byKey.delete(k);
      this.order.delete(k);
    }
    return available;
  }

  /** The revisions a compaction at `rev` would keep (for HashKV), without changing the index. */
  keep(rev: number): Set<string> {
    const available = new Set<string>();
    for (const ki of this.byKey.values()) ki.keep(rev, available);
    return available;
  }
}
