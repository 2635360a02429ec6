// Splits a list of Txn operations into chunks that each fit etcd's limits: at most TXN_OPS_MAX
// operations (--max-txn-ops, 128) and TXN_CHUNK_BYTES_MAX of keys and values (under
// --max-request-bytes, 1.5 MiB). Order is kept. An op larger than the byte budget alone goes in a
// chunk by itself (the server then decides).

import type { etcdserverpb } from "@regmesh/proto";
import { TXN_CHUNK_BYTES_MAX, TXN_OPS_MAX } from "../etcd/limits.js";
import { opBytes } from "../etcd/txn.js";

export function chunkOps(
  ops: readonly etcdserverpb.RequestOp[],
  maxOps = TXN_OPS_MAX,
  maxBytes = TXN_CHUNK_BYTES_MAX,
): etcdserverpb.RequestOp[][] {
  const chunks: etcdserverpb.RequestOp[][] = [];
  let cur: etcdserverpb.RequestOp[] = [];
  let bytes = 0;
  for (const o of ops) {
    const b = opBytes(o);
    if (cur.length > 0 && (cur.length >= maxOps || bytes + b > maxBytes)) {
      chunks.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(o);
    bytes += b;
  }
  if (cur.length > 0) chunks.push(cur);
  return chunks;
}
