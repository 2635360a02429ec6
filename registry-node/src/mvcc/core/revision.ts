// A revision is etcd's {main, sub}: `main` is the store revision of a write transaction,
// `sub` the position of the change inside it. Numbers, not bigints: a cluster would need
// 2^53 transactions to overflow them, and the key index compares revisions constantly.
//
// On disk (etcd's mvcc/revision.go) a revision is 17 bytes: main as 8 bytes big-endian,
// the byte '_', sub as 8 bytes big-endian. A tombstone (deletion) key in the `key` bucket
// carries one more byte, 't'. Big-endian keeps bbolt's bytewise order equal to revision order.

export type Revision = { main: number; sub: number };

export const revBytesLen = 17;
export const markedRevBytesLen = 18;
const markTombstone = 0x74; // 't'

export function revCompare(a: Revision, b: Revision): number {
  return a.main !== b.main ? a.main - b.main : a.sub - b.sub;
}

export function revGreater(a: Revision, b: Revision): boolean {
  return revCompare(a, b) > 0;
}

export function revToBytes(rev: Revision, tombstone = false): Uint8Array {
  assertRevision(rev);
  const out = new Uint8Array(tombstone ? markedRevBytesLen : revBytesLen);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(rev.main));
  out[8] = 0x5f; // '_'
  view.setBigUint64(9, BigInt(rev.sub));
  if (tombstone) out[17] = markTombstone;
  return out;
}

export function bytesToRev(b: Uint8Array): Revision {
  if (b.length !== revBytesLen && b.length !== markedRevBytesLen) {
    throw new Error(`mvcc: revision key of ${b.length} bytes (want 17 or 18)`);
  }
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { main: Number(view.getBigUint64(0)), sub: Number(view.getBigUint64(9)) };
}

/** A `key` bucket key marks a tombstone when it has the extra 't' byte. */
export function isTombstone(b: Uint8Array): boolean {
  return b.length === markedRevBytesLen && b[17] === markTombstone;
}

function assertRevision(rev: Revision): void {
  if (!Number.isSafeInteger(rev.main) || rev.main < 0 || !Number.isSafeInteger(rev.sub) || rev.sub < 0) {
    throw new Error(`mvcc: invalid revision ${JSON.stringify(rev)}`);
  }
}
