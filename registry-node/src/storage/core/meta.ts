// bbolt's meta page (db.go `meta`), stored right after the page header of pages 0 and 1:
//   magic u32 | version u32 | pageSize u32 | flags u32 | root {root u64, sequence u64}
//   | freelist u64 | pgid (high-water mark) u64 | txid u64 | checksum u64
// The checksum is FNV-64a over the 56 bytes before it. A commit writes the meta at page
// `txid % 2`, so the other page keeps the previous commit: a torn meta falls back to it.
import { put16, put32, put64, put64big, u32, u64, u64big } from "./bytes.js";
import {
  MAGIC,
  MAX_PAGE_SIZE_BYTES,
  META_CHECKSUM_OFFSET,
  META_PAGE_FLAG,
  MIN_PAGE_SIZE_BYTES,
  PAGE_HEADER_SIZE,
  PGID_NO_FREELIST,
  VERSION,
} from "./constants.js";
import {
  ErrChecksum,
  ErrInvalid,
  ErrInvalidPageSize,
  ErrVersionMismatch,
  type StorageError,
} from "./errors.js";
import type { Pgid, Txid } from "./types.js";

export type Meta = {
  magic: number;
  version: number;
  pageSize: number;
  flags: number;
  /** The root bucket's header. */
  root: { root: Pgid; sequence: bigint };
  /** Page of the freelist, or PGID_NO_FREELIST (bbolt's NoFreelistSync, which etcd uses). */
  freelist: Pgid;
  /** High-water mark: the first page id past the end of the data. */
  pgid: Pgid;
  txid: Txid;
  checksum: bigint;
};

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const MASK64 = 0xffffffffffffffffn;

/** FNV-64a (hash/fnv New64a) of b[start, end). */
export function fnv64a(b: Uint8Array, start: number, end: number): bigint {
  let h = FNV_OFFSET;
  for (let i = start; i < end; i++) h = ((h ^ BigInt(b[i]!)) * FNV_PRIME) & MASK64;
  return h;
}

export function isValidPageSize(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_PAGE_SIZE_BYTES && n <= MAX_PAGE_SIZE_BYTES && (n & (n - 1)) === 0;
}

/** Decodes the meta of a meta page (the page bytes start at the page header). */
export function decodeMeta(page: Uint8Array): Meta {
  const m = PAGE_HEADER_SIZE;
  const flHi = u32(page, m + 36);
  const flLo = u32(page, m + 32);
  return {
    magic: u32(page, m),
    version: u32(page, m + 4),
    pageSize: u32(page, m + 8),
    flags: u32(page, m + 12),
    root: { root: safeU64(page, m + 16), sequence: u64big(page, m + 24) },
    freelist: flHi === 0xffffffff && flLo === 0xffffffff ? PGID_NO_FREELIST : safeU64(page, m + 32),
    pgid: safeU64(page, m + 40),
    txid: safeU64(page, m + 48),
    checksum: u64big(page, m + 56),
  };
}

/** A u64 outside 2^53 cannot be a valid id: decode it as NaN so validation rejects the meta. */
function safeU64(b: Uint8Array, o: number): number {
  return u32(b, o + 4) < 0x200000 ? u64(b, o) : Number.NaN;
}

/** bbolt meta.validate(), plus sanity of the fields we use as offsets. Null when valid. */
export function validateMeta(page: Uint8Array, meta: Meta): StorageError | null {
  if (meta.magic !== MAGIC) return new ErrInvalid();
  if (meta.version !== VERSION) return new ErrVersionMismatch();
  // bbolt accepts a zero checksum (metas written before checksums existed).
  if (
    meta.checksum !== 0n &&
    meta.checksum !== fnv64a(page, PAGE_HEADER_SIZE, PAGE_HEADER_SIZE + META_CHECKSUM_OFFSET)
  ) {
    return new ErrChecksum();
  }
  if (!isValidPageSize(meta.pageSize)) return new ErrInvalidPageSize(String(meta.pageSize));
  if (!(meta.pgid >= 4) || Number.isNaN(meta.txid) || Number.isNaN(meta.root.root))
    return new ErrInvalid("bad meta");
  return null;
}

/** Writes `meta` (with a fresh checksum) into a zeroed page buffer; returns the checksum. */
export function encodeMeta(page: Uint8Array, meta: Meta): bigint {
  const id = meta.txid % 2;
  put64(page, 0, id);
  put16(page, 8, META_PAGE_FLAG);
  const m = PAGE_HEADER_SIZE;
  put32(page, m, meta.magic);
  put32(page, m + 4, meta.version);
  put32(page, m + 8, meta.pageSize);
  put32(page, m + 12, meta.flags);
  put64(page, m + 16, meta.root.root);
  put64big(page, m + 24, meta.root.sequence);
  if (meta.freelist === PGID_NO_FREELIST) put64big(page, m + 32, 0xffffffffffffffffn);
  else put64(page, m + 32, meta.freelist);
  put64(page, m + 40, meta.pgid);
  put64(page, m + 48, meta.txid);
  const sum = fnv64a(page, m, m + META_CHECKSUM_OFFSET);
  put64big(page, m + 56, sum);
  return sum;
}

export function newMeta(pageSize: number, txid: Txid): Meta {
  return {
    magic: MAGIC,
    version: VERSION,
    pageSize,
    flags: 0,
    root: { root: 3, sequence: 0n },
    freelist: 2,
    pgid: 4,
    txid,
    checksum: 0n,
  };
}

export function copyMeta(m: Meta): Meta {
  return { ...m, root: { ...m.root } };
}
