import { Rng } from "./rng.js";
import { type FileHandle, type FileSystem, FsError, type OpenOptions } from "./types.js";

// FaultFileSystem: a volatile write cache in front of a backing FileSystem (a MemFileSystem
// in simulations, the real NodeFileSystem in the binary). Writes and truncates are kept aside,
// per handle, until sync/datasync applies them to the backing file and fsyncs it; reads see
// them (read-your-writes, like the OS page cache). `crash()` then does what power loss does
// to a disk: unsynced writes are dropped, or (mode "tear") an arbitrary subset of their
// 512-byte sectors reaches the disk, some sectors only partly. Reopening sees what was
// fsynced plus that debris, nothing else.
//
// Directory operations (create, rename, unlink, mkdir) pass straight through and are durable
// when they return: a simplification; file contents are what the storage and WAL tests need.
//
// In the real binary: set REGMESH_FAULT_FS=1 and `defaultFileSystem()` (index.ts) returns a
// FaultFileSystem over the real disk and installs a SIGUSR2 handler that crashes it (drops
// unsynced writes; REGMESH_FAULT_TEAR=1 tears them instead, seeded by REGMESH_FAULT_SEED)
// and kills the process at once with SIGKILL. kill -9 alone cannot test durability:
// the OS page cache keeps every unsynced write of a killed process.

/** Sector size of the simulated disk: writes reach it (or not) one sector at a time. */
export const SECTOR_BYTES = 512;

export type CrashMode = "drop" | "tear";

type PendingOp = { kind: "write"; position: number; data: Uint8Array } | { kind: "truncate"; size: number };

/** Thrown by every operation of a FaultFileSystem once it has crashed (by `crashAfter`). */
export class SimulatedCrashError extends Error {
  readonly code = "EIO_SIMULATED_CRASH";
  constructor(message = "simulated crash") {
    super(message);
    this.name = "SimulatedCrashError";
  }
}

export type FaultOptions = {
  /** Seed of the draws made when tearing writes. */
  seed?: number;
};

class FaultFileHandle implements FileHandle {
  readonly path: string;
  pending: PendingOp[] = [];
  closed = false;

  constructor(
    private readonly owner: FaultFileSystem,
    readonly inner: FileHandle,
  ) {
    this.path = inner.path;
  }

  private live(): void {
    this.owner.checkAlive();
    if (this.closed) throw new FsError("EBADF", `file closed: ${this.path}`);
  }

  read(buf: Uint8Array, position: number): number {
    this.live();
    const size = this.size();
    if (position >= size) return 0;
    const n = Math.min(buf.length, size - position);
    const view = buf.subarray(0, n);
    const got = this.inner.read(view, position);
    view.fill(0, got);
    for (const op of this.pending) {
      if (op.kind === "truncate") {
        if (op.size < position + n) view.fill(0, Math.max(0, op.size - position));
        continue;
      }
      const start = Math.max(op.position, position);
      const end = Math.min(op.position + op.data.length, position + n);
      if (start < end) view.set(op.data.subarray(start - op.position, end - op.position), start - position);
    }
    return n;
  }

  write(buf: Uint8Array, position: number): void {
    this.live();
    this.owner.step(`write ${this.path}@${position}+${buf.length}`);
    this.pending.push({ kind: "write", position, data: buf.slice() });
  }

  truncate(size: number): void {
    this.live();
    this.owner.step(`truncate ${this.path} ${size}`);
    this.pending.push({ kind: "truncate", size });
  }

  sync(): void {
    this.live();
    this.owner.step(`sync ${this.path}`);
    this.flush();
    this.inner.sync();
  }

  datasync(): void {
    this.live();
    this.owner.step(`datasync ${this.path}`);
    this.flush();
    this.inner.datasync();
  }

  syncAsync(): Promise<void> {
    try {
      this.sync();
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  datasyncAsync(): Promise<void> {
    try {
      this.datasync();
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  size(): number {
    this.live();
    let size = this.inner.size();
    for (const op of this.pending) {
      size = op.kind === "truncate" ? op.size : Math.max(size, op.position + op.data.length);
    }
    return size;
  }

  close(): void {
    if (this.closed) return;
    // Closing does not make writes durable (close(2) does not fsync): they stay in the
    // "page cache" of the owner until a crash drops them. Simplification: they are applied
    // now, as a clean close followed by the OS writing back would.
    if (!this.owner.crashed) this.flush();
    this.closed = true;
    this.inner.close();
    this.owner.forget(this);
  }

  private flush(): void {
    for (const op of this.pending) {
      if (op.kind === "write") this.inner.write(op.data, op.position);
      else this.inner.truncate(op.size);
    }
    this.pending = [];
  }

  /** Power loss: each unsynced op reaches the disk only as the mode and the draws say. */
  crash(mode: CrashMode, rng: Rng): void {
    if (mode === "tear") {
      for (const op of this.pending) {
        if (op.kind === "truncate") {
          if (rng.chance(0.5)) this.inner.truncate(op.size);
          continue;
        }
        for (let off = 0; off < op.data.length; off += SECTOR_BYTES) {
          const end = Math.min(off + SECTOR_BYTES, op.data.length);
          const draw = rng.int(4);
          if (draw === 0 || draw === 1) continue; // sector lost
          // draw 2: the whole sector lands; draw 3: only a prefix of it (a torn sector).
          const cut = draw === 2 ? end : off + rng.int(end - off);
          if (cut > off) this.inner.write(op.data.subarray(off, cut), op.position + off);
        }
      }
      this.inner.sync();
    }
    this.pending = [];
    this.closed = true;
    this.inner.close();
  }
}

export class FaultFileSystem implements FileSystem {
  private readonly handles = new Set<FaultFileHandle>();
  private rng: Rng;
  private countdown = -1;
  private crashPredicate: ((op: string) => boolean) | null = null;
  private crashMode: CrashMode = "drop";
  crashed = false;
  /** The operation that was refused by the simulated crash, e.g. "write /db@0+4096" or "datasync /db". */
  crashedAt: string | null = null;
  /** Number of mutating file operations (write, truncate, sync) seen so far. */
  ops = 0;

  constructor(
    readonly backing: FileSystem,
    opts: FaultOptions = {},
  ) {
    this.rng = new Rng(opts.seed ?? 1);
  }

  /**
   * Crash just before the n-th next mutating operation (write, truncate, sync, datasync):
   * that operation and every later one throw SimulatedCrashError. n = 0 crashes at the
   * next one.
   */
  crashAfter(n: number, mode: CrashMode = "drop"): void {
    if (!(n >= 0)) throw new RangeError("crashAfter: n must be >= 0");
    this.countdown = n;
    this.crashMode = mode;
  }

  /**
   * Crash just before the first mutating operation for which `pred` returns true. Operations
   * are described as "write <path>@<offset>+<length>", "truncate <path> <size>",
   * "sync <path>" and "datasync <path>".
   */
  crashWhen(pred: (op: string) => boolean, mode: CrashMode = "drop"): void {
    this.crashPredicate = pred;
    this.crashMode = mode;
  }

  /** Power loss now: drop or tear every unsynced write, close every handle. */
  crash(mode: CrashMode = "drop"): void {
    for (const h of this.handles) h.crash(mode, this.rng);
    this.handles.clear();
    this.countdown = -1;
    this.crashPredicate = null;
  }

  /** After a crash: back on, as after a reboot (the backing disk keeps what landed). */
  restart(seed?: number): void {
    this.crash("drop");
    this.crashed = false;
    this.crashedAt = null;
    if (seed !== undefined) this.rng = new Rng(seed);
  }

  /** @internal */
  checkAlive(): void {
    if (this.crashed) throw new SimulatedCrashError();
  }

  /** @internal counts a mutating op and crashes when the countdown says so. */
  step(what: string): void {
    this.ops++;
    const hit = this.countdown === 0 || this.crashPredicate?.(what);
    if (hit) {
      this.crash(this.crashMode);
      this.crashed = true;
      this.crashedAt = what;
      throw new SimulatedCrashError(`simulated crash at op ${this.ops}: ${what}`);
    }
    if (this.countdown > 0) this.countdown--;
  }

  /** @internal */
  forget(h: FaultFileHandle): void {
    this.handles.delete(h);
  }

  open(path: string, opts: OpenOptions = {}): FileHandle {
    this.checkAlive();
    const h = new FaultFileHandle(this, this.backing.open(path, opts));
    this.handles.add(h);
    return h;
  }

  exists(path: string): boolean {
    this.checkAlive();
    return this.backing.exists(path);
  }

  rename(from: string, to: string): void {
    this.checkAlive();
    this.backing.rename(from, to);
  }

  unlink(path: string): void {
    this.checkAlive();
    this.backing.unlink(path);
  }

  mkdir(path: string, opts: { recursive?: boolean } = {}): void {
    this.checkAlive();
    this.backing.mkdir(path, opts);
  }

  readdir(path: string): string[] {
    this.checkAlive();
    return this.backing.readdir(path);
  }

  syncDir(path: string): void {
    this.checkAlive();
    this.backing.syncDir(path);
  }
}
