// The lessor (etcd's lease/lessor.go): leases with a TTL, the keys attached to them, and
// their expiry. Grant and Revoke are applied from the Raft log on every member; only the
// primary (the Raft leader) keeps expiry deadlines, renews leases on keep-alive without a
// Raft round trip, and proposes the revocation of expired leases. On other members every
// lease's expiry is "forever", so a deposed leader never revokes anything by itself.
//
// Time is an argument (`nowMs`), never read here, so tests drive expiry exactly.

import { leasepb } from "@regmesh/proto";
import { type BufferedBackend, buckets } from "../mvcc/backend.js";
import { type Change, type KVStore, keyBytes, type LeaseHooks } from "../mvcc/kvstore.js";
import { errors } from "../server/errors.js";

/** etcd's MaxLeaseTTL: 9,000,000,000 seconds. */
export const maxLeaseTTLSeconds = 9_000_000_000;
export const noLease = 0n;
const forever = Number.POSITIVE_INFINITY;

export class Lease {
  /** Keys attached to the lease (binary strings). */
  readonly keys = new Set<string>();
  /** When the lease expires on the primary (ms); forever elsewhere. */
  expiryMs = forever;

  constructor(
    readonly id: bigint,
    /** Granted TTL in seconds (raised to the minimum). */
    readonly ttlSeconds: number,
  ) {}

  /** Whole seconds left, truncated as etcd's `int64(l.Remaining().Seconds())`; -1 when none is kept. */
  remainingSeconds(nowMs: number): number {
    if (this.expiryMs === forever) return this.ttlSeconds;
    return Math.max(0, Math.trunc((this.expiryMs - nowMs) / 1000));
  }
}

function idBytes(id: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigInt64(0, id);
  return b;
}

export class Lessor implements LeaseHooks {
  private readonly leases = new Map<bigint, Lease>();
  /** key -> lease it is attached to. */
  private readonly itemMap = new Map<string, bigint>();
  private isPrimary = false;

  constructor(
    private readonly backend: BufferedBackend,
    /** The minimum TTL: etcd uses ceil(1.5 * election timeout) in seconds, 2 s at default timings. */
    readonly minTTLSeconds: number,
  ) {
    if (!(minTTLSeconds > 0)) throw new Error(`lessor: minimum TTL must be positive, got ${minTTLSeconds}`);
    backend.createBucket(buckets.lease);
  }

  get primary(): boolean {
    return this.isPrimary;
  }

  get size(): number {
    return this.leases.size;
  }

  /** Reads leases back from the backend at start-up (expiry forever until promoted). */
  restore(): void {
    this.backend.scan(buckets.lease, new Uint8Array(0), undefined, (_k, v) => {
      const l = leasepb.Lease.decode(v);
      const ttl = Math.max(Number(l.TTL), this.minTTLSeconds);
      this.leases.set(l.ID, new Lease(l.ID, ttl));
      return true;
    });
  }

  /** Applies a LeaseGrant (id already chosen by the proposer). */
  grant(id: bigint, ttlSeconds: number, nowMs: number): Lease {
    if (id === noLease) throw new Error("lessor: grant with id 0 (the proposer chooses ids)");
    if (ttlSeconds > maxLeaseTTLSeconds) throw errors.leaseTTLTooLarge();
    if (this.leases.has(id)) throw errors.leaseExist();
    const ttl = Math.max(ttlSeconds, this.minTTLSeconds);
    const l = new Lease(id, ttl);
    if (this.isPrimary) l.expiryMs = nowMs + ttl * 1000;
    this.leases.set(id, l);
    this.backend.put(
      buckets.lease,
      idBytes(id),
      leasepb.Lease.encode({ ID: id, TTL: BigInt(ttl), RemainingTTL: 0n }).finish(),
    );
    return l;
  }

  /** Applies a LeaseRevoke: deletes the attached keys in one write transaction, then the lease. */
  revoke(id: bigint, kv: KVStore): Change[] {
    const l = this.leases.get(id);
    if (l === undefined) throw errors.leaseNotFound();
    const txn = kv.write();
    // Sorted, so every member deletes in the same order and produces the same revisions.
    for (const key of [...l.keys].sort()) txn.deleteRange(keyBytes(key), undefined);
    this.leases.delete(id);
    this.backend.delete(buckets.lease, idBytes(id));
    return txn.end();
  }

  /** A keep-alive on the primary: the lease runs for its TTL again. Returns the TTL. */
  renew(id: bigint, nowMs: number): number {
    if (!this.isPrimary) throw errors.notLeader();
    const l = this.leases.get(id);
    if (l === undefined) throw errors.leaseNotFound();
    l.expiryMs = nowMs + l.ttlSeconds * 1000;
    return l.ttlSeconds;
  }

  lookup(id: bigint): Lease | undefined {
    return this.leases.get(id);
  }

  exists(id: bigint): boolean {
    return this.leases.has(id);
  }

  /** Ids of all leases, for LeaseLeases. */
  ids(): bigint[] {
    return [...this.leases.keys()];
  }

  /**
   * Becomes primary (on winning leadership): every lease gets its full TTL again plus
   * `extendMs` (etcd extends by the election timeout), since the old leader's deadlines
   * were not replicated and clients may have been cut off during the election.
   */
  promote(extendMs: number, nowMs: number): void {
    this.isPrimary = true;
    for (const l of this.leases.values()) l.expiryMs = nowMs + extendMs + l.ttlSeconds * 1000;
  }

  demote(): void {
    this.isPrimary = false;
    for (const l of this.leases.values()) l.expiryMs = forever;
  }

  /** Leases past their deadline, oldest first, at most `limit` (etcd revokes at most 1000/s). */
  expired(nowMs: number, limit: number): bigint[] {
    if (!this.isPrimary) return [];
    const out: Lease[] = [];
    for (const l of this.leases.values()) if (l.expiryMs <= nowMs) out.push(l);
    out.sort((a, b) => a.expiryMs - b.expiryMs);
    return out.slice(0, limit).map((l) => l.id);
  }

  // LeaseHooks, called by the KV store as keys are put and deleted.

  leaseOf(key: string): bigint {
    return this.itemMap.get(key) ?? noLease;
  }

  attach(id: bigint, key: string): void {
    const l = this.leases.get(id);
    if (l === undefined) throw errors.leaseNotFound();
    l.keys.add(key);
    this.itemMap.set(key, id);
  }

  detach(id: bigint, key: string): void {
    this.leases.get(id)?.keys.delete(key);
    if (this.itemMap.get(key) === id) this.itemMap.delete(key);
  }
}
