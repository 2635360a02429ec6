import { describe, expect, it } from "vitest";
import {
  checkHistory,
  formatCheckResult,
  type KvInput,
  type KvOutput,
  kvModel,
  type Operation,
  operationsFromEvents,
} from "../../src/index.js";

type Op = Operation<KvInput, KvOutput>;
let nextId = 0;
const ok = (process: number, input: KvInput, call: number, ret: number, output: KvOutput = {}): Op => ({
  id: nextId++,
  process,
  input,
  call,
  ret,
  status: "ok",
  output,
});
const unknown = (process: number, input: KvInput, call: number): Op => ({
  id: nextId++,
  process,
  input,
  call,
  status: "unknown",
  error: "deadline exceeded",
});
const failed = (process: number, input: KvInput, call: number, ret: number): Op => ({
  id: nextId++,
  process,
  input,
  call,
  ret,
  status: "fail",
  error: "etcdserver: too many requests",
});
const put = (value: string, key = "k"): KvInput => ({ f: "put", key, value });
const get = (key = "k"): KvInput => ({ f: "get", key });
const del = (key = "k"): KvInput => ({ f: "delete", key });
const cas = (expected: string | null, value: string, key = "k"): KvInput => ({
  f: "cas",
  key,
  expected,
  value,
});
const read = (value: string | null): KvOutput => ({ value });

const verdict = (ops: Op[]) => checkHistory(kvModel, ops).verdict;

describe("linearizability checker (Wing & Gong with Lowe's memo): key-value histories", () => {
  it("accepts a sequential history that follows the model", () => {
    nextId = 0;
    const h = [
      ok(1, get(), 0, 1, read(null)),
      ok(1, put("a"), 2, 3),
      ok(2, get(), 4, 5, read("a")),
      ok(2, cas("a", "b"), 6, 7, { succeeded: true }),
      ok(1, cas("a", "c"), 8, 9, { succeeded: false }),
      ok(1, del(), 10, 11, { deleted: 1 }),
      ok(2, del(), 12, 13, { deleted: 0 }),
      ok(2, get(), 14, 15, read(null)),
    ];
    expect(verdict(h)).toBe("linearizable");
  });

  it("rejects a stale read: a get after a later put returns the older value", () => {
    nextId = 0;
    const h = [ok(1, put("a"), 0, 10), ok(2, put("b"), 20, 30), ok(3, get(), 40, 50, read("a"))];
    const r = checkHistory(kvModel, h);
    expect(r.verdict).toBe("not-linearizable");
    const f = r.partitions[0]!.failure!;
    expect(f.blocker.id).toBe(2);
    expect(f.prefix.map((o) => o.id)).toEqual([0, 1]);
    expect(f.candidates.map((c) => c.reason)).toEqual(['get → "a" is impossible when the value is "b"']);
  });

  it("rejects a lost update: two compare-and-sets from the same value both succeed", () => {
    nextId = 0;
    const h = [
      ok(1, put("x"), 0, 10),
      ok(2, cas("x", "y"), 20, 40, { succeeded: true }),
      ok(3, cas("x", "z"), 25, 45, { succeeded: true }),
    ];
    expect(verdict(h)).toBe("not-linearizable");
  });

  it("rejects a read of a value never written", () => {
    nextId = 0;
    expect(verdict([ok(1, put("a"), 0, 10), ok(2, get(), 5, 15, read("ghost"))])).toBe("not-linearizable");
  });

  it("rejects a compare-and-set that succeeds on the wrong value", () => {
    nextId = 0;
    const h = [ok(1, put("a"), 0, 10), ok(2, cas("b", "c"), 20, 30, { succeeded: true })];
    expect(verdict(h)).toBe("not-linearizable");
    nextId = 0;
    const h2 = [ok(1, put("a"), 0, 10), ok(2, cas("a", "c"), 20, 30, { succeeded: false })];
    expect(verdict(h2)).toBe("not-linearizable");
  });

  it("rejects a delete whose count disagrees with the value", () => {
    nextId = 0;
    expect(verdict([ok(1, del(), 0, 10, { deleted: 1 })])).toBe("not-linearizable");
  });

  it("finds the one order of overlapping operations that works, and rejects when none does", () => {
    nextId = 0;
    // put a spans everything; the read of a after put b forces b, then a.
    const h = [ok(1, put("a"), 0, 100), ok(2, put("b"), 10, 20), ok(3, get(), 30, 40, read("a"))];
    expect(verdict(h)).toBe("linearizable");
    // A later read of b would need b after a as well: no order works.
    expect(verdict([...h, ok(3, get(), 110, 120, read("b"))])).toBe("not-linearizable");
    // Reads in both orders while both writes overlap them: fine, and the reverse too.
    nextId = 0;
    const both = [
      ok(1, put("a"), 0, 100),
      ok(2, put("b"), 0, 100),
      ok(3, get(), 10, 20, read("a")),
      ok(3, get(), 30, 40, read("b")),
    ];
    expect(verdict(both)).toBe("linearizable");
    expect(verdict([...both, ok(4, get(), 50, 60, read("a"))])).toBe("not-linearizable");
  });

  it("counts operations that touch in time as concurrent", () => {
    nextId = 0;
    expect(verdict([ok(1, put("a"), 0, 10), ok(2, get(), 10, 20, read(null))])).toBe("linearizable");
    expect(verdict([ok(1, put("a"), 0, 10), ok(2, get(), 10.001, 20, read(null))])).toBe("not-linearizable");
  });

  it("lets an operation of unknown outcome take effect at any time after its call, or never", () => {
    nextId = 0;
    const never = [unknown(1, put("a"), 0), ok(2, get(), 50, 60, read(null))];
    expect(verdict(never)).toBe("linearizable");
    nextId = 0;
    const late = [
      unknown(1, put("a"), 0),
      ok(2, get(), 10, 20, read(null)),
      ok(2, get(), 1e6, 1e6 + 1, read("a")),
    ];
    expect(verdict(late)).toBe("linearizable");
    // But only once: a, then ∅ by a delete, then a again needs a second write.
    nextId = 0;
    const twice = [
      unknown(1, put("a"), 0),
      ok(2, get(), 10, 20, read("a")),
      ok(2, del(), 30, 40),
      ok(2, get(), 50, 60, read("a")),
    ];
    expect(verdict(twice)).toBe("not-linearizable");
    // And not before its call.
    nextId = 0;
    expect(verdict([ok(2, get(), 0, 10, read("a")), unknown(1, put("a"), 20)])).toBe("not-linearizable");
    // An unknown compare-and-set applies only if its expectation holds where it goes.
    nextId = 0;
    const casUnknown = [
      ok(1, put("x"), 0, 10),
      unknown(2, cas("x", "y"), 20),
      ok(3, put("z"), 30, 40),
      ok(3, get(), 50, 60, read("y")),
    ];
    expect(verdict(casUnknown)).toBe("not-linearizable");
  });

  it("leaves out failed operations: they certainly did not take effect", () => {
    nextId = 0;
    expect(verdict([failed(1, put("a"), 0, 10), ok(2, get(), 20, 30, read(null))])).toBe("linearizable");
    nextId = 0;
    expect(verdict([failed(1, put("a"), 0, 10), ok(2, get(), 20, 30, read("a"))])).toBe("not-linearizable");
  });

  it("checks each key alone and names the failing one", () => {
    nextId = 0;
    const h = [
      ok(1, put("a", "k1"), 0, 10),
      ok(2, put("b", "k2"), 0, 10),
      ok(1, get("k1"), 20, 30, read("a")),
      ok(2, get("k2"), 20, 30, read(null)),
    ];
    const r = checkHistory(kvModel, h);
    expect(r.verdict).toBe("not-linearizable");
    expect(r.partitions.map((p) => [p.key, p.verdict])).toEqual([
      ["k1", "linearizable"],
      ["k2", "not-linearizable"],
    ]);
  });

  it('gives "unknown" instead of searching past its step budget', () => {
    nextId = 0;
    // Ten writes overlap each other and a long series of reads; the last read cannot be
    // explained, so a full search must try many orders.
    const h: Op[] = [];
    for (let i = 0; i < 10; i++) h.push(ok(i, put(`v${i}`), 0, 1000));
    for (let i = 0; i < 10; i++) h.push(ok(100, get(), 10 + i * 10, 15 + i * 10, read(`v${(i * 3) % 10}`)));
    h.push(ok(100, get(), 2000, 2001, read("v3")));
    const small = checkHistory(kvModel, h, { maxStepsPerPartition: 50 });
    expect(small.verdict).toBe("unknown");
    expect(small.partitions[0]!.steps).toBe(50);
    expect(checkHistory(kvModel, h).verdict).toBe("not-linearizable");
  });

  it("reports the key, the longest prefix, the blocked operation and a timeline", () => {
    nextId = 0;
    const h = [
      ok(1, put("a"), 0, 10),
      ok(2, put("b"), 20, 30),
      unknown(4, put("c"), 22),
      ok(3, get(), 40, 50, read("a")),
      ok(1, get("other"), 0, 1, read(null)),
    ];
    const r = checkHistory(kvModel, h);
    const text = formatCheckResult(kvModel, r);
    expect(text).toContain(
      "linearizability: NOT-LINEARIZABLE: 2 partitions (1 linearizable, 1 not, 0 unknown)",
    );
    expect(text).toContain('key "k": NOT LINEARIZABLE (4 operations, 1 of unknown outcome');
    expect(text).toContain('longest linearizable prefix: 3 of 4 operations; after it the value is "c"');
    expect(text).toContain('#3 p3 get → "a" returned at 50.0 ms');
    expect(text).toContain('#3: get → "a" is impossible when the value is "c"');
    expect(text).toMatch(/#2 p4 put "c" → \? \(unknown outcome\) \|\s+\[=+>\| 22\.0–\? {2}3/);
    expect(text).toMatch(/#0 p1 put "a" +\|\[=*\] +\| 0\.0–10\.0 {2}1/);
    expect(text).toMatch(/#3 p3 get → "a" +\| +\[=+\]\s*\| 40\.0–50\.0 {2}✗/);
  });

  it("is deterministic: the same history gives the same result", () => {
    nextId = 0;
    const h = [ok(1, put("a"), 0, 100), ok(2, put("b"), 10, 20), ok(3, get(), 30, 40, read("b"))];
    expect(checkHistory(kvModel, h)).toEqual(checkHistory(kvModel, h));
  });
});

describe("event histories (invoke / ok / fail / unknown)", () => {
  it("pair each invocation with its process's next completion; an open one is unknown", () => {
    const ops = operationsFromEvents<KvInput, KvOutput>([
      { type: "invoke", process: 1, time: 0, input: put("a") },
      { type: "invoke", process: 2, time: 1, input: get() },
      { type: "ok", process: 1, time: 5, output: {} },
      { type: "ok", process: 2, time: 6, output: read("a") },
      { type: "invoke", process: 1, time: 7, input: put("b") },
      { type: "unknown", process: 1, time: 9, error: "timeout" },
      { type: "invoke", process: 3, time: 8, input: put("c") },
      { type: "fail", process: 3, time: 10, error: "too many requests" },
      { type: "invoke", process: 2, time: 11, input: put("d") },
    ]);
    expect(ops.map((o) => [o.id, o.process, o.status, o.call, o.ret])).toEqual([
      [0, 1, "ok", 0, 5],
      [1, 2, "ok", 1, 6],
      [2, 1, "unknown", 7, undefined],
      [3, 3, "fail", 8, 10],
      [4, 2, "unknown", 11, undefined],
    ]);
    expect(checkHistory(kvModel, ops).verdict).toBe("linearizable");
  });

  it("refuse malformed histories", () => {
    expect(() =>
      operationsFromEvents<KvInput, KvOutput>([
        { type: "invoke", process: 1, time: 0, input: get() },
        { type: "invoke", process: 1, time: 1, input: get() },
      ]),
    ).toThrow(/invoked twice/);
    expect(() =>
      checkHistory(kvModel, [
        { id: 0, process: 1, input: get(), call: 5, ret: 4, status: "ok", output: read(null) },
      ]),
    ).toThrow(/return time/);
  });
});
