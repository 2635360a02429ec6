import { posix } from "node:path";
import { type FileHandle, type FileSystem, FsError, type OpenOptions } from "./types.js";

// An in-memory disk on which every write is durable at once. It plays the platter under
// FaultFileSystem in simulations: the fault layer is the volatile cache in front of it.

type Inode = { kind: "file"; data: Uint8Array; length: number } | { kind: "dir" };

class MemFileHandle implements FileHandle {
  readonly path: string;
  private closed = false;

  constructor(
    path: string,
    private readonly inode: Extract<Inode, { kind: "file" }>,
    private readonly readOnly: boolean,
  ) {
    this.path = path;
  }

  private live(write: boolean): Extract<Inode, { kind: "file" }> {
    if (this.closed) throw new FsError("EBADF", `file closed: ${this.path}`);
    if (write && this.readOnly) throw new FsError("EBADF", `file opened read-only: ${this.path}`);
    return this.inode;
  }

  read(buf: Uint8Array, position: number): number {
    const f = this.live(false);
    const n = Math.max(0, Math.min(buf.length, f.length - position));
    if (n > 0) buf.set(f.data.subarray(position, position + n), 0);
    return n;
  }

  write(buf: Uint8Array, position: number): void {
    const f = this.live(true);
    ensureCapacity(f, position + buf.length);
    f.data.set(buf, position);
    f.length = Math.max(f.length, position + buf.length);
  }

  sync(): void {
    this.live(false);
  }

  datasync(): void {
    this.live(false);
  }

  syncAsync(): Promise<void> {
    this.live(false);
    return Promise.resolve();
  }

  datasyncAsync(): Promise<void> {
    this.live(false);
    return Promise.resolve();
  }

  truncate(size: number): void {
    const f = this.live(true);
    ensureCapacity(f, size);
    if (size < f.length) f.data.fill(0, size, f.length);
    f.length = size;
  }

  size(): number {
    return this.live(false).length;
  }

  close(): void {
    this.closed = true;
  }
}

function ensureCapacity(f: Extract<Inode, { kind: "file" }>, size: number): void {
  if (size <= f.data.length) return;
  const next = new Uint8Array(Math.max(size, f.data.length * 2, 4096));
  next.set(f.data.subarray(0, f.length));
  f.data = next;
}

export class MemFileSystem implements FileSystem {
  private readonly nodes = new Map<string, Inode>([["/", { kind: "dir" }]]);

  private norm(path: string): string {
    return posix.resolve("/", path);
  }

  private parentMustExist(path: string): void {
    const parent = posix.dirname(path);
    const p = this.nodes.get(parent);
    if (p?.kind !== "dir") throw new FsError("ENOENT", `no such directory: ${parent}`);
  }

  open(path: string, opts: OpenOptions = {}): FileHandle {
    const p = this.norm(path);
    let inode = this.nodes.get(p);
    if (inode && opts.create && opts.exclusive) throw new FsError("EEXIST", `file exists: ${p}`);
    if (!inode) {
      if (!opts.create || opts.readOnly) throw new FsError("ENOENT", `no such file: ${p}`);
      this.parentMustExist(p);
      inode = { kind: "file", data: new Uint8Array(0), length: 0 };
      this.nodes.set(p, inode);
    }
    if (inode.kind !== "file") throw new FsError("EISDIR", `is a directory: ${p}`);
    return new MemFileHandle(path, inode, opts.readOnly ?? false);
  }

  exists(path: string): boolean {
    return this.nodes.has(this.norm(path));
  }

  rename(from: string, to: string): void {
    const f = this.norm(from);
    const t = this.norm(to);
    const inode = this.nodes.get(f);
    if (!inode) throw new FsError("ENOENT", `no such file: ${f}`);
    this.parentMustExist(t);
    this.nodes.delete(f);
    this.nodes.set(t, inode);
  }

  unlink(path: string): void {
    const p = this.norm(path);
    const inode = this.nodes.get(p);
    if (!inode) throw new FsError("ENOENT", `no such file: ${p}`);
    if (inode.kind === "dir") throw new FsError("EISDIR", `is a directory: ${p}`);
    this.nodes.delete(p);
  }

  mkdir(path: string, opts: { recursive?: boolean } = {}): void {
    const p = this.norm(path);
    if (this.nodes.has(p)) {
      if (opts.recursive) return;
      throw new FsError("EEXIST", `exists: ${p}`);
    }
    if (opts.recursive && p !== "/") this.mkdir(posix.dirname(p), opts);
    this.parentMustExist(p);
    this.nodes.set(p, { kind: "dir" });
  }

  readdir(path: string): string[] {
    const p = this.norm(path);
    const d = this.nodes.get(p);
    if (!d) throw new FsError("ENOENT", `no such directory: ${p}`);
    if (d.kind !== "dir") throw new FsError("ENOTDIR", `not a directory: ${p}`);
    const out: string[] = [];
    for (const name of this.nodes.keys()) {
      if (name !== p && posix.dirname(name) === p) out.push(posix.basename(name));
    }
    return out.sort();
  }

  syncDir(path: string): void {
    if (!this.nodes.has(this.norm(path))) throw new FsError("ENOENT", `no such directory: ${path}`);
  }
}
