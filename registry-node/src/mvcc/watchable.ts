// The watchable store (etcd's mvcc/watchable_store.go): delivers every change to the
// watchers whose range it falls in, in revision order, without ever blocking a writer.
//
// A watcher is *synced* when it has seen everything up to the current revision: new
// changes are pushed to it as they are applied. A watcher is *unsynced* when it starts at
// an older revision, or when its consumer stopped accepting (a slow client; etcd calls
// these victims): it is caught up from the backend's `key` bucket in bounded batches by
// `syncWatchers()`, which the server calls on a timer, and rejoins the synced set once
// current. A watcher whose next revision was compacted away gets a compaction notice.

import { mvccpb } from "@regmesh/proto";
import { buckets } from "./backend.js";
import { bytesToRev, isTombstone, revToBytes } from "./core/revision.js";
import { type Change, type KVStore, keyString } from "./kvstore.js";

export type WatchFilter = "noPut" | "noDelete";

/** What a watcher's consumer (a gRPC watch stream) receives. */
export type WatchDelivery =
  | { kind: "events"; events: Change[]; rev: number }
  | { kind: "compacted"; compactRev: number; rev: number };

export type WatcherSpec = {
  /** Binary-string key; `end` undefined watches one key, "" every key >= key. */
  key: string;
  end: string | undefined;
  /** First revision to deliver (0: from the next change). */
  startRev: number;
  filters: WatchFilter[];
  /**
   * Delivers to the consumer; returns false when the consumer is congested (the delivery
   * was still accepted). The watcher then waits for `resume()` and catches up from storage.
   */
  send: (d: WatchDelivery) => boolean;
};

export class Watcher {
  /** Next revision this watcher needs. */
  minRev: number;
  /** Congested: the consumer asked us to stop until it drains. */
  blocked = false;
  canceled = false;

  constructor(
    readonly id: number,
    readonly spec: WatcherSpec,
    minRev: number,
  ) {
    this.minRev = minRev;
  }

  matches(key: string): boolean {
    const { key: lo, end } = this.spec;
    if (end === undefined) return key === lo;
    return key >= lo && (end === "" || key < end);
  }

  filter(changes: Change[]): Change[] {
    const { filters } = this.spec;
    return changes.filter(
      (c) =>
        this.matches(keyString(c.kv.key)) &&
        !(filters.includes("noPut") && c.type === mvccpb.Event_EventType.PUT) &&
        !(filters.includes("noDelete") && c.type === mvccpb.Event_EventType.DELETE),
    );
  }
}

/** Bounds of one catch-up round, so catching up slow watchers never starves the apply loop. */
export const watchLimits = {
  /** Revisions read from the backend per syncWatchers() call (etcd: 1000 watchers, unbounded revs). */
  syncRevisionsMax: 1000,
};

export class WatchableStore {
  private nextId = 1;
  /** Single-key watchers by key, for O(1) matching of the common case. */
  private readonly syncedByKey = new Map<string, Set<Watcher>>();
  /** Range and prefix watchers. */
  private readonly syncedRanges = new Set<Watcher>();
  private readonly unsynced = new Set<Watcher>();

  constructor(private store: KVStore) {
    store.onChanges = (changes, rev) => this.notify(changes, rev);
  }

  /** The store watched (replaced by `restore`). */
  get kv(): KVStore {
    return this.store;
  }

  /**
   * Moves every watcher over to a store rebuilt from a new backend (a snapshot installed from
   * the leader), as etcd's watchableStore.Restore: synced watchers become unsynced, and all
   * are caught up from the new store by `syncWatchers()` from the revision each needs next,
   * or told of a compaction if the new store no longer has it. No event is lost or repeated:
   * the new store holds every revision up to its own, and a watcher's next revision is where
   * it stopped on the old one.
   */
  restore(store: KVStore): void {
    if (store === this.store) throw new Error("mvcc: restore onto the same store");
    this.store.onChanges = undefined;
    this.store = store;
    store.onChanges = (changes, rev) => this.notify(changes, rev);
    for (const set of this.syncedByKey.values()) for (const w of set) this.unsynced.add(w);
    for (const w of this.syncedRanges) this.unsynced.add(w);
    this.syncedByKey.clear();
    this.syncedRanges.clear();
  }

  get counts(): { synced: number; unsynced: number } {
    let synced = this.syncedRanges.size;
    for (const s of this.syncedByKey.values()) synced += s.size;
    return { synced, unsynced: this.unsynced.size };
  }

  watch(spec: WatcherSpec): Watcher {
    const cur = this.kv.rev;
    const start = spec.startRev > 0 ? spec.startRev : cur + 1;
    const w = new Watcher(this.nextId++, spec, start);
    if (start > cur) this.addSynced(w);
    else this.unsynced.add(w);
    return w;
  }

  cancel(w: Watcher): void {
    w.canceled = true;
    this.removeSynced(w);
    this.unsynced.delete(w);
  }

  /**
   * Whether the watcher has seen every change up to the current revision (etcd: it is in
   * the synced group). `minRev` alone does not say so: a single-key watcher's is only
   * moved on by changes to its key.
   */
  isSynced(w: Watcher): boolean {
    return !w.canceled && !w.blocked && !this.unsynced.has(w);
  }

  /** The consumer drained: the watcher may receive again (caught up by the next sync). */
  resume(w: Watcher): void {
    w.blocked = false;
  }

  /** Pushes one applied write transaction's changes to the synced watchers it concerns. */
  private notify(changes: Change[], rev: number): void {
    const touched = new Set<Watcher>();
    for (const c of changes) {
      const set = this.syncedByKey.get(keyString(c.kv.key));
      if (set) for (const w of set) touched.add(w);
    }
    for (const w of this.syncedRanges) touched.add(w);
    for (const w of touched) {
      const evs = w.filter(changes);
      w.minRev = rev + 1;
      if (evs.length === 0) continue;
      if (!w.spec.send({ kind: "events", events: evs, rev })) this.makeVictim(w);
    }
  }

  private makeVictim(w: Watcher): void {
    w.blocked = true;
    this.removeSynced(w);
    this.unsynced.add(w);
  }

  /**
   * Catches unsynced watchers up from the backend: one bounded round. Returns true when
   * watchers remain unsynced (call again soon), false when all are current or blocked.
   */
  syncWatchers(): boolean {
    const cur = this.kv.rev;
    const compactRev = this.kv.compactRev;
    const ready = [...this.unsynced].filter((w) => !w.blocked);
    if (ready.length === 0) return false;
    // Compacted watchers first: their history is gone (etcd's chooseAll).
    for (const w of ready) {
      if (compactRev > 0 && w.minRev < compactRev) {
        this.unsynced.delete(w);
        w.canceled = true;
        w.spec.send({ kind: "compacted", compactRev, rev: 0 });
      }
    }
    const live = ready.filter((w) => !w.canceled);
    if (live.length === 0) return this.unsynced.size > 0;
    const minRev = Math.min(...live.map((w) => w.minRev));
    const maxRev = Math.min(cur, minRev + watchLimits.syncRevisionsMax - 1);
    const changesByRev = this.readChanges(minRev, maxRev);
    // Like etcd, one catch-up delivery per watcher per round, carrying every matching
    // change of the round, with the store's current revision in its header.
    for (const w of live) {
      const evs: Change[] = [];
      for (const [rev, changes] of changesByRev) {
        if (rev >= w.minRev) evs.push(...w.filter(changes));
      }
      w.minRev = Math.max(w.minRev, maxRev + 1);
      if (evs.length > 0 && !w.spec.send({ kind: "events", events: evs, rev: cur })) w.blocked = true;
      if (maxRev === cur && !w.blocked) {
        this.unsynced.delete(w);
        this.addSynced(w);
      }
    }
    return [...this.unsynced].some((w) => !w.blocked);
  }

  /** Changes with main revision in [fromRev, toRev], grouped by revision, in order. */
  private readChanges(fromRev: number, toRev: number): Map<number, Change[]> {
    const out = new Map<number, Change[]>();
    if (fromRev > toRev) return out;
    this.kv.backend.scan(
      buckets.key,
      revToBytes({ main: fromRev, sub: 0 }),
      revToBytes({ main: toRev + 1, sub: 0 }),
      (k, v) => {
        const rev = bytesToRev(k);
        const kv = mvccpb.KeyValue.decode(v);
        const change: Change = isTombstone(k)
          ? { type: mvccpb.Event_EventType.DELETE, kv: { ...kv, modRevision: BigInt(rev.main) } }
          : { type: mvccpb.Event_EventType.PUT, kv };
        const list = out.get(rev.main);
        if (list) list.push(change);
        else out.set(rev.main, [change]);
        return true;
      },
    );
    return out;
  }

  private addSynced(w: Watcher): void {
    if (w.spec.end === undefined) {
      let set = this.syncedByKey.get(w.spec.key);
      if (!set) {
        set = new Set();
        this.syncedByKey.set(w.spec.key, set);
      }
      set.add(w);
    } else {
      this.syncedRanges.add(w);
    }
  }

  private removeSynced(w: Watcher): void {
    if (w.spec.end === undefined) {
      const set = this.syncedByKey.get(w.spec.key);
      set?.delete(w);
      if (set?.size === 0) this.syncedByKey.delete(w.spec.key);
    } else {
      this.syncedRanges.delete(w);
    }
  }
}
