// The multi-version key-value store (etcd's mvcc/kvstore.go and kvstore_txn.go): every
// write transaction that changes something gets the next store revision; each change is
// stored in the `key` bucket under its revision {main, sub} as a marshalled
// mvccpb.KeyValue (a deletion as a tombstone key holding only the key), and the in-memory
// TreeIndex maps keys to revisions so a read at any uncompacted revision finds its values.

import { crc32c } from "@node-rs/crc32";
import { mvccpb } from "@regmesh/proto";
import { type BufferedBackend, buckets } from "./backend.js";
import { KeyIndex, RevisionNotFoundError } from "./core/key-index.js";
import { bytesToRev, isTombstone, type Revision, revToBytes } from "./core/revision.js";
import { TreeIndex } from "./core/tree-index.js";
import { errCompacted, errFutureRev } from "./errors.js";

type KeyValue = mvccpb.KeyValue;

/** What the store needs from the lessor: which lease a key is attached to. */
export interface LeaseHooks {
  leaseOf(key: string): bigint;
  attach(lease: bigint, key: string): void;
  detach(lease: bigint, key: string): void;
}

export const noLeases: LeaseHooks = {
  leaseOf: () => 0n,
  attach: () => {},
  detach: () => {},
};

export type RangeOptions = {
  /** At most this many keys (0: all). */
  limit?: number;
  /** Read at this revision (0: the current one). */
  rev?: number;
  /** Only count the keys. */
  count?: boolean;
};

export type RangeResult = {
  kvs: KeyValue[];
  /** The store revision the read ran at (the header revision), not the `rev` option. */
  rev: number;
  /** How many keys the range holds at the read revision, regardless of `limit`. */
  count: number;
};

const metaScheduledCompact = new TextEncoder().encode("scheduledCompactRev");
const metaFinishedCompact = new TextEncoder().encode("finishedCompactRev");
const metaConsistentIndex = new TextEncoder().encode("consistent_index");

/** Keys are bytes at the API and binary strings (latin1) in the index. */
export const keyString = (b: Uint8Array) =>
  Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("latin1");
export const keyBytes = (s: string) => Buffer.from(s, "latin1");

/** Range end as the index takes it: undefined for one key, "" for "every key >= key". */
export function indexEnd(rangeEnd: Uint8Array | undefined): string | undefined {
  if (rangeEnd === undefined || rangeEnd.length === 0) return undefined;
  if (rangeEnd.length === 1 && rangeEnd[0] === 0) return "";
  return keyString(rangeEnd);
}

export class KVStore {
  /** The revision of the last write transaction that changed something (etcd starts at 1). */
  private currentRev = 1;
  /** Reads below this revision are refused (-1: never compacted). */
  private compactMainRev = -1;
  private consistentIdx = 0;
  readonly index = new TreeIndex();
  /** Called after every write transaction that changed something (the watchable store listens). */
  onChanges: ((changes: Change[], rev: number) => void) | undefined;

  constructor(
    readonly backend: BufferedBackend,
    private readonly leases: LeaseHooks = noLeases,
  ) {
    for (const b of Object.values(buckets)) backend.createBucket(b);
  }

  get rev(): number {
    return this.currentRev;
  }

  get compactRev(): number {
    return this.compactMainRev;
  }

  /** The Raft index of the last entry applied (saved with the writes it produced). */
  get consistentIndex(): number {
    return this.consistentIdx;
  }

  setConsistentIndex(index: number): void {
    if (index < this.consistentIdx)
      throw new Error(`mvcc: consistent index going back ${this.consistentIdx} -> ${index}`);
    this.consistentIdx = index;
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(index));
    this.backend.put(buckets.meta, metaConsistentIndex, b);
  }

  /** Reads the store's state back from the backend at start-up (etcd's store.restore). */
  restore(): { scheduledCompact: number | undefined } {
    const metaRev = (k: Uint8Array) => {
      const v = this.backend.get(buckets.meta, k);
      return v === undefined ? undefined : bytesToRev(v).main;
    };
    const finished = metaRev(metaFinishedCompact);
    const scheduled = metaRev(metaScheduledCompact);
    const ci = this.backend.get(buckets.meta, metaConsistentIndex);
    if (ci !== undefined) {
      this.consistentIdx = Number(new DataView(ci.buffer, ci.byteOffset, 8).getBigUint64(0));
    }
    if (finished !== undefined) this.compactMainRev = finished;

    this.backend.scan(buckets.key, new Uint8Array(0), undefined, (k, v) => {
      const rev = bytesToRev(k);
      const kv = mvccpb.KeyValue.decode(v);
      const key = keyString(kv.key);
      const ki = this.index.keyIndex(key);
      if (isTombstone(k)) {
        if (ki !== undefined && !ki.isEmpty()) {
          ki.tombstone(rev);
          const lease = this.leases.leaseOf(key);
          if (lease !== 0n) this.leases.detach(lease, key);
        }
      } else {
        if (ki === undefined) {
          // The first revision seen may be a later version (after compaction): restore its generation.
          const restored = new KeyIndex(key);
          restored.restore({ main: Number(kv.createRevision), sub: 0 }, rev, Number(kv.version));
          this.index.insert(restored);
        } else {
          ki.put(rev);
        }
        const old = this.leases.leaseOf(key);
        if (old !== 0n && old !== kv.lease) this.leases.detach(old, key);
        if (kv.lease !== 0n) {
          try {
            this.leases.attach(kv.lease, key);
          } catch {
            // A key naming a lease that is gone (revoked in a batch not yet committed at a
            // crash): etcd logs and goes on; the key stays without a lease.
          }
        }
      }
      if (rev.main > this.currentRev) this.currentRev = rev.main;
      return true;
    });
    if (scheduled !== undefined && scheduled > this.currentRev) this.currentRev = scheduled;
    const pending = scheduled !== undefined && scheduled !== finished ? scheduled : undefined;
    return { scheduledCompact: pending };
  }

  /** A read at the current revision (or an older one through `RangeOptions.rev`). */
  read(): ReadTxn {
    return new ReadTxn(this, this.currentRev);
  }

  /** The single write transaction; changes become visible (and revisioned) at `end()`. */
  write(): WriteTxn {
    return new WriteTxn(this, this.currentRev);
  }

  /** @internal */
  rangeKeys(key: Uint8Array, end: string | undefined, curRev: number, ro: RangeOptions): RangeResult {
    const want = ro.rev ?? 0;
    if (want > curRev) throw errFutureRev();
    const rev = want <= 0 ? curRev : want;
    if (rev < this.compactMainRev) throw errCompacted();
    const k = keyString(key);
    if (ro.count) return { kvs: [], rev: curRev, count: this.index.count(k, end, rev) };
    const { revs } = this.index.range(k, end, rev);
    const limit = ro.limit !== undefined && ro.limit > 0 && ro.limit < revs.length ? ro.limit : revs.length;
    const kvs: KeyValue[] = new Array(limit);
    for (let i = 0; i < limit; i++) kvs[i] = this.valueAt(revs[i]!);
    return { kvs, rev: curRev, count: revs.length };
  }

  /** The stored KeyValue of one revision (it must exist: the index said so). */
  valueAt(rev: Revision): KeyValue {
    const v = this.backend.get(buckets.key, revToBytes(rev));
    if (v === undefined)
      throw new Error(`mvcc: revision ${rev.main}_${rev.sub} in the index but not in the backend`);
    return mvccpb.KeyValue.decode(v);
  }

  /** @internal Called by WriteTxn.end. */
  commitRev(rev: number): void {
    if (rev !== this.currentRev + 1) throw new Error(`mvcc: revision ${rev} after ${this.currentRev}`);
    this.currentRev = rev;
  }

  /**
   * Compacts history at `rev`: reads below it are refused from now on; the index drops what
   * no read can need; the backend entries go in batches (`compactBatch` at a time).
   */
  compact(rev: number): { done: () => boolean; step: () => boolean } {
    if (rev <= this.compactMainRev) throw errCompacted();
    if (rev > this.currentRev) throw errFutureRev();
    this.compactMainRev = rev;
    this.backend.put(buckets.meta, metaScheduledCompact, revToBytes({ main: rev, sub: 0 }));
    const keep = this.index.compact(rev);
    return this.scheduleCompaction(rev, keep);
  }

  /** Finishes a compaction that a crash interrupted (scheduled but not finished). */
  resumeCompaction(rev: number): { done: () => boolean; step: () => boolean } {
    this.compactMainRev = rev;
    return this.scheduleCompaction(rev, this.index.compact(rev));
  }

  /**
   * Physical compaction as a resumable task: each `step()` deletes up to `compactBatch`
   * unneeded revisions at or below `rev` and returns true when finished. The caller runs
   * steps between writes so compaction never stalls the apply loop (etcd sleeps 10 ms
   * between batches of 1000 for the same reason).
   */
  private scheduleCompaction(rev: number, keep: Set<string>, compactBatch = 1000) {
    const end = new Uint8Array(8);
    new DataView(end.buffer).setBigUint64(0, BigInt(rev + 1));
    let last: Uint8Array = new Uint8Array(0);
    let finished = false;
    const step = (): boolean => {
      if (finished) return true;
      const batch: Uint8Array[] = [];
      this.backend.scan(buckets.key, last, end, (k) => {
        batch.push(k);
        return batch.length < compactBatch;
      });
      for (const k of batch) {
        const r = bytesToRev(k);
        if (!keep.has(`${r.main}_${r.sub}`)) this.backend.delete(buckets.key, k);
      }
      if (batch.length < compactBatch) {
        this.backend.put(buckets.meta, metaFinishedCompact, revToBytes({ main: rev, sub: 0 }));
        finished = true;
        return true;
      }
      const r = bytesToRev(batch[batch.length - 1]!);
      last = revToBytes({ main: r.main, sub: r.sub + 1 });
      return false;
    };
    return { done: () => finished, step };
  }

  /**
   * etcd's HashKV (mvcc/kvstore.go hashByRev): CRC-32C over the `key` bucket's name, then
   * every key and value with revision <= `rev`, skipping revisions below the compaction
   * that a finished compaction would delete. Equal histories give equal hashes on
   * registry-node and etcd, because the stored bytes are the same.
   */
  hashByRev(rev: number): { hash: number; currentRev: number; compactRev: number } {
    const compactRev = this.compactMainRev;
    if (rev > 0 && rev <= compactRev) throw errCompacted();
    if (rev > 0 && rev > this.currentRev) throw errFutureRev();
    const at = rev === 0 ? this.currentRev : rev;
    const keep = this.index.keep(at);
    let h = crc32c(Buffer.from(buckets.key));
    this.backend.scan(buckets.key, new Uint8Array(0), undefined, (k, v) => {
      const kr = bytesToRev(k);
      if (kr.main > at) return false;
      if (kr.main <= compactRev && keep.size > 0 && !keep.has(`${kr.main}_${kr.sub}`)) return true;
      h = crc32c(Buffer.from(k), h);
      h = crc32c(Buffer.from(v), h);
      return true;
    });
    return { hash: h >>> 0, currentRev: this.currentRev, compactRev };
  }

  /** @internal */
  leaseHooks(): LeaseHooks {
    return this.leases;
  }
}

export class ReadTxn {
  constructor(
    private readonly store: KVStore,
    readonly rev: number,
  ) {}

  range(key: Uint8Array, rangeEnd: Uint8Array | undefined, ro: RangeOptions = {}): RangeResult {
    return this.store.rangeKeys(key, indexEnd(rangeEnd), this.rev, ro);
  }
}

/** A change made by a write transaction, as watchers see it. */
export type Change = { type: mvccpb.Event_EventType; kv: KeyValue };

export class WriteTxn {
  readonly changes: KeyValue[] = [];
  private ended = false;

  constructor(
    private readonly store: KVStore,
    /** The store revision when the transaction began; its writes get beginRev + 1. */
    readonly beginRev: number,
  ) {}

  /** Reads see this transaction's own earlier writes (etcd's storeTxnWrite.Range). */
  range(key: Uint8Array, rangeEnd: Uint8Array | undefined, ro: RangeOptions = {}): RangeResult {
    const rev = this.changes.length > 0 ? this.beginRev + 1 : this.beginRev;
    return this.store.rangeKeys(key, indexEnd(rangeEnd), rev, ro);
  }

  put(key: Uint8Array, value: Uint8Array, lease: bigint): KeyValue {
    this.assertOpen();
    const rev = this.beginRev + 1;
    const k = keyString(key);
    let created = rev;
    let ver = 0;
    let oldLease = 0n;
    const at = this.store.index.keyIndex(k)?.find(rev);
    if (at !== undefined) {
      created = at.created.main;
      ver = at.ver;
      oldLease = this.store.leaseHooks().leaseOf(k);
    }
    const idxRev: Revision = { main: rev, sub: this.changes.length };
    const kv: KeyValue = {
      key: Buffer.from(key),
      value: Buffer.from(value),
      createRevision: BigInt(created),
      modRevision: BigInt(rev),
      version: BigInt(ver + 1),
      lease,
    };
    this.store.backend.put(buckets.key, revToBytes(idxRev), mvccpb.KeyValue.encode(kv).finish());
    this.store.index.put(k, idxRev);
    this.changes.push(kv);
    const hooks = this.store.leaseHooks();
    if (oldLease !== 0n) hooks.detach(oldLease, k);
    if (lease !== 0n) hooks.attach(lease, k);
    return kv;
  }

  /** Deletes the keys in the range; returns how many. */
  deleteRange(key: Uint8Array, rangeEnd: Uint8Array | undefined): number {
    this.assertOpen();
    const rrev = this.changes.length > 0 ? this.beginRev + 1 : this.beginRev;
    const { keys } = this.store.index.range(keyString(key), indexEnd(rangeEnd), rrev);
    for (const k of keys) this.delete(k);
    return keys.length;
  }

  private delete(k: string): void {
    const idxRev: Revision = { main: this.beginRev + 1, sub: this.changes.length };
    const kv: KeyValue = {
      key: keyBytes(k),
      value: Buffer.alloc(0),
      createRevision: 0n,
      modRevision: 0n,
      version: 0n,
      lease: 0n,
    };
    this.store.backend.put(buckets.key, revToBytes(idxRev, true), mvccpb.KeyValue.encode(kv).finish());
    try {
      this.store.index.tombstone(k, idxRev);
    } catch (err) {
      if (err instanceof RevisionNotFoundError)
        throw new Error(`mvcc: cannot tombstone ${JSON.stringify(k)}: not live`);
      throw err;
    }
    this.changes.push(kv);
    const hooks = this.store.leaseHooks();
    const lease = hooks.leaseOf(k);
    if (lease !== 0n) hooks.detach(lease, k);
  }

  /**
   * Ends the transaction. When it changed something, the store revision moves to
   * beginRev + 1 and the changes come back as events (deletions carry that mod revision).
   */
  end(): Change[] {
    this.assertOpen();
    this.ended = true;
    if (this.changes.length === 0) return [];
    const rev = this.beginRev + 1;
    this.store.commitRev(rev);
    const events = this.changes.map((kv) =>
      kv.createRevision === 0n
        ? { type: mvccpb.Event_EventType.DELETE, kv: { ...kv, modRevision: BigInt(rev) } }
        : { type: mvccpb.Event_EventType.PUT, kv },
    );
    this.store.onChanges?.(events, rev);
    return events;
  }

  /** The revision a response header reports for this transaction (etcd's txn.Rev() + 1 if changed). */
  get headerRev(): number {
    return this.changes.length > 0 ? this.beginRev + 1 : this.beginRev;
  }

  private assertOpen(): void {
    if (this.ended) throw new Error("mvcc: write transaction already ended");
  }
}
