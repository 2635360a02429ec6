import * as fs from "node:fs";
import type { FileHandle, FileSystem, OpenOptions } from "./types.js";

// The real file system over node:fs. Data calls are synchronous and fsync has an async
// variant; see types.ts for why.

class NodeFileHandle implements FileHandle {
  readonly path: string;
  private fd: number;
  private closed = false;

  constructor(path: string, fd: number) {
    this.path = path;
    this.fd = fd;
  }

  private live(): number {
    if (this.closed) throw Object.assign(new Error(`EBADF: file closed: ${this.path}`), { code: "EBADF" });
    return this.fd;
  }

  read(buf: Uint8Array, position: number): number {
    const fd = this.live();
    let done = 0;
    while (done < buf.length) {
      const n = fs.readSync(fd, buf, done, buf.length - done, position + done);
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  write(buf: Uint8Array, position: number): void {
    const fd = this.live();
    let done = 0;
    while (done < buf.length) done += fs.writeSync(fd, buf, done, buf.length - done, position + done);
  }

  sync(): void {
    fs.fsyncSync(this.live());
  }

  datasync(): void {
    fs.fdatasyncSync(this.live());
  }

  syncAsync(): Promise<void> {
    const fd = this.live();
    return new Promise((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve())));
  }

  datasyncAsync(): Promise<void> {
    const fd = this.live();
    return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
  }

  truncate(size: number): void {
    fs.ftruncateSync(this.live(), size);
  }

  size(): number {
    return fs.fstatSync(this.live()).size;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}

export class NodeFileSystem implements FileSystem {
  open(path: string, opts: OpenOptions = {}): FileHandle {
    let flags: number;
    if (opts.readOnly) flags = fs.constants.O_RDONLY;
    else {
      flags = fs.constants.O_RDWR;
      if (opts.create) flags |= fs.constants.O_CREAT;
      if (opts.create && opts.exclusive) flags |= fs.constants.O_EXCL;
    }
    return new NodeFileHandle(path, fs.openSync(path, flags, 0o600));
  }

  exists(path: string): boolean {
    return fs.existsSync(path);
  }

  rename(from: string, to: string): void {
    fs.renameSync(from, to);
  }

  unlink(path: string): void {
    fs.unlinkSync(path);
  }

  mkdir(path: string, opts: { recursive?: boolean } = {}): void {
    fs.mkdirSync(path, { recursive: opts.recursive ?? false, mode: 0o700 });
  }

  readdir(path: string): string[] {
    return fs.readdirSync(path).sort();
  }

  syncDir(path: string): void {
    const fd = fs.openSync(path, fs.constants.O_RDONLY);
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
}
