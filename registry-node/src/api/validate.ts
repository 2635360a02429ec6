// Request checks made before a request is proposed (etcd's v3rpc/key.go), with etcd's errors.

import { etcdserverpb } from "@regmesh/proto";
import { errors } from "../server/errors.js";

const sortOrders = new Set([0, 1, 2]);
const sortTargets = new Set([0, 1, 2, 3, 4]);

export function checkRangeRequest(r: etcdserverpb.RangeRequest): void {
  if (r.key.length === 0) throw errors.emptyKey();
  if (!sortOrders.has(r.sortOrder)) throw errors.invalidSortOption();
  if (!sortTargets.has(r.sortTarget)) throw errors.invalidSortOption();
}

export function checkPutRequest(r: etcdserverpb.PutRequest): void {
  if (r.key.length === 0) throw errors.emptyKey();
  if (r.ignoreValue && r.value.length !== 0) throw errors.valueProvided();
  if (r.ignoreLease && r.lease !== 0n) throw errors.leaseProvided();
}

export function checkDeleteRequest(r: etcdserverpb.DeleteRangeRequest): void {
  if (r.key.length === 0) throw errors.emptyKey();
}

export function checkTxnRequest(r: etcdserverpb.TxnRequest, maxTxnOps: number): void {
  const opc = Math.max(r.compare.length, r.success.length, r.failure.length);
  if (opc > maxTxnOps) throw errors.tooManyOps();
  for (const c of r.compare) if (c.key.length === 0) throw errors.emptyKey();
  for (const op of [...r.success, ...r.failure]) checkRequestOp(op, maxTxnOps - opc);
  checkIntervals(r.success);
  checkIntervals(r.failure);
}

function checkRequestOp(op: etcdserverpb.RequestOp, maxTxnOps: number): void {
  if (op.requestRange) checkRangeRequest(op.requestRange);
  else if (op.requestPut) checkPutRequest(op.requestPut);
  else if (op.requestDeleteRange) checkDeleteRequest(op.requestDeleteRange);
  else if (op.requestTxn) checkTxnRequest(op.requestTxn, maxTxnOps);
  // An empty operation: etcd answers "key not found".
  else throw errors.keyNotFound();
}

/** A half-open interval of binary strings; "" as an end means +infinity (etcd's adt affine strings). */
type Interval = { begin: string; end: string | undefined };
const latin1 = (b: Uint8Array) => Buffer.from(b).toString("latin1");

function intersectsPoint(dels: Interval[], k: string): boolean {
  return dels.some((iv) =>
    iv.end === undefined ? iv.begin === k : k >= iv.begin && (iv.end === "" || k < iv.end),
  );
}

/**
 * A key may be written at most once per transaction branch, counting nested transactions
 * (etcd's checkIntervals): a put may not repeat a put, nor fall inside a delete range.
 * Then and else branches of one nested transaction exclude each other, so they may share keys.
 */
function checkIntervals(reqs: etcdserverpb.RequestOp[]): { puts: Set<string>; dels: Interval[] } {
  const dels: Interval[] = [];
  for (const op of reqs) {
    const d = op.requestDeleteRange;
    if (!d) continue;
    // etcd builds [key, range_end) as strings; "\0" is then an ordinary (tiny) end, not infinity.
    dels.push({ begin: latin1(d.key), end: d.rangeEnd.length !== 0 ? latin1(d.rangeEnd) : undefined });
  }
  const puts = new Set<string>();
  for (const op of reqs) {
    const t = op.requestTxn;
    if (!t) continue;
    const then = checkIntervals(t.success);
    const otherwise = checkIntervals(t.failure);
    for (const k of then.puts) {
      if (puts.has(k) || intersectsPoint(dels, k)) throw errors.duplicateKey();
      puts.add(k);
    }
    for (const k of otherwise.puts) {
      if (puts.has(k) && !then.puts.has(k)) throw errors.duplicateKey();
      if (intersectsPoint(dels, k)) throw errors.duplicateKey();
      puts.add(k);
    }
    dels.push(...then.dels, ...otherwise.dels);
  }
  for (const op of reqs) {
    const p = op.requestPut;
    if (!p) continue;
    const k = latin1(p.key);
    if (puts.has(k) || intersectsPoint(dels, k)) throw errors.duplicateKey();
    puts.add(k);
  }
  return { puts, dels };
}

export { etcdserverpb };
