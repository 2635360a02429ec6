// An in-memory Storage with bbolt's transaction semantics (one writer, readers see the last
// committed state), for tests of the layers above the engine and for `--unsafe-no-storage`
// style experiments. Not durable.

import type { Storage, StorageReadTx, StorageWriteTx } from "./backend.js";

type Bucket = Map<string, Uint8Array>;
const toKey = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("latin1");
const fromKey = (s: string) => new Uint8Array(Buffer.from(s, "latin1"));

class MemTx implements StorageWriteTx {
  constructor(
    readonly state: Map<string, Bucket>,
    private readonly writable: boolean,
  ) {}

  get(bucket: string, key: Uint8Array): Uint8Array | undefined {
    return this.state.get(bucket)?.get(toKey(key));
  }

  scan(
    bucket: string,
    start: Uint8Array,
    end: Uint8Array | undefined,
    f: (k: Uint8Array, v: Uint8Array) => boolean,
  ): void {
    const b = this.state.get(bucket);
    if (b === undefined) return;
    const lo = toKey(start);
    const hi = end === undefined ? undefined : toKey(end);
    const keys = [...b.keys()].filter((k) => k >= lo && (hi === undefined || k < hi)).sort();
    for (const k of keys) if (!f(fromKey(k), b.get(k)!)) return;
  }

  createBucket(bucket: string): void {
    this.assertWritable();
    if (!this.state.has(bucket)) this.state.set(bucket, new Map());
  }

  put(bucket: string, key: Uint8Array, value: Uint8Array): void {
    this.assertWritable();
    const b = this.state.get(bucket);
    if (b === undefined) throw new Error(`bucket ${bucket} not found`);
    b.set(toKey(key), value.slice());
  }

  delete(bucket: string, key: Uint8Array): void {
    this.assertWritable();
    this.state.get(bucket)?.delete(toKey(key));
  }

  private assertWritable(): void {
    if (!this.writable) throw new Error("tx not writable");
  }
}

export class MemStorage implements Storage {
  private state = new Map<string, Bucket>();
  commits = 0;

  view<T>(f: (tx: StorageReadTx) => T): T {
    return f(new MemTx(this.state, false));
  }

  async update(f: (tx: StorageWriteTx) => void): Promise<void> {
    // Copy-on-write at bucket granularity: readers keep the old maps until the swap.
    const next = new Map<string, Bucket>();
    for (const [name, b] of this.state) next.set(name, new Map(b));
    f(new MemTx(next, true));
    await Promise.resolve();
    this.state = next;
    this.commits += 1;
  }

  async close(): Promise<void> {}

  sizeBytes(): number {
    let n = 0;
    for (const b of this.state.values()) for (const [k, v] of b) n += k.length + v.length;
    return n;
  }
}
