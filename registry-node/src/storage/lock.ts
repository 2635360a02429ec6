// Exclusive open. Node has no flock(2), so the lock is a file `<db>.lock` created with
// O_CREAT|O_EXCL holding the owner's pid. A lock whose pid is dead (process.kill(pid, 0)
// fails with ESRCH) was left by a crash and is taken over, with a log line; a live one is a
// typed error. A lock holding our own pid that this process does not hold (a simulated
// crash in the same process) is stale too.
import type { FileSystem } from "../io/index.js";
import { ErrLocked } from "./core/errors.js";

const held = new WeakMap<FileSystem, Set<string>>();

export type LockHandle = { path: string; release(): void };

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function readPid(fs: FileSystem, path: string): number {
  try {
    const h = fs.open(path, { readOnly: true });
    try {
      const buf = new Uint8Array(64);
      const n = h.read(buf, 0);
      return Number.parseInt(new TextDecoder().decode(buf.subarray(0, n)).trim(), 10);
    } finally {
      h.close();
    }
  } catch {
    return Number.NaN;
  }
}

export function acquireLock(fs: FileSystem, path: string, log: (msg: string) => void): LockHandle {
  let mine = held.get(fs);
  if (!mine) held.set(fs, (mine = new Set()));
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const h = fs.open(path, { create: true, exclusive: true });
      h.write(new TextEncoder().encode(`${process.pid}\n`), 0);
      h.sync();
      h.close();
      mine.add(path);
      const set = mine;
      return {
        path,
        release() {
          set.delete(path);
          fs.unlink(path);
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const pid = readPid(fs, path);
    const ours = pid === process.pid;
    if (Number.isInteger(pid) && pid > 0 && (ours ? mine.has(path) : pidAlive(pid))) {
      throw new ErrLocked(`pid ${pid} holds ${path}`);
    }
    log(
      `storage: removing stale lock ${path} (pid ${Number.isNaN(pid) ? "unreadable" : pid} is not running)`,
    );
    try {
      fs.unlink(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
  throw new ErrLocked(`could not take ${path}`);
}
