// The discovery cache on disk, so a process that starts while the registry is down still routes
// (DESIGN.md "Data paths: Discover").
//
// File format (one header line, then the body):
//   REGMESH-CACHE 1 <sha256 of body, hex> <body length in bytes>\n<body: JSON>
// Writes are atomic: a temp file in the same folder, fsync, rename over the target, fsync the
// folder (so the rename itself survives a crash). On read, a file whose length or checksum does
// not match (truncated, bit-flipped, half-written by something else) is rejected whole: a wrong
// route is worse than no cached route.

import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { mkdir, open, readFile, rename, stat, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Result } from "../core/errors.js";
import type { Instance } from "../core/instance.js";
import { EtcdError, EtcdErrorCode } from "../etcd/errors.js";
import { DISK_CACHE_BYTES_MAX } from "../etcd/limits.js";

const MAGIC = "REGMESH-CACHE";
const FORMAT_VERSION = 1;

export interface CachedService {
  /** The registry revision the set reflects. */
  revision: string;
  instances: Instance[];
}

export interface CacheSnapshot {
  /** Wall-clock milliseconds when the snapshot was taken (Date.now()). */
  savedAtMs: number;
  prefix: string;
  services: Record<string, CachedService>;
}

function sha256Hex(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

/** Any JSON value in the checked file format (header line with length and sha256, then the body). */
export function encodeChecked(value: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(value), "utf8");
  const header = Buffer.from(`${MAGIC} ${FORMAT_VERSION} ${sha256Hex(body)} ${body.length}\n`, "utf8");
  return Buffer.concat([header, body]);
}

export function encodeSnapshot(s: CacheSnapshot): Buffer {
  return encodeChecked(s);
}

function corrupt<T = CacheSnapshot>(why: string): Result<T, EtcdError> {
  return { ok: false, error: new EtcdError(EtcdErrorCode.CACHE_CORRUPT, `disk cache: ${why}`) };
}

/** Checks header, length and checksum, and parses the body; never throws. */
export function decodeChecked(file: Buffer): Result<unknown, EtcdError> {
  const nl = file.indexOf(0x0a);
  if (nl < 0 || nl > 200) return corrupt("no header line");
  const parts = file.subarray(0, nl).toString("utf8").split(" ");
  if (parts.length !== 4 || parts[0] !== MAGIC) return corrupt("bad magic");
  if (parts[1] !== String(FORMAT_VERSION)) return corrupt(`unknown format version ${parts[1]}`);
  const body = file.subarray(nl + 1);
  if (!/^[0-9]+$/.test(parts[3]!) || Number(parts[3]) !== body.length) {
    return corrupt(`length ${body.length} does not match the header's ${parts[3]} (truncated?)`);
  }
  if (sha256Hex(body) !== parts[2]) return corrupt("checksum mismatch");
  try {
    return { ok: true, value: JSON.parse(body.toString("utf8")) };
  } catch {
    return corrupt("body is not JSON");
  }
}

function isInstanceLike(v: unknown): boolean {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    typeof o.id === "string" &&
    typeof o.service === "string" &&
    typeof o.address === "string" &&
    typeof o.port === "number" &&
    typeof o.protocol === "string" &&
    typeof o.weight === "number" &&
    Array.isArray(o.tags) &&
    typeof o.metadata === "object" &&
    o.metadata !== null
  );
}

/** Checks header, length, checksum and shape; never throws. */
export function decodeSnapshot(file: Buffer): Result<CacheSnapshot, EtcdError> {
  const r = decodeChecked(file);
  if (!r.ok) return r;
  const json = r.value;
  const s = json as CacheSnapshot;
  if (
    typeof s !== "object" ||
    s === null ||
    typeof s.savedAtMs !== "number" ||
    typeof s.prefix !== "string"
  ) {
    return corrupt("bad snapshot shape");
  }
  if (typeof s.services !== "object" || s.services === null) return corrupt("bad services");
  for (const [name, svc] of Object.entries(s.services)) {
    if (
      typeof svc?.revision !== "string" ||
      !Array.isArray(svc.instances) ||
      !svc.instances.every(isInstanceLike)
    ) {
      return corrupt(`bad entry for service ${JSON.stringify(name)}`);
    }
  }
  return { ok: true, value: s };
}

function tempPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
}

/** Writes `data` to `path` atomically: temp file, fsync, rename, fsync the folder. */
export async function writeFileAtomic(path: string, data: Buffer): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = tempPath(path);
  const fh = await open(tmp, "w", 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  const dh = await open(dir, "r");
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** The same as writeFileAtomic, synchronously (for exit paths). */
export function writeFileAtomicSync(path: string, data: Buffer): void {
  const tmp = tempPath(path);
  const fd = openSync(tmp, "w", 0o644);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {}
    throw err;
  }
  const dfd = openSync(dirname(path), "r");
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** Writes the snapshot atomically. */
export function saveSnapshot(path: string, s: CacheSnapshot): Promise<void> {
  return writeFileAtomic(path, encodeSnapshot(s));
}

/** The same as saveSnapshot, synchronously (for exit paths). */
export function saveSnapshotSync(path: string, s: CacheSnapshot): void {
  writeFileAtomicSync(path, encodeSnapshot(s));
}

/** Reads a snapshot; a missing file is `ok: false` with CACHE_CORRUPT only if it exists but is bad. */
export async function loadSnapshot(path: string): Promise<Result<CacheSnapshot, EtcdError> | undefined> {
  try {
    const st = await stat(path);
    if (st.size > DISK_CACHE_BYTES_MAX) return corrupt(`file is larger than ${DISK_CACHE_BYTES_MAX} bytes`);
  } catch {
    return undefined;
  }
  return decodeSnapshot(await readFile(path));
}

export function loadSnapshotSync(path: string): Result<CacheSnapshot, EtcdError> | undefined {
  try {
    const st = statSync(path);
    if (st.size > DISK_CACHE_BYTES_MAX) return corrupt(`file is larger than ${DISK_CACHE_BYTES_MAX} bytes`);
    return decodeSnapshot(readFileSync(path));
  } catch {
    return undefined;
  }
}
