import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FileHandle, FileSystem, OpenOptions } from "../../src/io/index.js";
import { MemFileSystem, NodeFileSystem } from "../../src/io/index.js";
import { type Entry, EntryType, type HardState } from "../../src/raft/types.js";

const enc = new TextEncoder();

/** An entry whose data names it, with a length that varies so frames cross sectors. */
export function ent(index: number, term: number, extraBytes = (index * 37) % 300): Entry {
  const data = new Uint8Array(12 + extraBytes);
  data.set(enc.encode(`e${index}t${term}:`.padEnd(12, ".")));
  for (let i = 12; i < data.length; i++) data[i] = (index + i) & 0xff;
  return { index, term, type: EntryType.Normal, data };
}

export function ents(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push(ent(i, term));
  return out;
}

export function hs(term: number, vote: number, commit: number): HardState {
  return { term, vote, commit };
}

export type Disk = { fs: FileSystem; dir: string; done(): void };

export function memDisk(): Disk {
  const fs = new MemFileSystem();
  fs.mkdir("/data");
  return { fs, dir: "/data/wal", done() {} };
}

export function nodeDisk(): Disk {
  const root = mkdtempSync(join(tmpdir(), "regmesh-wal-"));
  return {
    fs: new NodeFileSystem(),
    dir: join(root, "wal"),
    done: () => rmSync(root, { recursive: true, force: true }),
  };
}

/** Reads a whole file through a FileSystem. */
export function readFile(fs: FileSystem, path: string): Uint8Array {
  const h = fs.open(path, { readOnly: true });
  try {
    const buf = new Uint8Array(h.size());
    h.read(buf, 0);
    return buf;
  } finally {
    h.close();
  }
}

/** Overwrites bytes of a file (durably: the test plays a disk that rotted). */
export function patchFile(fs: FileSystem, path: string, offset: number, bytes: Uint8Array): void {
  const h = fs.open(path);
  try {
    h.write(bytes, offset);
    h.sync();
  } finally {
    h.close();
  }
}

/** Offset of the first occurrence of `needle` in `hay`, or -1. */
export function indexOfBytes(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

export const text = (s: string) => enc.encode(s);

/** A FileSystem adapter that counts fsyncs (to check group commit and mustSync). */
export class CountingFs implements FileSystem {
  syncs = 0;
  constructor(private readonly inner: FileSystem) {}
  open(path: string, opts?: OpenOptions): FileHandle {
    const h = this.inner.open(path, opts);
    const count = () => {
      this.syncs++;
    };
    return {
      path: h.path,
      read: (b, p) => h.read(b, p),
      write: (b, p) => h.write(b, p),
      sync: () => {
        count();
        h.sync();
      },
      datasync: () => {
        count();
        h.datasync();
      },
      syncAsync: () => {
        count();
        return h.syncAsync();
      },
      datasyncAsync: () => {
        count();
        return h.datasyncAsync();
      },
      truncate: (n) => h.truncate(n),
      size: () => h.size(),
      close: () => h.close(),
    };
  }
  exists(p: string) {
    return this.inner.exists(p);
  }
  rename(a: string, b: string) {
    this.inner.rename(a, b);
  }
  unlink(p: string) {
    this.inner.unlink(p);
  }
  mkdir(p: string, o?: { recursive?: boolean }) {
    this.inner.mkdir(p, o);
  }
  readdir(p: string) {
    return this.inner.readdir(p);
  }
  syncDir(p: string) {
    this.inner.syncDir(p);
  }
}
