// The WAL's on-disk record format. Everything a reader of a segment file needs is here.
//
// A segment file `<seq:016x>-<firstIndex:016x>.wal` is a sequence of frames. Every frame
// starts on an 8-byte boundary (as etcd's frames do, wal/encoder.go `encodeFrameSize`, so
// that a frame header never straddles a torn 8-byte word), and all integers are
// little-endian:
//
//   offset  size  field
//        0     4  lengthBytes    payload length L (0 <= L <= recordBytesMax)
//        4     1  type           1 metadata, 2 entry, 3 state, 4 crc, 5 snapshot (etcd's numbers)
//        5     3  reserved       zero
//        8     4  durableBytes   offset in this segment up to which every byte had been fsynced
//                                when the writer wrote this frame
//       12     4  crc            CRC32C over bytes [0, 12) of this header and then the payload
//       16     L  payload        (see the payload layouts below)
//   16 + L     P  padding        zeros (checked), P = (8 - L % 8) % 8, so the next frame is aligned
//
// A 16-byte header of all zeros is not a frame: it is where the data ends (the rest of the
// segment is preallocated zeros, as in etcd's decoder where a zero length means EOF). A real
// frame always has a non-zero type byte in its first 8 bytes.
//
// Payloads (u64 fields hold integers below 2^53, JavaScript's safe range; a larger value
// read from disk is corruption):
//   metadata  opaque bytes (the server stores its node id and cluster id there)
//   entry     index u64 | term u64 | entryType u32 | reserved u32 | data
//   state     term u64 | vote u64 | commit u64                      (Raft HardState)
//   crc       prevCrc u32 | reserved u32 | seq u64 | firstIndex u64
//   snapshot  index u64 | term u64                                  (etcd walpb.Snapshot)
//
// Why a CRC per record rather than etcd's chained CRC. etcd feeds every record into one
// running CRC (each record's CRC continues from the previous one, and each new segment
// starts with a crc record carrying the running value). That catches a dropped or
// reordered record, but a chained record cannot be checked without every record before it,
// so after one bad record etcd cannot tell whether good data follows. We want exactly that
// distinction: a bad record followed by records that were written *after an fsync covering
// it* is corruption of durable data and is refused; a bad record followed only by debris of
// the last unsynced writes is a torn tail and is repaired. So each frame is checked alone,
// and carries `durableBytes`, the writer's fsync watermark at the time it was written: a
// valid frame after a bad one whose watermark lies beyond the bad one proves the bad one
// had been made durable (wal.ts, `scanSegment`). What the chain protected is covered
// otherwise: index continuity and segment order are checked on read, each segment starts
// with a crc record naming its own seq and first index (so a renamed or misplaced file is
// caught), and that record carries the CRC of the previous segment's last frame, which
// links consecutive segments as etcd's crc record does.

import { crc32c } from "@node-rs/crc32";
import type { Entry, HardState } from "../raft/types.js";
import { frameAlignBytes, frameHeaderBytes, recordBytesMax } from "./constants.js";
import { assert } from "./errors.js";

export const RecordType = {
  Metadata: 1,
  Entry: 2,
  State: 3,
  Crc: 4,
  Snapshot: 5,
} as const;
export type RecordType = (typeof RecordType)[keyof typeof RecordType];

export type SnapshotMarker = { index: number; term: number };

/** A frame as decoded from a segment (payload is a view into the segment's buffer). */
export type Frame = {
  offsetBytes: number;
  type: RecordType;
  durableBytes: number;
  crc: number;
  payload: Uint8Array;
  /** Offset of the next frame. */
  endBytes: number;
};

export type FrameProbe =
  | { kind: "frame"; frame: Frame }
  /** All-zero header: the data ends here (preallocated space). */
  | { kind: "zero" }
  /** Not a valid frame; `crc` is true when only the checksum is wrong. */
  | { kind: "bad"; reason: string; crc: boolean };

const TWO_POW_32 = 2 ** 32;

export function paddingBytes(lengthBytes: number): number {
  return (frameAlignBytes - (lengthBytes % frameAlignBytes)) % frameAlignBytes;
}

export function frameBytes(lengthBytes: number): number {
  return frameHeaderBytes + lengthBytes + paddingBytes(lengthBytes);
}

export function writeU64(view: DataView, offset: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, () => `u64 field out of range: ${value}`);
  view.setUint32(offset, value % TWO_POW_32, true);
  view.setUint32(offset + 4, Math.floor(value / TWO_POW_32), true);
}

/** Reads a u64; returns -1 when it does not fit a safe integer (only corruption does that). */
export function readU64(view: DataView, offset: number): number {
  const high = view.getUint32(offset + 4, true);
  if (high >= 2 ** 21) return -1;
  return high * TWO_POW_32 + view.getUint32(offset, true);
}

function isRecordType(t: number): t is RecordType {
  return t >= RecordType.Metadata && t <= RecordType.Snapshot;
}

/**
 * Encodes one frame into `out` at `offset` (which the caller sized with frameBytes) and
 * returns its CRC. Padding bytes are written as zeros explicitly: `out` may be reused.
 */
export function encodeFrame(
  out: Uint8Array,
  offset: number,
  type: RecordType,
  payload: Uint8Array,
  durableBytes: number,
): number {
  assert(offset % frameAlignBytes === 0, "frames start 8-byte aligned");
  assert(
    payload.length <= recordBytesMax,
    () => `record of ${payload.length} bytes exceeds ${recordBytesMax}`,
  );
  const view = new DataView(out.buffer, out.byteOffset + offset, frameHeaderBytes);
  view.setUint32(0, payload.length, true);
  view.setUint32(4, type, true); // type in byte 4, reserved bytes 5..7 zero
  view.setUint32(8, durableBytes, true);
  const header = out.subarray(offset, offset + 12);
  const crc = crc32c(payload, crc32c(header)) >>> 0;
  view.setUint32(12, crc, true);
  out.set(payload, offset + frameHeaderBytes);
  const end = offset + frameHeaderBytes + payload.length;
  out.fill(0, end, end + paddingBytes(payload.length));
  return crc;
}

/** Looks for a frame at `offset` of `buf` (a whole segment read into memory). */
export function probeFrame(buf: Uint8Array, offset: number): FrameProbe {
  const remaining = buf.length - offset;
  if (remaining < frameHeaderBytes) {
    for (let i = offset; i < buf.length; i++) {
      if (buf[i] !== 0) return { kind: "bad", reason: "truncated frame header", crc: false };
    }
    return { kind: "zero" };
  }
  const view = new DataView(buf.buffer, buf.byteOffset + offset, frameHeaderBytes);
  const lengthBytes = view.getUint32(0, true);
  const typeWord = view.getUint32(4, true);
  if (
    lengthBytes === 0 &&
    typeWord === 0 &&
    view.getUint32(8, true) === 0 &&
    view.getUint32(12, true) === 0
  ) {
    return { kind: "zero" };
  }
  const type = typeWord & 0xff;
  if (typeWord >>> 8 !== 0) return { kind: "bad", reason: "non-zero reserved header bytes", crc: false };
  if (!isRecordType(type)) return { kind: "bad", reason: `unknown record type ${type}`, crc: false };
  if (lengthBytes > recordBytesMax) {
    return { kind: "bad", reason: `record length ${lengthBytes} exceeds ${recordBytesMax}`, crc: false };
  }
  const endBytes = offset + frameBytes(lengthBytes);
  if (endBytes > buf.length)
    return { kind: "bad", reason: "frame runs past the end of the file", crc: false };
  // Padding is outside the CRC; it must be zero so that no byte of a frame goes unchecked.
  for (let i = offset + frameHeaderBytes + lengthBytes; i < endBytes; i++) {
    if (buf[i] !== 0) return { kind: "bad", reason: "non-zero padding", crc: false };
  }
  const payload = buf.subarray(offset + frameHeaderBytes, offset + frameHeaderBytes + lengthBytes);
  const crc = view.getUint32(12, true);
  const want = crc32c(payload, crc32c(buf.subarray(offset, offset + 12))) >>> 0;
  if (crc !== want)
    return { kind: "bad", reason: `crc mismatch (stored ${crc}, computed ${want})`, crc: true };
  return {
    kind: "frame",
    frame: { offsetBytes: offset, type, durableBytes: view.getUint32(8, true), crc, payload, endBytes },
  };
}

// Payload codecs. Decoders return undefined for a payload of the wrong shape: the frame's
// CRC matched, so that is a writer bug or deliberate tampering, reported as corruption.

const ENTRY_HEADER_BYTES = 24;
const STATE_BYTES = 24;
const CRC_BYTES = 24;
const SNAPSHOT_BYTES = 16;

function viewOf(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.length);
}

export function encodeEntry(e: Entry): Uint8Array {
  const out = new Uint8Array(ENTRY_HEADER_BYTES + e.data.length);
  const v = viewOf(out);
  writeU64(v, 0, e.index);
  writeU64(v, 8, e.term);
  v.setUint32(16, e.type, true);
  out.set(e.data, ENTRY_HEADER_BYTES);
  return out;
}

export function decodeEntry(p: Uint8Array): Entry | undefined {
  if (p.length < ENTRY_HEADER_BYTES) return undefined;
  const v = viewOf(p);
  const index = readU64(v, 0);
  const term = readU64(v, 8);
  const type = v.getUint32(16, true);
  if (index < 1 || term < 0 || type > 1 || v.getUint32(20, true) !== 0) return undefined;
  // Copy the data: the segment buffer is large and short-lived.
  return { index, term, type, data: p.slice(ENTRY_HEADER_BYTES) };
}

export function encodeState(hs: HardState): Uint8Array {
  const out = new Uint8Array(STATE_BYTES);
  const v = viewOf(out);
  writeU64(v, 0, hs.term);
  writeU64(v, 8, hs.vote);
  writeU64(v, 16, hs.commit);
  return out;
}

export function decodeState(p: Uint8Array): HardState | undefined {
  if (p.length !== STATE_BYTES) return undefined;
  const v = viewOf(p);
  const hs = { term: readU64(v, 0), vote: readU64(v, 8), commit: readU64(v, 16) };
  if (hs.term < 0 || hs.vote < 0 || hs.commit < 0) return undefined;
  return hs;
}

export type CrcRecord = { prevCrc: number; seq: number; firstIndex: number };

export function encodeCrcRecord(r: CrcRecord): Uint8Array {
  const out = new Uint8Array(CRC_BYTES);
  const v = viewOf(out);
  v.setUint32(0, r.prevCrc >>> 0, true);
  writeU64(v, 8, r.seq);
  writeU64(v, 16, r.firstIndex);
  return out;
}

export function decodeCrcRecord(p: Uint8Array): CrcRecord | undefined {
  if (p.length !== CRC_BYTES) return undefined;
  const v = viewOf(p);
  const r = { prevCrc: v.getUint32(0, true), seq: readU64(v, 8), firstIndex: readU64(v, 16) };
  if (v.getUint32(4, true) !== 0 || r.seq < 0 || r.firstIndex < 0) return undefined;
  return r;
}

export function encodeSnapshotMarker(m: SnapshotMarker): Uint8Array {
  const out = new Uint8Array(SNAPSHOT_BYTES);
  const v = viewOf(out);
  writeU64(v, 0, m.index);
  writeU64(v, 8, m.term);
  return out;
}

export function decodeSnapshotMarker(p: Uint8Array): SnapshotMarker | undefined {
  if (p.length !== SNAPSHOT_BYTES) return undefined;
  const v = viewOf(p);
  const m = { index: readU64(v, 0), term: readU64(v, 8) };
  if (m.index < 0 || m.term < 0) return undefined;
  return m;
}

// Segment file names, as etcd's walName: `%016x-%016x.wal` of seq and first index.

const SEGMENT_NAME = /^([0-9a-f]{16})-([0-9a-f]{16})\.wal$/;

export function segmentName(seq: number, firstIndex: number): string {
  assert(Number.isSafeInteger(seq) && seq >= 0, "segment seq is a safe integer");
  assert(Number.isSafeInteger(firstIndex) && firstIndex >= 0, "segment first index is a safe integer");
  return `${seq.toString(16).padStart(16, "0")}-${firstIndex.toString(16).padStart(16, "0")}.wal`;
}

export function parseSegmentName(name: string): { seq: number; firstIndex: number } | undefined {
  const m = SEGMENT_NAME.exec(name);
  if (!m) return undefined;
  const seq = Number.parseInt(m[1]!, 16);
  const firstIndex = Number.parseInt(m[2]!, 16);
  if (!Number.isSafeInteger(seq) || !Number.isSafeInteger(firstIndex)) return undefined;
  return { seq, firstIndex };
}
