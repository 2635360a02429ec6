// bbolt's page (page.go): a fixed-size block that starts with a 16-byte header
//   id u64 | flags u16 | count u16 | overflow u32
// followed by `count` elements and then their keys and values. `overflow` is the number of
// extra contiguous pages the page spills onto. Element `pos` fields are offsets from the
// element itself to its key (a leaf's value follows its key).
import { u16, u32, u64 } from "./bytes.js";
import {
  BRANCH_ELEMENT_SIZE,
  BRANCH_PAGE_FLAG,
  FREELIST_PAGE_FLAG,
  LEAF_ELEMENT_SIZE,
  LEAF_PAGE_FLAG,
  META_PAGE_FLAG,
  PAGE_HEADER_SIZE,
} from "./constants.js";
import type { Pgid } from "./types.js";

export function pageId(p: Uint8Array): Pgid {
  return u64(p, 0);
}
export function pageFlags(p: Uint8Array): number {
  return u16(p, 8);
}
export function pageCount(p: Uint8Array): number {
  return u16(p, 10);
}
export function pageOverflow(p: Uint8Array): number {
  return u32(p, 12);
}

/** bbolt page.typ(). */
export function pageType(flags: number): string {
  if (flags & BRANCH_PAGE_FLAG) return "branch";
  if (flags & LEAF_PAGE_FLAG) return "leaf";
  if (flags & META_PAGE_FLAG) return "meta";
  if (flags & FREELIST_PAGE_FLAG) return "freelist";
  return `unknown<${flags.toString(16).padStart(2, "0")}>`;
}

// Leaf element i: flags u32 | pos u32 | ksize u32 | vsize u32.
export function leafFlags(p: Uint8Array, i: number): number {
  return u32(p, PAGE_HEADER_SIZE + i * LEAF_ELEMENT_SIZE);
}
export function leafKeyOffset(p: Uint8Array, i: number): number {
  const e = PAGE_HEADER_SIZE + i * LEAF_ELEMENT_SIZE;
  return e + u32(p, e + 4);
}
export function leafKeySize(p: Uint8Array, i: number): number {
  return u32(p, PAGE_HEADER_SIZE + i * LEAF_ELEMENT_SIZE + 8);
}
export function leafKey(p: Uint8Array, i: number): Uint8Array {
  const e = PAGE_HEADER_SIZE + i * LEAF_ELEMENT_SIZE;
  const k = e + u32(p, e + 4);
  return p.subarray(k, k + u32(p, e + 8));
}
export function leafValue(p: Uint8Array, i: number): Uint8Array {
  const e = PAGE_HEADER_SIZE + i * LEAF_ELEMENT_SIZE;
  const v = e + u32(p, e + 4) + u32(p, e + 8);
  return p.subarray(v, v + u32(p, e + 12));
}

// Branch element i: pos u32 | ksize u32 | pgid u64.
export function branchKeyOffset(p: Uint8Array, i: number): number {
  const e = PAGE_HEADER_SIZE + i * BRANCH_ELEMENT_SIZE;
  return e + u32(p, e);
}
export function branchKeySize(p: Uint8Array, i: number): number {
  return u32(p, PAGE_HEADER_SIZE + i * BRANCH_ELEMENT_SIZE + 4);
}
export function branchKey(p: Uint8Array, i: number): Uint8Array {
  const e = PAGE_HEADER_SIZE + i * BRANCH_ELEMENT_SIZE;
  const k = e + u32(p, e);
  return p.subarray(k, k + u32(p, e + 4));
}
export function branchPgid(p: Uint8Array, i: number): Pgid {
  return u64(p, PAGE_HEADER_SIZE + i * BRANCH_ELEMENT_SIZE + 8);
}
