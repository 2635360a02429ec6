// A bounded cache of pages (Node has no mmap). Second-chance CLOCK over a Map in insertion
// order: a hit only sets a flag (cheaper than an LRU move on the hot read path); eviction
// gives flagged entries one more round. Buffers are never mutated once cached: a commit
// puts a fresh buffer for each page it writes.
import type { Pgid } from "./core/types.js";

type Slot = { buf: Uint8Array; ref: boolean };

export class PageCache {
  private readonly map = new Map<Pgid, Slot>();
  private bytes = 0;
  hits = 0;
  misses = 0;

  constructor(readonly bytesMax: number) {}

  get(id: Pgid): Uint8Array | undefined {
    const s = this.map.get(id);
    if (!s) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    s.ref = true;
    return s.buf;
  }

  put(id: Pgid, buf: Uint8Array): void {
    const old = this.map.get(id);
    if (old) {
      this.bytes -= old.buf.length;
      this.map.delete(id);
    }
    this.map.set(id, { buf, ref: false });
    this.bytes += buf.length;
    this.evict();
  }

  delete(id: Pgid): void {
    const old = this.map.get(id);
    if (!old) return;
    this.bytes -= old.buf.length;
    this.map.delete(id);
  }

  clear(): void {
    this.map.clear();
    this.bytes = 0;
  }

  get size(): number {
    return this.bytes;
  }

  private evict(): void {
    let rounds = this.map.size * 2;
    while (this.bytes > this.bytesMax && rounds-- > 0) {
      const first = this.map.entries().next();
      if (first.done) return;
      const [id, slot] = first.value;
      this.map.delete(id);
      if (slot.ref) {
        slot.ref = false;
        this.map.set(id, slot);
      } else this.bytes -= slot.buf.length;
    }
  }
}
