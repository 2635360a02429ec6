// A Txn builder: `client.txn().if(compare.version(k, "=", 0)).onSuccess(op.put(k, v)).onFailure(op.get(k)).commit()`.
// Compares and ops are plain protobuf messages, so they can be built ahead and chunked.

import { etcdserverpb } from "@regmesh/proto";
import { type Bytes, prefixEnd, toBuffer } from "./keys.js";

const { Compare_CompareResult: R, Compare_CompareTarget: T } = etcdserverpb;

export type CompareOp = "=" | "!=" | ">" | "<";

function result(op: CompareOp): etcdserverpb.Compare_CompareResult {
  switch (op) {
    case "=":
      return R.EQUAL;
    case "!=":
      return R.NOT_EQUAL;
    case ">":
      return R.GREATER;
    case "<":
      return R.LESS;
  }
}

function cmp(key: Bytes, op: CompareOp, fields: Partial<etcdserverpb.Compare>): etcdserverpb.Compare {
  return etcdserverpb.Compare.create({ key: toBuffer(key), result: result(op), ...fields });
}

/** Compares for Txn.if(). Numbers are revisions/versions/lease ids (bigint or safe integers). */
export const compare = {
  version: (key: Bytes, op: CompareOp, v: bigint | number) =>
    cmp(key, op, { target: T.VERSION, version: BigInt(v) }),
  createRevision: (key: Bytes, op: CompareOp, v: bigint | number) =>
    cmp(key, op, { target: T.CREATE, createRevision: BigInt(v) }),
  modRevision: (key: Bytes, op: CompareOp, v: bigint | number) =>
    cmp(key, op, { target: T.MOD, modRevision: BigInt(v) }),
  value: (key: Bytes, op: CompareOp, v: Bytes) => cmp(key, op, { target: T.VALUE, value: toBuffer(v) }),
  lease: (key: Bytes, op: CompareOp, v: bigint | number) =>
    cmp(key, op, { target: T.LEASE, lease: BigInt(v) }),
};

export interface RangeOptions {
  /** Select every key with this key as prefix (overrides rangeEnd). */
  prefix?: boolean;
  rangeEnd?: Bytes;
  limit?: number;
  revision?: bigint;
  serializable?: boolean;
  keysOnly?: boolean;
  countOnly?: boolean;
  sortOrder?: etcdserverpb.RangeRequest_SortOrder;
  sortTarget?: etcdserverpb.RangeRequest_SortTarget;
}

export interface PutOptions {
  lease?: bigint;
  prevKv?: boolean;
  ignoreLease?: boolean;
}

export interface DeleteOptions {
  prefix?: boolean;
  rangeEnd?: Bytes;
  prevKv?: boolean;
}

function rangeEndOf(key: Bytes, o: { prefix?: boolean; rangeEnd?: Bytes }): Buffer {
  if (o.prefix) return prefixEnd(key);
  return o.rangeEnd === undefined ? Buffer.alloc(0) : toBuffer(o.rangeEnd);
}

export function rangeRequest(key: Bytes, o: RangeOptions = {}): etcdserverpb.RangeRequest {
  return etcdserverpb.RangeRequest.create({
    key: toBuffer(key),
    rangeEnd: rangeEndOf(key, o),
    limit: BigInt(o.limit ?? 0),
    revision: o.revision ?? 0n,
    serializable: o.serializable ?? false,
    keysOnly: o.keysOnly ?? false,
    countOnly: o.countOnly ?? false,
    sortOrder: o.sortOrder ?? etcdserverpb.RangeRequest_SortOrder.NONE,
    sortTarget: o.sortTarget ?? etcdserverpb.RangeRequest_SortTarget.KEY,
  });
}

export function putRequest(key: Bytes, value: Bytes, o: PutOptions = {}): etcdserverpb.PutRequest {
  return etcdserverpb.PutRequest.create({
    key: toBuffer(key),
    value: toBuffer(value),
    lease: o.lease ?? 0n,
    prevKv: o.prevKv ?? false,
    ignoreLease: o.ignoreLease ?? false,
  });
}

export function deleteRequest(key: Bytes, o: DeleteOptions = {}): etcdserverpb.DeleteRangeRequest {
  return etcdserverpb.DeleteRangeRequest.create({
    key: toBuffer(key),
    rangeEnd: rangeEndOf(key, o),
    prevKv: o.prevKv ?? false,
  });
}

/** Operations for Txn.then()/else(). */
export const op = {
  get: (key: Bytes, o?: RangeOptions): etcdserverpb.RequestOp => ({ requestRange: rangeRequest(key, o) }),
  put: (key: Bytes, value: Bytes, o?: PutOptions): etcdserverpb.RequestOp => ({
    requestPut: putRequest(key, value, o),
  }),
  delete: (key: Bytes, o?: DeleteOptions): etcdserverpb.RequestOp => ({
    requestDeleteRange: deleteRequest(key, o),
  }),
};

/** Bytes an op adds to a Txn, for chunking under the request limit (keys and values dominate). */
export function opBytes(o: etcdserverpb.RequestOp): number {
  const overhead = 16;
  if (o.requestPut) return o.requestPut.key.length + o.requestPut.value.length + overhead;
  if (o.requestDeleteRange)
    return o.requestDeleteRange.key.length + o.requestDeleteRange.rangeEnd.length + overhead;
  if (o.requestRange) return o.requestRange.key.length + o.requestRange.rangeEnd.length + overhead;
  return etcdserverpb.RequestOp.encode(o).finish().length;
}

export class TxnBuilder {
  private readonly compares: etcdserverpb.Compare[] = [];
  private readonly success: etcdserverpb.RequestOp[] = [];
  private readonly failure: etcdserverpb.RequestOp[] = [];

  constructor(private readonly run: (req: etcdserverpb.TxnRequest) => Promise<etcdserverpb.TxnResponse>) {}

  if(...c: etcdserverpb.Compare[]): this {
    this.compares.push(...c);
    return this;
  }
  /** Ops run when every compare holds (Go's Txn.Then; not `then`, which would make this a thenable). */
  onSuccess(...ops: etcdserverpb.RequestOp[]): this {
    this.success.push(...ops);
    return this;
  }
  /** Ops run when a compare fails (Go's Txn.Else). */
  onFailure(...ops: etcdserverpb.RequestOp[]): this {
    this.failure.push(...ops);
    return this;
  }
  request(): etcdserverpb.TxnRequest {
    return etcdserverpb.TxnRequest.create({
      compare: this.compares,
      success: this.success,
      failure: this.failure,
    });
  }
  commit(): Promise<etcdserverpb.TxnResponse> {
    return this.run(this.request());
  }
}
