// What mvcc needs from the storage engine, and the write buffer between them.
//
// Like etcd's backend (mvcc/backend), writes are not committed one by one: they collect in a
// batch that is committed to the storage engine every `batchIntervalMs` or `batchLimit`
// writes, together with the applied Raft index (`meta/consistent_index`) they produced, so a
// restart replays exactly the entries after the last committed batch. The Raft WAL is the
// durability point; the batch is not.
//
// Until a batch is committed, reads must still see its writes: the buffer is consulted first
// (etcd's txReadBuffer), then the engine's latest committed state.

/** etcd 3.4's bucket names: our storage file is an etcd backend file. */
export const buckets = {
  key: "key",
  meta: "meta",
  lease: "lease",
  members: "members",
  membersRemoved: "members_removed",
  cluster: "cluster",
  alarm: "alarm",
  auth: "auth",
  authUsers: "authUsers",
  authRoles: "authRoles",
} as const;
export type BucketName = (typeof buckets)[keyof typeof buckets];

/** A read transaction on the engine's last committed state. Keys compare bytewise. */
export interface StorageReadTx {
  get(bucket: string, key: Uint8Array): Uint8Array | undefined;
  /** Calls `f` for each entry with start <= key < end (end undefined: to the bucket's end), in order; stop with false. */
  scan(
    bucket: string,
    start: Uint8Array,
    end: Uint8Array | undefined,
    f: (k: Uint8Array, v: Uint8Array) => boolean,
  ): void;
}

export interface StorageWriteTx extends StorageReadTx {
  createBucket(bucket: string): void;
  put(bucket: string, key: Uint8Array, value: Uint8Array): void;
  delete(bucket: string, key: Uint8Array): void;
}

/** The storage engine as mvcc sees it: one writer, snapshot readers. */
export interface Storage {
  view<T>(f: (tx: StorageReadTx) => T): T;
  update(f: (tx: StorageWriteTx) => void): Promise<void>;
  close(): Promise<void>;
  /** Size of the data file in bytes (Status dbSize, the space quota). */
  sizeBytes(): number;
  /** Writes a consistent copy of the data file (Maintenance.Snapshot); absent for in-memory storage. */
  snapshotTo?(path: string): Promise<{ bytes: number }>;
  /** Replaces the whole data file (a Raft snapshot from the leader); no commit may run meanwhile. */
  replaceWith?(data: Uint8Array): Promise<void>;
  /** The same from a whole data file already durable on disk (moved into place, not copied). */
  replaceWithFile?(path: string): Promise<void>;
  /** Rewrites the data file without its free pages (Maintenance.Defragment); no commit may run meanwhile. */
  defragment?(onProgress?: (p: { bytesCopied: number; keysCopied: number }) => void): Promise<void>;
}

const toKey = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("latin1");
const fromKey = (s: string) => new Uint8Array(Buffer.from(s, "latin1"));

/** Writes not yet committed to the engine: bucket -> key (latin1) -> value, or null for a delete. */
type Pending = Map<string, Map<string, Uint8Array | null>>;

export class BufferedBackend implements StorageWriteTx {
  private pending: Pending = new Map();
  /** Batches handed to the engine and not yet landed, oldest first (still visible to reads). */
  private readonly inflight: Pending[] = [];
  private pendingWrites = 0;
  private commitChain: Promise<void> = Promise.resolve();

  constructor(
    readonly storage: Storage,
    /** Commit once this many writes are pending (etcd: 10,000). */
    readonly batchLimit = 10_000,
  ) {}

  get pendingCount(): number {
    return this.pendingWrites;
  }

  createBucket(bucket: string): void {
    if (!this.pending.has(bucket)) this.pending.set(bucket, new Map());
  }

  put(bucket: string, key: Uint8Array, value: Uint8Array): void {
    this.bucketOf(bucket).set(toKey(key), value);
    this.pendingWrites += 1;
  }

  delete(bucket: string, key: Uint8Array): void {
    this.bucketOf(bucket).set(toKey(key), null);
    this.pendingWrites += 1;
  }

  get(bucket: string, key: Uint8Array): Uint8Array | undefined {
    const k = toKey(key);
    for (const layer of this.layersNewestFirst()) {
      const v = layer.get(bucket)?.get(k);
      if (v !== undefined) return v ?? undefined;
    }
    return this.storage.view((tx) => tx.get(bucket, key));
  }

  /** Ordered scan merging the buffered writes over the engine's committed entries. */
  scan(
    bucket: string,
    start: Uint8Array,
    end: Uint8Array | undefined,
    f: (k: Uint8Array, v: Uint8Array) => boolean,
  ): void {
    const lo = toKey(start);
    const hi = end === undefined ? undefined : toKey(end);
    // Buffered writes in range, newest layer winning, sorted.
    const overlay = new Map<string, Uint8Array | null>();
    for (const layer of this.layersNewestFirst().reverse()) {
      const b = layer.get(bucket);
      if (b === undefined) continue;
      for (const [k, v] of b) if (k >= lo && (hi === undefined || k < hi)) overlay.set(k, v);
    }
    const extra = [...overlay.keys()].sort();
    let i = 0;
    let stopped = false;
    const emitOverlayBelow = (bound: string | undefined): boolean => {
      while (i < extra.length && (bound === undefined || extra[i]! < bound)) {
        const k = extra[i++]!;
        const v = overlay.get(k)!;
        if (v !== null && !f(fromKey(k), v)) return false;
      }
      return true;
    };
    this.storage.view((tx) =>
      tx.scan(bucket, start, end, (k, v) => {
        const ks = toKey(k);
        if (!emitOverlayBelow(ks)) {
          stopped = true;
          return false;
        }
        if (overlay.has(ks)) {
          // The buffered write replaces (or deletes) the committed entry; it was or will be emitted from the overlay.
          if (extra[i] === ks) {
            i += 1;
            const ov = overlay.get(ks)!;
            if (ov !== null && !f(k, ov)) {
              stopped = true;
              return false;
            }
          }
          return true;
        }
        if (!f(k, v)) {
          stopped = true;
          return false;
        }
        return true;
      }),
    );
    if (!stopped) emitOverlayBelow(undefined);
  }

  /**
   * Runs `f` with no commit in flight and none starting until it finishes (defragmentation
   * swaps the data file). Writes keep collecting in the buffer meanwhile, and reads are
   * served from the buffer and the engine as usual.
   */
  exclusive<T>(f: () => Promise<T>): Promise<T> {
    const run = this.commitChain.then(f);
    this.commitChain = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /**
   * Commits the pending writes as one engine transaction. Commits run one after another;
   * the returned promise settles when this batch is durable in the engine.
   */
  commit(): Promise<void> {
    if (this.pendingWrites === 0 && this.pending.size === 0) return this.commitChain;
    const batch = this.pending;
    this.pending = new Map();
    this.pendingWrites = 0;
    this.inflight.push(batch);
    // A failed commit leaves the batch in `inflight`, still visible, and rejects: the caller must
    // treat it as fatal (etcd panics), because the Raft entries it applied are acknowledged.
    const run = async () => {
      await this.storage.update((tx) => {
        for (const [bucket, entries] of batch) {
          tx.createBucket(bucket);
          for (const [k, v] of entries) {
            if (v === null) tx.delete(bucket, fromKey(k));
            else tx.put(bucket, fromKey(k), v);
          }
        }
      });
      this.inflight.splice(this.inflight.indexOf(batch), 1);
    };
    this.commitChain = this.commitChain.then(run);
    return this.commitChain;
  }

  private layersNewestFirst(): Pending[] {
    return [this.pending, ...this.inflight.slice().reverse()];
  }

  private bucketOf(bucket: string): Map<string, Uint8Array | null> {
    let b = this.pending.get(bucket);
    if (b === undefined) {
      b = new Map();
      this.pending.set(bucket, b);
    }
    return b;
  }
}
