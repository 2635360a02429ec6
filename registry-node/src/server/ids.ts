import { createHash } from "node:crypto";

// Member and cluster ids as etcd computes them (etcdserver/api/membership/member.go,
// cluster.go): a member's id is the first 8 bytes (big-endian) of sha1 over its sorted
// peer URLs joined, then the cluster token; the cluster id is the first 8 bytes of sha1
// over the members' ids (8 bytes each, big-endian, sorted). Same flags, same ids as etcd.

export function memberId(peerUrls: string[], clusterToken: string, nowSeconds?: number): bigint {
  const b = Buffer.from(
    [...peerUrls].sort().join("") + clusterToken + (nowSeconds === undefined ? "" : String(nowSeconds)),
  );
  return createHash("sha1").update(b).digest().readBigUInt64BE(0);
}

export function clusterId(memberIds: bigint[]): bigint {
  const sorted = [...memberIds].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const buf = Buffer.alloc(8 * sorted.length);
  sorted.forEach((id, i) => {
    buf.writeBigUInt64BE(id, i * 8);
  });
  return createHash("sha1").update(buf).digest().readBigUInt64BE(0);
}

/**
 * etcd's request id generator (pkg/idutil): the low 16 bits of the member id in the top
 * 16 bits, then a 40-bit millisecond timestamp shifted left 8, counting up. Lease ids the
 * server chooses come from it, masked to positive int64.
 */
export class IdGenerator {
  private readonly prefix: bigint;
  private suffix: bigint;

  constructor(member: bigint, nowMs: number) {
    this.prefix = (member & 0xffffn) << 48n;
    this.suffix = (BigInt(nowMs) & ((1n << 40n) - 1n)) << 8n;
  }

  next(): bigint {
    this.suffix = (this.suffix + 1n) & ((1n << 48n) - 1n);
    return this.prefix | this.suffix;
  }
}

/** Raft ids are numbers below 2^53, taken from the low bits of etcd's 64-bit member ids. */
export function raftIdOf(member: bigint): number {
  return Number(member & ((1n << 53n) - 1n)) || 1;
}
