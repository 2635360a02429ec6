// A bounded cache of pages (Node has no mmap). Second-chance CLOCK over a Map in insertion
// order: a hit only sets a flag (cheaper than an LRU move on the hot read path); eviction
// gives flagged entries one more round. Buffers are never mutated once cached: a commit
// caches the buffers it wrote and never touches them again.
//
// The limit counts real memory: a page may be a view into a larger buffer (a commit's
// slab of dirty pages), and that buffer stays alive while any page of it is cached, so
// each distinct ArrayBuffer is counted once, in full, while at least one page uses it.
import type { Pgid } from "./core/types.js";

type Slot = { buf: Uint8Array; ref: boolean };

export class PageCache {
  private readonly map = new Map<Pgid, Slot>();
  private readonly users = new Map<ArrayBufferLike, number>();
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
    this.delete(id);
    this.map.set(id, { buf, ref: false });
    const n = this.users.get(buf.buffer) ?? 0;
    if (n === 0) this.bytes += buf.buffer.byteLength;
    this.users.set(buf.buffer, n + 1);
    this.evict();
  }

  delete(id: Pgid): void {
    const old = this.map.get(id);
    if (!old) return;
    this.map.delete(id);
    this.unuse(old.buf);
  }

  clear(): void {
    this.map.clear();
    this.users.clear();
    this.bytes = 0;
  }

  /** Bytes of memory held by cached pages (whole backing buffers). */
  get size(): number {
    return this.bytes;
  }

  private unuse(buf: Uint8Array): void {
    const n = this.users.get(buf.buffer)! - 1;
    if (n === 0) {
      this.users.delete(buf.buffer);
      this.bytes -= buf.buffer.byteLength;
    } else this.users.set(buf.buffer, n);
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
      } else this.unuse(slot.buf);
    }
  }
}
