// The file layer that storage/ and wal/ stand on. Two implementations share this
// interface: NodeFileSystem (the real disk) and FaultFileSystem (keeps writes that were not
// fsynced aside, so a simulated crash can drop or tear them).
//
// Why synchronous data calls (read/write/truncate) with an async fsync:
// - Node has no mmap, so the B+tree reads pages through positioned reads. A 4 KiB read that
//   hits the OS page cache costs ~2 µs as a direct syscall but ~20-50 µs as a libuv
//   threadpool round trip, and a synchronous read keeps the bbolt-style cursor API
//   synchronous (a cursor step never yields to the event loop mid-transaction).
// - Writes of dirty pages go to the OS page cache and return quickly; they are batched
//   per commit anyway.
// - fsync is the slow call (milliseconds on a real disk). `syncAsync`/`datasyncAsync` run it
//   on the threadpool so the event loop keeps serving reads while a commit (or a WAL batch)
//   waits for the disk. The sync variants exist for start-up and shutdown paths.
// The storage and WAL shells are async (their commit/append return promises); only the
// durability wait is actually asynchronous.

/** Options of FileSystem.open. */
export type OpenOptions = {
  /** Create the file when it does not exist. */
  create?: boolean;
  /** With `create`: fail with code EEXIST when the file exists (O_CREAT|O_EXCL). */
  exclusive?: boolean;
  /** Open for reading only; writes throw. */
  readOnly?: boolean;
};

/** An open file. Positions and sizes are byte offsets (numbers: files stay below 2^53). */
export interface FileHandle {
  readonly path: string;
  /** Reads up to buf.length bytes at `position`; returns how many were read (short at EOF). */
  read(buf: Uint8Array, position: number): number;
  /** Writes all of `buf` at `position` (extends the file when needed). Not durable until a sync. */
  write(buf: Uint8Array, position: number): void;
  /** fsync: data and metadata durable. */
  sync(): void;
  /** fdatasync: data (and the size, when it changed) durable. */
  datasync(): void;
  /** fsync on the threadpool. */
  syncAsync(): Promise<void>;
  /** fdatasync on the threadpool. */
  datasyncAsync(): Promise<void>;
  /** Sets the file size (shrinks or extends with zeros). Not durable until a sync. */
  truncate(size: number): void;
  size(): number;
  close(): void;
}

/** Errors thrown by a FileSystem carry Node's errno codes (ENOENT, EEXIST, EBADF, ...). */
export interface FileSystem {
  open(path: string, opts?: OpenOptions): FileHandle;
  exists(path: string): boolean;
  /** Atomic replace of `to` by `from` (durable after syncDir of the parent). */
  rename(from: string, to: string): void;
  unlink(path: string): void;
  mkdir(path: string, opts?: { recursive?: boolean }): void;
  /** Names in a directory, sorted. */
  readdir(path: string): string[];
  /** fsync of a directory: makes creations, renames and unlinks in it durable. */
  syncDir(path: string): void;
}

/** An error with Node's errno code, thrown by the in-memory file systems. */
export class FsError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.name = "FsError";
    this.code = code;
  }
}
