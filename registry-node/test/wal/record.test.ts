import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { frameHeaderBytes, recordBytesMax } from "../../src/wal/constants.js";
import {
  decodeCrcRecord,
  decodeEntry,
  decodeSnapshotMarker,
  decodeState,
  encodeCrcRecord,
  encodeEntry,
  encodeFrame,
  encodeSnapshotMarker,
  encodeState,
  frameBytes,
  parseSegmentName,
  probeFrame,
  RecordType,
  readU64,
  segmentName,
  writeU64,
} from "../../src/wal/record.js";
import { ent } from "./helpers.js";

describe("WAL frame layout", () => {
  it("lays a frame out as documented: length, type, durable offset, crc, payload, zero padding to 8 bytes", () => {
    const payload = Uint8Array.from([1, 2, 3, 4, 5]);
    const buf = new Uint8Array(frameBytes(payload.length)).fill(0xee);
    expect(buf.length).toBe(24);
    const crc = encodeFrame(buf, 0, RecordType.Entry, payload, 4096);
    const v = new DataView(buf.buffer);
    expect(v.getUint32(0, true)).toBe(5);
    expect([...buf.subarray(4, 8)]).toEqual([RecordType.Entry, 0, 0, 0]);
    expect(v.getUint32(8, true)).toBe(4096);
    expect(v.getUint32(12, true)).toBe(crc);
    expect([...buf.subarray(16, 21)]).toEqual([1, 2, 3, 4, 5]);
    expect([...buf.subarray(21)]).toEqual([0, 0, 0]);
    const p = probeFrame(buf, 0);
    expect(p.kind === "frame" && p.frame.endBytes).toBe(24);
  });

  it("tells a zero header (end of data) from a bad frame", () => {
    expect(probeFrame(new Uint8Array(64), 0)).toEqual({ kind: "zero" });
    expect(probeFrame(new Uint8Array(8), 0)).toEqual({ kind: "zero" });
    const buf = new Uint8Array(64);
    encodeFrame(buf, 0, RecordType.State, new Uint8Array(24), 0);
    buf[20]! ^= 1;
    expect(probeFrame(buf, 0)).toMatchObject({ kind: "bad", crc: true });
    buf[4] = 9;
    expect(probeFrame(buf, 0)).toMatchObject({ kind: "bad", reason: "unknown record type 9" });
    const big = new Uint8Array(32);
    new DataView(big.buffer).setUint32(0, recordBytesMax + 1, true);
    big[4] = RecordType.Entry;
    expect(probeFrame(big, 0)).toMatchObject({ kind: "bad", crc: false });
    const short = new Uint8Array(frameHeaderBytes + 8);
    encodeFrame(short, 0, RecordType.Metadata, new Uint8Array(8), 0);
    expect(probeFrame(short.subarray(0, 20), 0)).toMatchObject({ kind: "bad" });
  });

  it("round-trips every payload type (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        fc.uint8Array({ maxLength: 64 }),
        (a, b, data) => {
          const e = { index: a, term: b, type: 1, data };
          expect(decodeEntry(encodeEntry(e))).toEqual(e);
          expect(decodeState(encodeState({ term: b, vote: 3, commit: a }))).toEqual({
            term: b,
            vote: 3,
            commit: a,
          });
          expect(decodeSnapshotMarker(encodeSnapshotMarker({ index: a, term: b }))).toEqual({
            index: a,
            term: b,
          });
          expect(decodeCrcRecord(encodeCrcRecord({ prevCrc: 0xffffffff, seq: b, firstIndex: a }))).toEqual({
            prevCrc: 0xffffffff,
            seq: b,
            firstIndex: a,
          });
        },
      ),
    );
    expect(decodeEntry(encodeEntry(ent(7, 2)))).toEqual(ent(7, 2));
  });

  it("rejects u64 values beyond 2^53 and names segments as etcd does", () => {
    const v = new DataView(new ArrayBuffer(8));
    expect(() => writeU64(v, 0, 2 ** 53)).toThrow(/WAL_ERR_ASSERTION/);
    v.setUint32(4, 2 ** 21, true);
    expect(readU64(v, 0)).toBe(-1);
    expect(segmentName(1, 0x2a)).toBe("0000000000000001-000000000000002a.wal");
    expect(parseSegmentName("0000000000000001-000000000000002a.wal")).toEqual({ seq: 1, firstIndex: 42 });
    expect(parseSegmentName("0000000000000001-000000000000002a.wal.tmp")).toBeUndefined();
  });
});
