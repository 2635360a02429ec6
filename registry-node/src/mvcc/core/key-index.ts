// The history of one key, as etcd's mvcc/key_index.go keeps it. A key's life is a list of
// generations; a generation runs from a creation to a deletion (its last revision is the
// tombstone) and counts versions from 1. The last generation is the live one (empty after
// a deletion). Example, for put@1, put@2, delete@3, put@4:
//   generations: [{created 1, ver 3, revs [1, 2, 3(tombstone)]}, {created 4, ver 1, revs [4]}]
// Compaction drops revisions at or below the compact revision, keeping the newest one that
// a read at the compact revision still needs.

import { type Revision, revGreater } from "./revision.js";

export class Generation {
  ver = 0;
  created: Revision = { main: 0, sub: 0 };
  revs: Revision[] = [];

  isEmpty(): boolean {
    return this.revs.length === 0;
  }

  /**
   * Walks revisions from the newest to the oldest while `f` returns true; returns the
   * index of the revision where `f` returned false, or -1 (etcd's generation.walk).
   */
  walk(f: (rev: Revision) => boolean): number {
    for (let i = this.revs.length - 1; i >= 0; i--) {
      if (!f(this.revs[i]!)) return i;
    }
    return -1;
  }
}

export class RevisionNotFoundError extends Error {
  readonly code = "REG_ERR_REVISION_NOT_FOUND";
  constructor() {
    super("mvcc: revision not found");
  }
}

export type KeyAt = { modified: Revision; created: Revision; ver: number };

export class KeyIndex {
  modified: Revision = { main: 0, sub: 0 };
  generations: Generation[] = [];

  constructor(readonly key: string) {}

  /** Records a put at `rev`, which must be newer than any revision of the key. */
  put(rev: Revision): void {
    if (!revGreater(rev, this.modified)) {
      throw new Error(`mvcc: put with unexpected smaller revision [${rev.main} / ${this.modified.main}]`);
    }
    if (this.generations.length === 0) this.generations.push(new Generation());
    const g = this.generations[this.generations.length - 1]!;
    if (g.revs.length === 0) g.created = rev;
    g.revs.push(rev);
    g.ver += 1;
    this.modified = rev;
  }

  /** Rebuilds the index of a key from its latest state (start-up from the backend). */
  restore(created: Revision, modified: Revision, ver: number): void {
    if (this.generations.length !== 0) throw new Error("mvcc: restore on a non-empty key index");
    this.modified = modified;
    const g = new Generation();
    g.created = created;
    g.ver = ver;
    g.revs = [modified];
    this.generations.push(g);
  }

  /** Records a deletion at `rev` and starts a new, empty generation. */
  tombstone(rev: Revision): void {
    if (this.isEmpty()) throw new Error(`mvcc: unexpected tombstone on empty keyIndex ${this.key}`);
    if (this.generations[this.generations.length - 1]!.isEmpty()) throw new RevisionNotFoundError();
    this.put(rev);
    this.generations.push(new Generation());
  }

  /** The key's state as of main revision `atRev`; throws RevisionNotFoundError when it did not exist. */
  get(atRev: number): KeyAt {
    const at = this.find(atRev);
    if (at === undefined) throw new RevisionNotFoundError();
    return at;
  }

  /** The key's state as of main revision `atRev`, or undefined when it did not exist then. */
  find(atRev: number): KeyAt | undefined {
    if (this.isEmpty()) return undefined;
    const g = this.findGeneration(atRev);
    if (g === undefined || g.isEmpty()) return undefined;
    const n = g.walk((rev) => rev.main > atRev);
    if (n === -1) return undefined;
    return { modified: g.revs[n]!, created: g.created, ver: g.ver - (g.revs.length - n - 1) };
  }

  /**
   * The revisions of the key since main revision `rev` (inclusive), one per main revision
   * (the last change of the key in each transaction), oldest first (etcd's keyIndex.since).
   */
  since(rev: number): Revision[] {
    if (this.isEmpty()) throw new Error(`mvcc: since on empty keyIndex ${this.key}`);
    const since: Revision = { main: rev, sub: 0 };
    let gi = this.generations.length - 1;
    for (; gi > 0; gi--) {
      const g = this.generations[gi]!;
      if (g.isEmpty()) continue;
      if (revGreater(since, g.created)) break;
    }
    const revs: Revision[] = [];
    let last = 0;
    for (; gi < this.generations.length; gi++) {
      for (const r of this.generations[gi]!.revs) {
        if (revGreater(since, r)) continue;
        if (r.main === last) {
          revs[revs.length - 1] = r;
          continue;
        }
        revs.push(r);
        last = r.main;
      }
    }
    return revs;
  }

  /**
   * Drops revisions a read at `atRev` or later can no longer need; adds the revisions it
   * keeps at or below `atRev` to `available` (their backend entries must stay).
   */
  compact(atRev: number, available: Set<string>): void {
    if (this.isEmpty()) throw new Error(`mvcc: compact on empty keyIndex ${this.key}`);
    let [genIdx, revIndex] = this.doCompact(atRev, available);
    const g = this.generations[genIdx]!;
    if (!g.isEmpty()) {
      if (revIndex !== -1) g.revs = g.revs.slice(revIndex);
      // A generation left with only its tombstone is over: drop it, unless it is the last.
      if (g.revs.length === 1 && genIdx !== this.generations.length - 1) {
        available.delete(revKey(g.revs[0]!));
        genIdx += 1;
      }
    }
    this.generations = this.generations.slice(genIdx);
  }

  /** Like compact, but only reports which revisions a compaction at `atRev` would keep. */
  keep(atRev: number, available: Set<string>): void {
    if (this.isEmpty()) return;
    const [genIdx, revIndex] = this.doCompact(atRev, available);
    const g = this.generations[genIdx]!;
    if (!g.isEmpty() && revIndex === g.revs.length - 1 && genIdx !== this.generations.length - 1) {
      available.delete(revKey(g.revs[revIndex]!));
    }
  }

  private doCompact(atRev: number, available: Set<string>): [number, number] {
    const f = (rev: Revision) => {
      if (rev.main <= atRev) {
        available.add(revKey(rev));
        return false;
      }
      return true;
    };
    let genIdx = 0;
    let g = this.generations[0]!;
    // Skip whole generations that ended (tombstone) at or before the compact revision.
    while (genIdx < this.generations.length - 1) {
      const tomb = g.revs[g.revs.length - 1]!.main;
      if (tomb > atRev) break;
      genIdx += 1;
      g = this.generations[genIdx]!;
    }
    return [genIdx, g.walk(f)];
  }

  /** True when the key has no history left (it can leave the index). */
  isEmpty(): boolean {
    return this.generations.length === 1 && this.generations[0]!.isEmpty();
  }

  private findGeneration(rev: number): Generation | undefined {
    const lastg = this.generations.length - 1;
    for (let cg = lastg; cg >= 0; cg--) {
      const g = this.generations[cg]!;
      if (g.revs.length === 0) continue;
      // A generation that ended at or before `rev`: the key did not exist at `rev`.
      if (cg !== lastg && g.revs[g.revs.length - 1]!.main <= rev) return undefined;
      if (g.revs[0]!.main <= rev) return g;
    }
    return undefined;
  }
}

/** A revision as a Set/Map key. */
export function revKey(rev: Revision): string {
  return `${rev.main}_${rev.sub}`;
}
