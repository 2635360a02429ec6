import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { keyAfter, prefixEnd } from "../../src/etcd/keys.js";
import { op, opBytes } from "../../src/etcd/txn.js";
import { chunkOps } from "../../src/registry/chunk.js";

describe("chunkOps", () => {
  it("keeps order and every chunk within the op and byte limits", () => {
    fc.assert(
      fc.property(
        fc.array(fc.nat({ max: 3000 }), { maxLength: 600 }),
        fc.integer({ min: 1, max: 128 }),
        fc.integer({ min: 100, max: 50_000 }),
        (sizes, maxOps, maxBytes) => {
          const ops = sizes.map((n, i) => op.put(`k/${i}`, "x".repeat(n)));
          const chunks = chunkOps(ops, maxOps, maxBytes);
          expect(chunks.flat()).toEqual(ops);
          for (const c of chunks) {
            expect(c.length).toBeGreaterThan(0);
            expect(c.length).toBeLessThanOrEqual(maxOps);
            const bytes = c.reduce((n, o) => n + opBytes(o), 0);
            if (c.length > 1) expect(bytes).toBeLessThanOrEqual(maxBytes);
          }
        },
      ),
    );
  });

  it("3,000 instance puts of 2 KiB fit etcd's defaults (128 ops, 1.5 MiB)", () => {
    const ops = Array.from({ length: 3000 }, (_, i) => op.put(`/p/services/s/${i}`, "v".repeat(2200)));
    const chunks = chunkOps(ops);
    expect(chunks.length).toBe(Math.ceil(3000 / 128));
  });
});

describe("keys", () => {
  it("prefixEnd increments the last byte below 0xff (etcd's GetPrefixRangeEnd)", () => {
    expect(prefixEnd("a/").toString()).toBe("a0");
    expect(prefixEnd(Buffer.from([0x61, 0xff]))).toEqual(Buffer.from([0x62]));
    expect(prefixEnd(Buffer.from([0xff, 0xff]))).toEqual(Buffer.from([0]));
    expect(keyAfter("a")).toEqual(Buffer.from([0x61, 0]));
  });
});
