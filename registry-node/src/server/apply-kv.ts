// Applies KV requests to the mvcc store as etcd 3.4's applierV3backend does
// (etcdserver/apply.go): Range with sorting, filtering and limits; Put with prev_kv,
// ignore_value and ignore_lease; DeleteRange with prev_kv; Txn with compares evaluated up
// front on the state before the transaction (nested transactions included), then the
// chosen branch's operations in one write transaction; Compaction.

import { etcdserverpb, type mvccpb } from "@regmesh/proto";
import type { KVStore, ReadTxn, WriteTxn } from "../mvcc/kvstore.js";
import { errors } from "./errors.js";

type KeyValue = mvccpb.KeyValue;
const { SortOrder, SortTarget } = {
  SortOrder: etcdserverpb.RangeRequest_SortOrder,
  SortTarget: etcdserverpb.RangeRequest_SortTarget,
};
const CompareResult = etcdserverpb.Compare_CompareResult;
const CompareTarget = etcdserverpb.Compare_CompareTarget;

/** What the applier asks of the lessor. */
export interface LeaseLookup {
  exists(id: bigint): boolean;
}

const emptyHeader = (): etcdserverpb.ResponseHeader => ({
  clusterId: 0n,
  memberId: 0n,
  revision: 0n,
  raftTerm: 0n,
});

/** mkGteRange: a range end of "\0" means every key >= key. */
function rangeEndOf(rangeEnd: Uint8Array): Uint8Array | undefined {
  return rangeEnd.length === 0 ? undefined : rangeEnd;
}

export class KVApplier {
  constructor(
    private readonly kv: KVStore,
    private readonly leases: LeaseLookup,
  ) {}

  range(r: etcdserverpb.RangeRequest, txn?: ReadTxn | WriteTxn): etcdserverpb.RangeResponse {
    const view = txn ?? this.kv.read();
    let limit = Number(r.limit);
    const needAll =
      r.sortOrder !== SortOrder.NONE ||
      r.minModRevision !== 0n ||
      r.maxModRevision !== 0n ||
      r.minCreateRevision !== 0n ||
      r.maxCreateRevision !== 0n;
    if (needAll) limit = 0;
    if (limit > 0) limit += 1; // one more, to know whether there is `more`
    const rr = view.range(r.key, rangeEndOf(r.rangeEnd), {
      limit,
      rev: Number(r.revision),
      count: r.countOnly,
    });
    let kvs = rr.kvs;
    if (r.maxModRevision !== 0n) kvs = kvs.filter((kv) => kv.modRevision <= r.maxModRevision);
    if (r.minModRevision !== 0n) kvs = kvs.filter((kv) => kv.modRevision >= r.minModRevision);
    if (r.maxCreateRevision !== 0n) kvs = kvs.filter((kv) => kv.createRevision <= r.maxCreateRevision);
    if (r.minCreateRevision !== 0n) kvs = kvs.filter((kv) => kv.createRevision >= r.minCreateRevision);

    let order = r.sortOrder;
    // etcd 3.4: sorting by anything but the key defaults to ascending.
    if (r.sortTarget !== SortTarget.KEY && order === SortOrder.NONE) order = SortOrder.ASCEND;
    if (order !== SortOrder.NONE) {
      const cmp = comparator(r.sortTarget);
      // Stable, so equal values keep key order (Go's sort.Sort leaves their order unspecified).
      kvs = kvs.slice().sort(order === SortOrder.DESCEND ? (a, b) => cmp(b, a) : cmp);
    }
    let more = false;
    if (r.limit > 0n && kvs.length > Number(r.limit)) {
      kvs = kvs.slice(0, Number(r.limit));
      more = true;
    }
    if (r.keysOnly) kvs = kvs.map((kv) => ({ ...kv, value: Buffer.alloc(0) }));
    return {
      header: { ...emptyHeader(), revision: BigInt(rr.rev) },
      kvs,
      more,
      count: BigInt(rr.count),
    };
  }

  /** Checks a put can apply (lease exists; ignore_* need the key) before any write happens. */
  private checkPut(p: etcdserverpb.PutRequest, view: ReadTxn | WriteTxn): void {
    if (p.lease !== 0n && !this.leases.exists(p.lease)) throw errors.leaseNotFound();
    if (p.ignoreValue || p.ignoreLease) {
      if (view.range(p.key, undefined).kvs.length === 0) throw errors.keyNotFound();
    }
  }

  put(p: etcdserverpb.PutRequest, txn?: WriteTxn): etcdserverpb.PutResponse {
    const own = txn === undefined;
    const w = txn ?? this.kv.write();
    try {
      if (own) this.checkPut(p, w);
      let value: Uint8Array = p.value;
      let lease = p.lease;
      let prev: KeyValue | undefined;
      if (p.ignoreValue || p.ignoreLease || p.prevKv) {
        prev = w.range(p.key, undefined).kvs[0];
        if ((p.ignoreValue || p.ignoreLease) && prev === undefined) throw errors.keyNotFound();
      }
      if (p.ignoreValue) value = prev!.value;
      if (p.ignoreLease) lease = prev!.lease;
      w.put(p.key, value, lease);
      const resp: etcdserverpb.PutResponse = {
        header: { ...emptyHeader(), revision: BigInt(w.beginRev + 1) },
      };
      if (p.prevKv && prev !== undefined) resp.prevKv = prev;
      return resp;
    } finally {
      if (own) w.end();
    }
  }

  deleteRange(d: etcdserverpb.DeleteRangeRequest, txn?: WriteTxn): etcdserverpb.DeleteRangeResponse {
    const own = txn === undefined;
    const w = txn ?? this.kv.write();
    try {
      const end = rangeEndOf(d.rangeEnd);
      const resp: etcdserverpb.DeleteRangeResponse = { header: emptyHeader(), deleted: 0n, prevKvs: [] };
      if (d.prevKv) resp.prevKvs = w.range(d.key, end).kvs;
      const n = w.deleteRange(d.key, end);
      resp.deleted = BigInt(n);
      resp.header!.revision = BigInt(n !== 0 || w.changes.length > 0 ? w.beginRev + 1 : w.beginRev);
      return resp;
    } finally {
      if (own) w.end();
    }
  }

  txn(rt: etcdserverpb.TxnRequest): etcdserverpb.TxnResponse {
    const read = this.kv.read();
    const path = compareToPath(read, rt);
    // Validate the chosen operations against the state before any of them runs, so a
    // failing transaction changes nothing (etcd's checkRequests).
    checkRequests(rt, path, (op) => {
      if (op.requestPut) this.checkPut(op.requestPut, read);
      if (op.requestRange) checkRange(read, op.requestRange, this.kv.compactRev);
    });
    if (isTxnReadOnly(rt)) {
      const resp = newTxnResp(rt, path);
      this.applyTxn(read, rt, path, resp);
      resp.header!.revision = BigInt(read.rev);
      return resp;
    }
    const w = this.kv.write();
    const resp = newTxnResp(rt, path);
    try {
      this.applyTxn(w, rt, path, resp);
      resp.header!.revision = BigInt(w.headerRev);
    } finally {
      w.end();
    }
    return resp;
  }

  /** Applies the branch chosen by `path[0]`; returns how many nested txns it consumed. */
  private applyTxn(
    txn: ReadTxn | WriteTxn,
    rt: etcdserverpb.TxnRequest,
    path: boolean[],
    resp: etcdserverpb.TxnResponse,
  ): number {
    const reqs = path[0] ? rt.success : rt.failure;
    let txns = 0;
    let rest = path.slice(1);
    reqs.forEach((op, i) => {
      const r = resp.responses[i]!;
      if (op.requestRange) r.responseRange = this.range(op.requestRange, txn);
      else if (op.requestPut) r.responsePut = this.put(op.requestPut, txn as WriteTxn);
      else if (op.requestDeleteRange)
        r.responseDeleteRange = this.deleteRange(op.requestDeleteRange, txn as WriteTxn);
      else if (op.requestTxn) {
        const n = this.applyTxn(txn, op.requestTxn, rest, r.responseTxn!);
        txns += n + 1;
        rest = rest.slice(n + 1);
      }
    });
    return txns;
  }

  /** Compacts at `revision`; returns the response and the physical compaction task. */
  compaction(c: etcdserverpb.CompactionRequest): {
    resp: etcdserverpb.CompactionResponse;
    task: { done: () => boolean; step: () => boolean };
  } {
    const task = this.kv.compact(Number(c.revision));
    return { resp: { header: { ...emptyHeader(), revision: BigInt(this.kv.rev) } }, task };
  }
}

function comparator(target: etcdserverpb.RangeRequest_SortTarget): (a: KeyValue, b: KeyValue) => number {
  const big = (x: bigint, y: bigint) => (x < y ? -1 : x > y ? 1 : 0);
  switch (target) {
    case SortTarget.KEY:
      return (a, b) => Buffer.compare(a.key, b.key);
    case SortTarget.VERSION:
      return (a, b) => big(a.version, b.version);
    case SortTarget.CREATE:
      return (a, b) => big(a.createRevision, b.createRevision);
    case SortTarget.MOD:
      return (a, b) => big(a.modRevision, b.modRevision);
    case SortTarget.VALUE:
      return (a, b) => Buffer.compare(a.value, b.value);
    default:
      throw errors.invalidSortOption();
  }
}

/** The result of every txn's compares along the path the transaction will take, in DFS order. */
function compareToPath(rv: ReadTxn, rt: etcdserverpb.TxnRequest): boolean[] {
  const ok = rt.compare.every((c) => applyCompare(rv, c));
  const path = [ok];
  for (const op of ok ? rt.success : rt.failure) {
    if (op.requestTxn) path.push(...compareToPath(rv, op.requestTxn));
  }
  return path;
}

function applyCompare(rv: ReadTxn, c: etcdserverpb.Compare): boolean {
  const kvs = rv.range(c.key, rangeEndOf(c.rangeEnd)).kvs;
  if (kvs.length === 0) {
    // A value compare on a missing key always fails; other targets compare against zero.
    if (c.target === CompareTarget.VALUE) return false;
    return compareKV(c, undefined);
  }
  return kvs.every((kv) => compareKV(c, kv));
}

function compareKV(c: etcdserverpb.Compare, kv: KeyValue | undefined): boolean {
  let result: number;
  const big = (x: bigint, y: bigint) => (x < y ? -1 : x > y ? 1 : 0);
  switch (c.target) {
    case CompareTarget.VALUE:
      result = Buffer.compare(kv?.value ?? Buffer.alloc(0), c.value ?? Buffer.alloc(0));
      break;
    case CompareTarget.CREATE:
      result = big(kv?.createRevision ?? 0n, c.createRevision ?? 0n);
      break;
    case CompareTarget.MOD:
      result = big(kv?.modRevision ?? 0n, c.modRevision ?? 0n);
      break;
    case CompareTarget.VERSION:
      result = big(kv?.version ?? 0n, c.version ?? 0n);
      break;
    case CompareTarget.LEASE:
      result = big(kv?.lease ?? 0n, c.lease ?? 0n);
      break;
    default:
      return false;
  }
  switch (c.result) {
    case CompareResult.EQUAL:
      return result === 0;
    case CompareResult.NOT_EQUAL:
      return result !== 0;
    case CompareResult.GREATER:
      return result > 0;
    case CompareResult.LESS:
      return result < 0;
    default:
      return false;
  }
}

function checkRequests(
  rt: etcdserverpb.TxnRequest,
  path: boolean[],
  f: (op: etcdserverpb.RequestOp) => void,
): number {
  const reqs = path[0] ? rt.success : rt.failure;
  let txns = 0;
  let rest = path.slice(1);
  for (const op of reqs) {
    if (op.requestTxn) {
      const n = checkRequests(op.requestTxn, rest, f);
      txns += n + 1;
      rest = rest.slice(n + 1);
    } else f(op);
  }
  return txns;
}

function checkRange(rv: ReadTxn, r: etcdserverpb.RangeRequest, compactRev: number): void {
  if (r.revision === 0n) return;
  if (r.revision > BigInt(rv.rev)) throw errors.futureRev();
  if (r.revision < BigInt(compactRev)) throw errors.compacted();
}

export function isTxnReadOnly(rt: etcdserverpb.TxnRequest): boolean {
  for (const op of [...rt.success, ...rt.failure]) {
    if (op.requestPut || op.requestDeleteRange) return false;
    if (op.requestTxn && !isTxnReadOnly(op.requestTxn)) return false;
  }
  return true;
}

function newTxnResp(rt: etcdserverpb.TxnRequest, path: boolean[]): etcdserverpb.TxnResponse {
  const reqs = path[0] ? rt.success : rt.failure;
  let rest = path.slice(1);
  const responses: etcdserverpb.ResponseOp[] = reqs.map((op) => {
    if (op.requestTxn) {
      const sub = newTxnResp(op.requestTxn, rest);
      rest = rest.slice(countTxns(op.requestTxn, rest) + 1);
      return { responseTxn: sub };
    }
    return {};
  });
  return { header: emptyHeader(), succeeded: path[0]!, responses };
}

function countTxns(rt: etcdserverpb.TxnRequest, path: boolean[]): number {
  const reqs = path[0] ? rt.success : rt.failure;
  let n = 0;
  let rest = path.slice(1);
  for (const op of reqs) {
    if (op.requestTxn) {
      const c = countTxns(op.requestTxn, rest);
      n += c + 1;
      rest = rest.slice(c + 1);
    }
  }
  return n;
}
