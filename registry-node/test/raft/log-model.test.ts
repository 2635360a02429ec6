// Model test (STYLE.md §5): random appends, persists, commits and compactions on the
// RaftLog (unstable tail + MemoryStorage) against a plain array of terms.

import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { type Entry, EntryType, MemoryStorage, RaftLog } from "../../src/raft/index.js";

type Op =
  | { kind: "append"; at: number; terms: number[] }
  | { kind: "persist" }
  | { kind: "commit"; at: number }
  | { kind: "compact"; at: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant("append" as const),
    at: fc.nat(),
    terms: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 5 }),
  }),
  fc.record({ kind: fc.constant("persist" as const) }),
  fc.record({ kind: fc.constant("commit" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("compact" as const), at: fc.nat() }),
);

function ent(term: number, index: number): Entry {
  return { term, index, type: EntryType.Normal, data: new Uint8Array(0) };
}

describe("raft log model", () => {
  test("the log agrees with an array of terms under appends, persists, commits and compactions", () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 60 }), (ops) => {
        const storage = new MemoryStorage();
        const log = new RaftLog(storage, Number.MAX_SAFE_INTEGER);
        // model[i] is the term at index i; model[0] = 0 is the empty log's sentinel.
        let model: number[] = [0];
        let first = 1;
        for (const op of ops) {
          const last = model.length - 1;
          if (op.kind === "append") {
            // A leader's append after (prev, prevTerm); never before the commit index.
            const prev = log.committed + (op.at % (last - log.committed + 1));
            const prevTerm = model[prev]!;
            let t = Math.max(prevTerm, model[last]!);
            const ents = op.terms.map((d, i) => ent((t += d), prev + 1 + i));
            const res = log.maybeAppend(prev, prevTerm, 0, ents);
            expect(res).toBe(prev + ents.length);
            // Log matching: keep entries that agree, drop from the first conflict on.
            const conflict = ents.findIndex((e) => model[e.index] !== e.term);
            if (conflict >= 0) {
              const at = ents[conflict]!.index;
              model = model.slice(0, at).concat(ents.slice(conflict).map((e) => e.term));
            }
          } else if (op.kind === "persist") {
            const unstable = log.unstableEntries();
            storage.append(unstable);
            const tail = unstable[unstable.length - 1];
            if (tail) log.stableTo(tail.index, tail.term);
          } else if (op.kind === "commit") {
            log.commitTo(Math.min(last, log.committed + (op.at % 3)));
          } else {
            // Compact only what is persisted and committed, as the application would.
            const upTo = Math.min(log.committed, storage.lastIndex());
            if (upTo >= first) {
              const at = first + (op.at % (upTo - first + 1));
              storage.compact(at);
              first = at + 1;
            }
          }
          const newLast = model.length - 1;
          expect(log.lastIndex()).toBe(newLast);
          expect(log.firstIndex()).toBe(first);
          expect(log.termAt(first - 1)).toBe(model[first - 1]);
          if (first >= 2) expect(log.termAt(first - 2)).toBeUndefined();
          expect(log.termAt(newLast + 1)).toBeUndefined();
          const terms = log.entries(first, Number.MAX_SAFE_INTEGER).map((e) => e.term);
          expect(terms).toEqual(model.slice(first));
          expect(log.committed).toBeLessThanOrEqual(newLast);
        }
      }),
      { seed: 42, numRuns: 300 },
    );
  });

  test("findConflictByTerm returns the largest index at or below whose term is at most the given term", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 2 }), { maxLength: 20 }),
        fc.nat(),
        fc.nat(),
        (deltas, i, t) => {
          let term = 1;
          const terms = deltas.map((d) => (term += d));
          const storage = new MemoryStorage();
          storage.append(terms.map((tm, k) => ent(tm, k + 1)));
          const log = new RaftLog(storage, Number.MAX_SAFE_INTEGER);
          const index = i % (terms.length + 1);
          const want = t % (term + 2);
          // The naive answer: scan down from index.
          let k = index;
          while (k > 0 && terms[k - 1]! > want) k--;
          const expected = { index: k, term: k === 0 ? 0 : terms[k - 1]! };
          expect(log.findConflictByTerm(index, want)).toEqual(expected);
        },
      ),
      { seed: 7, numRuns: 300 },
    );
  });
});
