// Little-endian field access on Uint8Array (bbolt's structs are little endian on every
// platform it writes), and bytewise key order (bbolt: bytes.Compare).
import { assert } from "./types.js";

export function u16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

export function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

/** A u64 that must fit in 2^53 (page ids, txids, counts). */
export function u64(b: Uint8Array, o: number): number {
  const hi = u32(b, o + 4);
  if (hi >= 0x200000) assert(false, () => `u64 at ${o} exceeds 2^53`);
  return hi * 4294967296 + u32(b, o);
}

export function u64big(b: Uint8Array, o: number): bigint {
  return (BigInt(u32(b, o + 4)) << 32n) | BigInt(u32(b, o));
}

export function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}

export function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = (v >>> 24) & 0xff;
}

export function put64(b: Uint8Array, o: number, v: number): void {
  assert(Number.isSafeInteger(v) && v >= 0, () => `put64: ${v} is not a u53`);
  put32(b, o, v % 4294967296);
  put32(b, o + 4, Math.floor(v / 4294967296));
}

export function put64big(b: Uint8Array, o: number, v: bigint): void {
  put32(b, o, Number(v & 0xffffffffn));
  put32(b, o + 4, Number((v >> 32n) & 0xffffffffn));
}

/** bytes.Compare(a, b[off:off+len]). */
export function compareAt(a: Uint8Array, b: Uint8Array, off: number, len: number): number {
  const n = Math.min(a.length, len);
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[off + i]!;
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return a.length === len ? 0 : a.length < len ? -1 : 1;
}

/** bytes.Compare(a, b). */
export function compare(a: Uint8Array, b: Uint8Array): number {
  return compareAt(a, b, 0, b.length);
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && compareAt(a, b, 0, b.length) === 0;
}

/** A map key for a byte string (bucket names). */
export function keyString(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
  return s;
}
