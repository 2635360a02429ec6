// Any single damaged byte in the durable part of a WAL is either refused with a typed error
// naming the file and offset, or (only in the last frame of the last segment, which nothing
// was written after) cut as a torn tail without losing a record that was saved. readAll
// never returns data that differs from what was saved.

import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { WalError, WalErrorCode } from "../../src/wal/errors.js";
import { probeFrame } from "../../src/wal/record.js";
import { listSegments, Wal } from "../../src/wal/wal.js";
import { ents, hs, memDisk, patchFile, readFile } from "./helpers.js";

const long = process.env.REGMESH_LONG === "1";
const opts = { segmentSizeBytes: 2048 };

function dataEnd(buf: Uint8Array): number {
  let off = 0;
  for (;;) {
    const p = probeFrame(buf, off);
    if (p.kind !== "frame") return off;
    off = p.frame.endBytes;
  }
}

describe("Wal damage detection", () => {
  it("property: a flipped byte anywhere in the saved data is refused or provably harmless", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 3, max: 40 }),
        fc.nat(),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        async (batches, segPick, offPick, xor) => {
          const d = memDisk();
          const wal = Wal.create(d.fs, d.dir, new Uint8Array([9, 9]), opts);
          let next = 1;
          for (let b = 0; b < batches; b++) {
            const n = 1 + ((b * 7) % 5);
            await wal.save(hs(1, 1, next - 1), ents(next, next + n - 1, 1));
            next += n;
          }
          await wal.close();
          const saved = Wal.open(d.fs, d.dir, { index: 0, term: 0 }, opts).readAll();
          await Promise.resolve();
          const segs = listSegments(d.fs, d.dir);
          const k = segPick % segs.length;
          const path = join(d.dir, segs[k]!.name);
          const buf = readFile(d.fs, path);
          const end = dataEnd(buf);
          const at = offPick % end;
          patchFile(d.fs, path, at, Uint8Array.of(buf[at]! ^ xor));
          let got: ReturnType<Wal["readAll"]>;
          try {
            got = Wal.open(d.fs, d.dir, { index: 0, term: 0 }, opts).readAll();
          } catch (err) {
            expect(err).toBeInstanceOf(WalError);
            const e = err as WalError;
            expect([WalErrorCode.Corrupt, WalErrorCode.CrcMismatch, WalErrorCode.Sequence]).toContain(e.code);
            expect(e.path).toBe(path);
            expect(e.offsetBytes).toBeLessThanOrEqual(at);
            return;
          }
          // Accepted: only the very last frame of the last segment (the close() watermark,
          // a copy of the hard state) may have been cut, and nothing saved differs.
          expect(k).toBe(segs.length - 1);
          expect(got.repair).toBeDefined();
          expect(got.entries).toEqual(saved.entries);
          expect(got.hardState).toEqual(saved.hardState);
        },
      ),
      { numRuns: long ? 3000 : 200 },
    );
  });
});
