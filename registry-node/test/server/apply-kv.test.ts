import { etcdserverpb } from "@regmesh/proto";
import { describe, expect, it } from "vitest";
import { BufferedBackend, KVStore, MemStorage } from "../../src/mvcc/index.js";
import { KVApplier } from "../../src/server/apply-kv.js";

const b = (s: string) => Buffer.from(s);
const {
  Compare_CompareResult: R,
  Compare_CompareTarget: T,
  RangeRequest_SortOrder: O,
  RangeRequest_SortTarget: S,
} = etcdserverpb;

function setup(leases: bigint[] = []) {
  const kv = new KVStore(new BufferedBackend(new MemStorage()));
  const a = new KVApplier(kv, { exists: (id) => leases.includes(id) });
  const put = (k: string, v: string, extra: Partial<etcdserverpb.PutRequest> = {}) =>
    a.put(etcdserverpb.PutRequest.create({ key: b(k), value: b(v), ...extra }));
  const range = (r: Partial<etcdserverpb.RangeRequest>) => a.range(etcdserverpb.RangeRequest.create(r));
  return { kv, a, put, range };
}

describe("KV applier (etcd 3.4 apply.go)", () => {
  it("Put answers the new revision and prev_kv; ignore_value needs the key", () => {
    const { put } = setup();
    expect(put("k", "1").header!.revision).toBe(2n);
    const r = put("k", "2", { prevKv: true });
    expect(r.header!.revision).toBe(3n);
    expect(r.prevKv!.value.toString()).toBe("1");
    expect(() => put("nope", "", { ignoreValue: true })).toThrow("etcdserver: key not found");
    expect(() => put("k", "x", { lease: 42n })).toThrow("etcdserver: requested lease not found");
  });

  it("Range sorts, limits with `more`, filters and counts", () => {
    const { put, range } = setup();
    put("a", "3");
    put("b", "1");
    put("c", "2");
    put("a", "4");
    const byValue = range({ key: b("a"), rangeEnd: b("z"), sortTarget: S.VALUE, sortOrder: O.DESCEND });
    expect(byValue.kvs.map((kv) => kv.key.toString())).toEqual(["a", "c", "b"]);
    const lim = range({ key: b("a"), rangeEnd: b("z"), limit: 2n });
    expect(lim.kvs.length).toBe(2);
    expect(lim.more).toBe(true);
    expect(lim.count).toBe(3n);
    const fresh = range({ key: b("a"), rangeEnd: b("z"), minModRevision: 4n });
    expect(fresh.kvs.map((kv) => kv.key.toString())).toEqual(["c", "a"].sort());
    const keysOnly = range({ key: b("a"), keysOnly: true });
    expect(keysOnly.kvs[0]!.value.length).toBe(0);
    expect(range({ key: b("a"), rangeEnd: b("z"), countOnly: true })).toMatchObject({ kvs: [], count: 3n });
    expect(range({ key: b("a"), revision: 2n }).kvs[0]!.value.toString()).toBe("3");
  });

  it("Txn evaluates compares first, applies one branch atomically, and answers per op", () => {
    const { a, put, range } = setup();
    put("x", "1");
    const txn = etcdserverpb.TxnRequest.create({
      compare: [{ key: b("x"), target: T.VALUE, result: R.EQUAL, value: b("1") }],
      success: [
        { requestPut: { key: b("x"), value: b("2") } as etcdserverpb.PutRequest },
        { requestRange: etcdserverpb.RangeRequest.create({ key: b("x") }) },
        {
          requestTxn: etcdserverpb.TxnRequest.create({
            // Evaluated before the outer put: x is still "1".
            compare: [{ key: b("x"), target: T.VALUE, result: R.EQUAL, value: b("1") }],
            success: [{ requestPut: etcdserverpb.PutRequest.create({ key: b("y"), value: b("inner") }) }],
          }),
        },
      ],
      failure: [{ requestDeleteRange: etcdserverpb.DeleteRangeRequest.create({ key: b("x") }) }],
    });
    const r = a.txn(txn);
    expect(r.succeeded).toBe(true);
    expect(r.header!.revision).toBe(3n);
    expect(r.responses[1]!.responseRange!.kvs[0]!.value.toString()).toBe("2");
    expect(r.responses[2]!.responseTxn!.succeeded).toBe(true);
    expect(range({ key: b("y") }).kvs[0]!.value.toString()).toBe("inner");
    // Both writes are one revision.
    expect(range({ key: b("y") }).kvs[0]!.modRevision).toBe(3n);

    const again = a.txn(txn);
    expect(again.succeeded).toBe(false);
    expect(again.responses[0]!.responseDeleteRange!.deleted).toBe(1n);
  });

  it("a Txn whose put names a missing lease changes nothing", () => {
    const { a, kv } = setup();
    const before = kv.rev;
    expect(() =>
      a.txn(
        etcdserverpb.TxnRequest.create({
          success: [
            { requestPut: etcdserverpb.PutRequest.create({ key: b("a"), value: b("1") }) },
            { requestPut: etcdserverpb.PutRequest.create({ key: b("b"), value: b("1"), lease: 7n }) },
          ],
        }),
      ),
    ).toThrow("etcdserver: requested lease not found");
    expect(kv.rev).toBe(before);
  });

  it("a missing key compares as zero, except for value compares which fail", () => {
    const { a } = setup();
    const cmp = (c: Partial<etcdserverpb.Compare>) =>
      a.txn(etcdserverpb.TxnRequest.create({ compare: [etcdserverpb.Compare.create({ key: b("m"), ...c })] }))
        .succeeded;
    expect(cmp({ target: T.VERSION, result: R.EQUAL, version: 0n })).toBe(true);
    expect(cmp({ target: T.CREATE, result: R.EQUAL, createRevision: 0n })).toBe(true);
    expect(cmp({ target: T.VALUE, result: R.NOT_EQUAL, value: b("x") })).toBe(false);
  });
});
