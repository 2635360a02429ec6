// Reading one segment file: frame by frame, and deciding what a bad frame means.
//
// etcd's decoder (wal/decoder.go) stops at the first bad record; in write mode a torn last
// record (one whose sectors are partly zero, `isTornEntry`) becomes io.ErrUnexpectedEOF and
// the server truncates it (wal/repair.go), while any other bad record is ErrCRCMismatch
// and the server refuses to start. We make the same split with a rule that does not
// depend on sector sizes (our fault file system tears writes mid-sector too):
//
// - In a segment that is not the last one, every frame was fsynced when the log was cut
//   to the next segment, so a bad frame is corruption. A zero header followed only by zeros
//   is accepted as the end (etcd allows the preallocated tail of a segment).
// - In the last segment, let X be the offset of the first bad frame (or zero header). Every
//   frame records the writer's fsync watermark (`durableBytes`). If some valid frame after X
//   has a watermark beyond X, the bytes at X had been fsynced before that frame was written,
//   so they were durable and are now damaged: corruption, refused. Otherwise everything from
//   X on is what an interrupted, unsynced append leaves behind (a torn write, lost sectors,
//   preallocated zeros), and the tail is cut at X.
// - The first three frames of a segment (crc, metadata, state) are fsynced before the file
//   is given its name, so damage there is corruption in any segment.
//
// The one case the rule cannot see: damage to the very last fsynced batch of the last
// segment, when nothing was written after it. That is indistinguishable from a torn write
// (as in etcd); `Wal.close()` narrows it by writing a last frame that carries the final
// watermark.

import { frameAlignBytes } from "./constants.js";
import { WalError, WalErrorCode } from "./errors.js";
import { type Frame, type FrameProbe, probeFrame, RecordType } from "./record.js";

/** Frames every segment starts with: crc, metadata, state. */
export const segmentHeaderFrames = 3;

export type SegmentScan = {
  frames: Frame[];
  /** Offset just past the last valid frame: where appends continue. */
  endBytes: number;
  /** Set when the last segment has a torn tail to cut at `endBytes`. */
  torn?: { reason: string };
};

/** First 8-byte aligned offset >= `from` whose 8 bytes are not all zero (or buf.length). */
function nextNonZeroWord(buf: Uint8Array, from: number): number {
  let off = from;
  // Whole segments are read into fresh, 8-aligned buffers; word reads make skipping the
  // preallocated zeros of a 64 MiB segment cheap.
  if (buf.byteOffset % 4 === 0) {
    const words = new Int32Array(buf.buffer, buf.byteOffset, Math.floor(buf.length / 4));
    for (let w = off / 4; w + 1 < words.length; w += 2, off += 8) {
      if (words[w] !== 0 || words[w + 1] !== 0) return off;
    }
  }
  for (; off < buf.length; off += frameAlignBytes) {
    const end = Math.min(off + frameAlignBytes, buf.length);
    for (let i = off; i < end; i++) if (buf[i] !== 0) return off;
  }
  return buf.length;
}

function allZeroFrom(buf: Uint8Array, from: number): boolean {
  return nextNonZeroWord(buf, from) >= buf.length;
}

export function scanSegment(buf: Uint8Array, path: string, isLast: boolean): SegmentScan {
  const frames: Frame[] = [];
  let off = 0;
  let probe: FrameProbe | undefined;
  for (;;) {
    if (off >= buf.length) return { frames, endBytes: off };
    probe = probeFrame(buf, off);
    if (probe.kind !== "frame") break;
    frames.push(probe.frame);
    off = probe.frame.endBytes;
  }

  const reason = probe.kind === "zero" ? "zero frame header" : probe.reason;
  const code = probe.kind === "bad" && probe.crc ? WalErrorCode.CrcMismatch : WalErrorCode.Corrupt;
  if (frames.length < segmentHeaderFrames) {
    throw new WalError(
      code,
      `${reason} in the segment header, which was fsynced when the segment was created`,
      {
        path,
        offsetBytes: off,
      },
    );
  }
  if (!isLast) {
    if (probe.kind === "zero" && allZeroFrom(buf, off)) return { frames, endBytes: off };
    throw new WalError(
      code,
      `${reason} in a segment that is not the last (it was fsynced when the log was cut)`,
      {
        path,
        offsetBytes: off,
      },
    );
  }
  // The last segment: look past X for a frame that proves X was durable.
  let y = nextNonZeroWord(buf, off + frameAlignBytes);
  while (y < buf.length) {
    const later = probeFrame(buf, y);
    if (later.kind === "frame") {
      if (later.frame.durableBytes > off) {
        throw new WalError(
          code,
          `${reason}; the frame at offset ${y} was written after the writer had fsynced up to offset ` +
            `${later.frame.durableBytes}, so this is damage to durable data, not a torn write`,
          { path, offsetBytes: off },
        );
      }
      y = nextNonZeroWord(buf, later.frame.endBytes);
    } else {
      y = nextNonZeroWord(buf, y + frameAlignBytes);
    }
  }
  if (probe.kind === "zero" && allZeroFrom(buf, off)) return { frames, endBytes: off };
  return { frames, endBytes: off, torn: { reason } };
}

/** The frame types a segment header must have, in order. */
export const segmentHeaderTypes: readonly RecordType[] = [
  RecordType.Crc,
  RecordType.Metadata,
  RecordType.State,
];
