import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { KeyIndex } from "../../src/mvcc/core/key-index.js";
import { bytesToRev, isTombstone, revToBytes } from "../../src/mvcc/core/revision.js";
import { SortedKeys } from "../../src/mvcc/core/sorted-keys.js";
import { TreeIndex } from "../../src/mvcc/core/tree-index.js";

const runs = process.env.REGMESH_LONG === "1" ? 2000 : 150;

describe("revision encoding (etcd's 17-byte layout)", () => {
  it("is main BE, '_', sub BE, and 't' for a tombstone", () => {
    const b = revToBytes({ main: 0x0102, sub: 3 }, true);
    expect(Buffer.from(b).toString("hex")).toBe(`0000000000000102${"5f"}0000000000000003${"74"}`);
    expect(isTombstone(b)).toBe(true);
    expect(bytesToRev(b)).toEqual({ main: 0x0102, sub: 3 });
    expect(isTombstone(revToBytes({ main: 1, sub: 0 }))).toBe(false);
  });

  it("orders bytewise as revisions order", () => {
    fc.assert(
      fc.property(
        fc.tuple(fc.nat(1e12), fc.nat(1000)),
        fc.tuple(fc.nat(1e12), fc.nat(1000)),
        ([m1, s1], [m2, s2]) => {
          const a = Buffer.from(revToBytes({ main: m1, sub: s1 }));
          const b = Buffer.from(revToBytes({ main: m2, sub: s2 }));
          const want = m1 !== m2 ? Math.sign(m1 - m2) : Math.sign(s1 - s2);
          expect(Math.sign(Buffer.compare(a, b))).toBe(want);
        },
      ),
    );
  });
});

describe("key index (etcd's key_index.go semantics)", () => {
  // The example from etcd's key_index.go comment: put@1, put@2, delete@3, put@4.
  it("reads each generation's versions and created revision", () => {
    const ki = new KeyIndex("foo");
    ki.put({ main: 1, sub: 0 });
    ki.put({ main: 2, sub: 0 });
    ki.tombstone({ main: 3, sub: 0 });
    ki.put({ main: 4, sub: 0 });
    expect(ki.get(1)).toEqual({ modified: { main: 1, sub: 0 }, created: { main: 1, sub: 0 }, ver: 1 });
    expect(ki.get(2)).toEqual({ modified: { main: 2, sub: 0 }, created: { main: 1, sub: 0 }, ver: 2 });
    expect(ki.find(3)).toBeUndefined();
    expect(ki.get(4)).toEqual({ modified: { main: 4, sub: 0 }, created: { main: 4, sub: 0 }, ver: 1 });
    expect(ki.since(2).map((r) => r.main)).toEqual([2, 3, 4]);
  });

  it("a put older than the last change is refused", () => {
    const ki = new KeyIndex("foo");
    ki.put({ main: 5, sub: 0 });
    expect(() => ki.put({ main: 4, sub: 0 })).toThrow("unexpected smaller revision");
  });
});

describe("sorted keys against a sorted array", () => {
  it("add, delete, has, ascend and descend agree with the model", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.boolean(), fc.string({ maxLength: 3 })), { maxLength: 3000 }),
        fc.string({ maxLength: 3 }),
        fc.string({ maxLength: 3 }),
        (ops, a, b) => {
          const s = new SortedKeys();
          const model = new Set<string>();
          for (const [add, k] of ops) {
            expect(add ? s.add(k) : s.delete(k)).toBe(add ? !model.has(k) : model.has(k));
            if (add) model.add(k);
            else model.delete(k);
          }
          const sorted = [...model].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
          expect(s.size).toBe(sorted.length);
          const [lo, hi] = a <= b ? [a, b] : [b, a];
          const up: string[] = [];
          s.ascend(lo, hi, (k) => {
            up.push(k);
            return true;
          });
          expect(up).toEqual(sorted.filter((k) => k >= lo && k < hi));
          const down: string[] = [];
          s.descend(lo, hi, (k) => {
            down.push(k);
            return true;
          });
          expect(down).toEqual(up.slice().reverse());
          const all: string[] = [];
          s.ascend("", undefined, (k) => {
            all.push(k);
            return true;
          });
          expect(all).toEqual(sorted);
        },
      ),
      { numRuns: runs / 3 },
    );
  });
});

// Model: every key's full history as (main revision, live?) pairs. A read at revision R sees
// the key's latest change at or below R, if that change was a put.
type History = Map<string, { main: number; put: boolean }[]>;

function modelAt(h: History, key: string, atRev: number) {
  const changes = (h.get(key) ?? []).filter((c) => c.main <= atRev);
  const last = changes[changes.length - 1];
  if (last === undefined || !last.put) return undefined;
  // The generation starts after the last deletion before `last`.
  let start = changes.length - 1;
  while (start > 0 && changes[start - 1]!.put) start -= 1;
  return { modified: last.main, created: changes[start]!.main, ver: changes.length - start };
}

describe("tree index against a full-history model", () => {
  it("reads at every uncompacted revision agree, before and after compaction", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom("a", "b", "c", "d"), fc.boolean()), {
          minLength: 1,
          maxLength: 60,
        }),
        fc.nat(),
        (ops, compactSeed) => {
          const index = new TreeIndex();
          const h: History = new Map();
          let rev = 1;
          for (const [key, put] of ops) {
            const live = modelAt(h, key, rev) !== undefined;
            if (!put && !live) continue; // etcd deletes only existing keys
            rev += 1;
            if (put) index.put(key, { main: rev, sub: 0 });
            else index.tombstone(key, { main: rev, sub: 0 });
            const list = h.get(key) ?? [];
            list.push({ main: rev, put });
            h.set(key, list);
          }
          const check = (fromRev: number) => {
            for (let at = fromRev; at <= rev; at++) {
              for (const key of ["a", "b", "c", "d"]) {
                const want = modelAt(h, key, at);
                const got = index.keyIndex(key)?.find(at);
                expect(
                  got && { modified: got.modified.main, created: got.created.main, ver: got.ver },
                ).toEqual(want);
              }
              const { keys } = index.range("a", "", at);
              expect(keys).toEqual(["a", "b", "c", "d"].filter((k) => modelAt(h, k, at) !== undefined));
              expect(index.count("b", "d", at)).toBe(
                ["b", "c"].filter((k) => modelAt(h, k, at) !== undefined).length,
              );
            }
          };
          check(1);
          const compactAt = 1 + (compactSeed % rev);
          const kept = index.keep(compactAt);
          const available = index.compact(compactAt);
          expect([...available].sort()).toEqual([...kept].sort());
          check(compactAt);
          // What stays available is exactly each key's live revision at compactAt.
          const want = new Set<string>();
          for (const key of ["a", "b", "c", "d"]) {
            const at = modelAt(h, key, compactAt);
            if (at !== undefined) want.add(`${at.modified}_0`);
          }
          expect([...available].sort()).toEqual([...want].sort());
        },
      ),
      { numRuns: runs },
    );
  });
});
