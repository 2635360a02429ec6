// The mock registry's state: an in-memory etcd v3 keyspace with revisions, history, leases and
// watch notification, synchronous and small enough to read in one sitting. mock-registry.ts puts
// the gRPC API in front of it.
//
// Semantics follow etcd 3.4 (api_guarantees and mvcc): every write request that changes something
// makes one new revision (a Txn's writes share it), a key's version counts changes since its
// creation and a delete resets it, ranges read the latest state or the state at a past revision
// (the whole history is kept; compaction only moves the floor below which it is refused), and
// watchers get every event of a revision together, in revision order. Leases expire on the
// injected Clock, so a test can move time and see keys go. It is not a database: ranges scan.

import { etcdserverpb, mvccpb } from "@regmesh/proto";
import type { Clock, Timer } from "../etcd/clock.js";
import { ETCD_MSG } from "../etcd/errors.js";

const { Compare_CompareResult: R, Compare_CompareTarget: T } = etcdserverpb;

/** gRPC status codes used by the mock (the numbers of grpc's status enum). */
export const GRPC = {
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  FAILED_PRECONDITION: 9,
  OUT_OF_RANGE: 11,
  UNAVAILABLE: 14,
} as const;

/** An etcd error as the server sends it: a gRPC status code and etcd's fixed message. */
export class MockEtcdError extends Error {
  constructor(
    readonly code: number,
    readonly details: string,
  ) {
    super(details);
  }
}

const ERR = {
  compacted: () => new MockEtcdError(GRPC.OUT_OF_RANGE, ETCD_MSG.compacted),
  futureRev: () => new MockEtcdError(GRPC.OUT_OF_RANGE, ETCD_MSG.futureRev),
  leaseNotFound: () => new MockEtcdError(GRPC.NOT_FOUND, ETCD_MSG.leaseNotFound),
  leaseExists: () => new MockEtcdError(GRPC.FAILED_PRECONDITION, "etcdserver: lease already exists"),
  emptyKey: () => new MockEtcdError(GRPC.INVALID_ARGUMENT, "etcdserver: key is not provided"),
  keyNotFound: () => new MockEtcdError(GRPC.INVALID_ARGUMENT, "etcdserver: key not found"),
  duplicateKey: () =>
    new MockEtcdError(GRPC.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"),
  tooManyOps: () => new MockEtcdError(GRPC.INVALID_ARGUMENT, ETCD_MSG.tooManyOps),
};

/** etcd's --max-txn-ops default. */
const TXN_OPS_MAX = 128;

/** Keys are kept as latin1 strings: one char per byte, so string order is etcd's byte order. */
const k = (b: Buffer): string => b.toString("latin1");

/** Whether `key` is selected by [start, end) with etcd's conventions for `end`. */
export function inRange(key: string, start: string, end: string): boolean {
  if (end === "") return key === start;
  if (end === "\0") return key >= start; // "\0" means "to the end of the keyspace"
  return key >= start && key < end;
}

export interface WriteEvent {
  type: mvccpb.Event_EventType;
  /** After the change (for a delete: the key with mod_revision = the deletion's revision). */
  kv: mvccpb.KeyValue;
  /** Before the change, when there was a value. */
  prevKv: mvccpb.KeyValue | undefined;
}

export interface Revision {
  revision: bigint;
  events: WriteEvent[];
}

interface MockLease {
  readonly id: bigint;
  readonly ttlS: number;
  expiresAtMs: number;
  keys: Set<string>;
  timer: Timer | undefined;
}

export interface LeaseInfo {
  id: bigint;
  ttlS: number;
  remainingMs: number;
  keys: string[];
}

/** A write in progress: ops of one request apply in order and share one revision. */
class WriteTx {
  readonly events: WriteEvent[] = [];
  constructor(
    readonly store: MockStore,
    readonly revision: bigint,
  ) {}
}

export class MockStore {
  private rev = 1n;
  private compactRev = 0n;
  private readonly live = new Map<string, mvccpb.KeyValue>();
  private readonly history: Revision[] = [];
  private readonly leaseMap = new Map<bigint, MockLease>();
  private readonly subscribers = new Set<(r: Revision) => void>();
  private nextLeaseId = 0x694d000000000000n + BigInt(Math.floor(Math.random() * 0xffffff)) * 0x10000n;
  private closed = false;

  constructor(
    private readonly clock: Clock,
    /** etcd raises shorter TTLs to its minimum lease TTL. */
    private readonly leaseTtlMinS = 1,
  ) {}

  get revision(): bigint {
    return this.rev;
  }
  get compactRevision(): bigint {
    return this.compactRev;
  }

  /** Calls `fn` with every committed revision, in order, until the returned function is called. */
  subscribe(fn: (r: Revision) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  /** Committed revisions from `from` on (for a watch that starts in the past). */
  revisionsFrom(from: bigint): Revision[] {
    return this.history.filter((r) => r.revision >= from);
  }

  // -------------------------------------------------------------------------------------------
  // Reads

  /** The keyspace at `revision` (0: now). Past states are rebuilt from the history. */
  private view(revision: bigint): Map<string, mvccpb.KeyValue> {
    if (revision <= 0n || revision === this.rev) return this.live;
    if (revision > this.rev) throw ERR.futureRev();
    if (revision < this.compactRev) throw ERR.compacted();
    const m = new Map<string, mvccpb.KeyValue>();
    for (const r of this.history) {
      if (r.revision > revision) break;
      for (const e of r.events) {
        if (e.type === mvccpb.Event_EventType.DELETE) m.delete(k(e.kv.key));
        else m.set(k(e.kv.key), e.kv);
      }
    }
    return m;
  }

  range(req: etcdserverpb.RangeRequest): etcdserverpb.RangeResponse {
    if (req.key.length === 0) throw ERR.emptyKey();
    const start = k(req.key);
    const end = k(req.rangeEnd);
    let kvs = [...this.view(req.revision).entries()]
      .filter(([key, kv]) => {
        if (!inRange(key, start, end)) return false;
        if (req.minModRevision > 0n && kv.modRevision < req.minModRevision) return false;
        if (req.maxModRevision > 0n && kv.modRevision > req.maxModRevision) return false;
        if (req.minCreateRevision > 0n && kv.createRevision < req.minCreateRevision) return false;
        if (req.maxCreateRevision > 0n && kv.createRevision > req.maxCreateRevision) return false;
        return true;
      })
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .map(([, kv]) => kv);
    kvs = sortKvs(kvs, req.sortOrder, req.sortTarget);
    const count = BigInt(kvs.length);
    if (req.countOnly) return { kvs: [], more: false, count };
    const limit = Number(req.limit);
    const more = limit > 0 && kvs.length > limit;
    if (more) kvs = kvs.slice(0, limit);
    if (req.keysOnly) kvs = kvs.map((kv) => ({ ...kv, value: Buffer.alloc(0) }));
    return { kvs, more, count };
  }

  // -------------------------------------------------------------------------------------------
  // Writes

  /**
   * Runs `fn` as one write; if it changed anything, commits a new revision and notifies. A write
   * that throws is rolled back whole (a Txn is all or nothing; copying is fine at a mock's size).
   */
  private write<X>(fn: (tx: WriteTx) => X): X {
    const tx = new WriteTx(this, this.rev + 1n);
    const live = new Map(this.live);
    const leaseKeys = [...this.leaseMap.values()].map((l) => [l, new Set(l.keys)] as const);
    let out: X;
    try {
      out = fn(tx);
    } catch (err) {
      this.live.clear();
      for (const [key, kv] of live) this.live.set(key, kv);
      for (const [l, keys] of leaseKeys) l.keys = keys;
      throw err;
    }
    if (tx.events.length > 0) {
      this.rev = tx.revision;
      const r: Revision = { revision: tx.revision, events: tx.events };
      this.history.push(r);
      for (const s of [...this.subscribers]) s(r);
    }
    return out;
  }

  private putIn(tx: WriteTx, req: etcdserverpb.PutRequest): etcdserverpb.PutResponse {
    if (req.key.length === 0) throw ERR.emptyKey();
    const key = k(req.key);
    const prev = this.live.get(key);
    if ((req.ignoreValue || req.ignoreLease) && prev === undefined) throw ERR.keyNotFound();
    const lease = req.ignoreLease ? prev!.lease : req.lease;
    if (lease !== 0n && !this.leaseMap.has(lease)) throw ERR.leaseNotFound();
    const kv: mvccpb.KeyValue = {
      key: Buffer.from(req.key),
      value: req.ignoreValue ? prev!.value : Buffer.from(req.value),
      createRevision: prev?.createRevision ?? tx.revision,
      modRevision: tx.revision,
      version: (prev?.version ?? 0n) + 1n,
      lease,
    };
    if (prev !== undefined && prev.lease !== 0n) this.leaseMap.get(prev.lease)?.keys.delete(key);
    if (lease !== 0n) this.leaseMap.get(lease)!.keys.add(key);
    this.live.set(key, kv);
    tx.events.push({ type: mvccpb.Event_EventType.PUT, kv, prevKv: prev });
    return req.prevKv && prev !== undefined ? { prevKv: prev } : {};
  }

  private deleteIn(tx: WriteTx, req: etcdserverpb.DeleteRangeRequest): etcdserverpb.DeleteRangeResponse {
    if (req.key.length === 0) throw ERR.emptyKey();
    const start = k(req.key);
    const end = k(req.rangeEnd);
    const gone = [...this.live.entries()]
      .filter(([key]) => inRange(key, start, end))
      .sort((a, b) => (a[0] < b[0] ? -1 : 1));
    for (const [key, prev] of gone) {
      this.live.delete(key);
      if (prev.lease !== 0n) this.leaseMap.get(prev.lease)?.keys.delete(key);
      const kv = mvccpb.KeyValue.create({ key: Buffer.from(prev.key), modRevision: tx.revision });
      tx.events.push({ type: mvccpb.Event_EventType.DELETE, kv, prevKv: prev });
    }
    return { deleted: BigInt(gone.length), prevKvs: req.prevKv ? gone.map(([, kv]) => kv) : [] };
  }

  put(req: etcdserverpb.PutRequest): etcdserverpb.PutResponse {
    return this.write((tx) => this.putIn(tx, req));
  }

  deleteRange(req: etcdserverpb.DeleteRangeRequest): etcdserverpb.DeleteRangeResponse {
    return this.write((tx) => this.deleteIn(tx, req));
  }

  txn(req: etcdserverpb.TxnRequest): etcdserverpb.TxnResponse {
    checkTxn(req);
    return this.write((tx) => this.txnIn(tx, req));
  }

  private txnIn(tx: WriteTx, req: etcdserverpb.TxnRequest): etcdserverpb.TxnResponse {
    const succeeded = req.compare.every((c) => this.compare(c));
    const ops = succeeded ? req.success : req.failure;
    // Nested answers carry a header with only a revision, as etcd's applyTxn fills them: a read
    // sees the revision before the Txn until the Txn has written something, a write the new one,
    // and a nested Txn's header stays empty.
    const header = (revision: bigint) => ({ clusterId: 0n, memberId: 0n, revision, raftTerm: 0n });
    const seen = () => (tx.events.length > 0 ? tx.revision : tx.revision - 1n);
    const responses: etcdserverpb.ResponseOp[] = ops.map((o) => {
      if (o.requestRange) {
        const res = this.range(o.requestRange);
        return { responseRange: { ...res, header: header(seen()) } };
      }
      if (o.requestPut)
        return { responsePut: { ...this.putIn(tx, o.requestPut), header: header(tx.revision) } };
      if (o.requestDeleteRange) {
        const res = this.deleteIn(tx, o.requestDeleteRange);
        return { responseDeleteRange: { ...res, header: header(seen()) } };
      }
      if (o.requestTxn) return { responseTxn: { ...this.txnIn(tx, o.requestTxn), header: header(0n) } };
      return {};
    });
    return { succeeded, responses };
  }

  /** etcd's applyCompare: every key in the compare's range must satisfy it; a missing key compares as zeros, except VALUE, which fails. */
  private compare(c: etcdserverpb.Compare): boolean {
    const start = k(c.key);
    const end = k(c.rangeEnd);
    const kvs: mvccpb.KeyValue[] = [];
    for (const [key, kv] of this.live) if (inRange(key, start, end)) kvs.push(kv);
    if (kvs.length === 0) {
      if (c.target === T.VALUE) return false;
      return compareOne(c, mvccpb.KeyValue.create());
    }
    return kvs.every((kv) => compareOne(c, kv));
  }

  compact(revision: bigint): void {
    if (revision > this.rev) throw ERR.futureRev();
    if (revision <= this.compactRev) throw ERR.compacted();
    this.compactRev = revision;
  }

  // -------------------------------------------------------------------------------------------
  // Leases

  grant(ttlS: number, id: bigint): { id: bigint; ttlS: number } {
    if (id === 0n) {
      do this.nextLeaseId += 1n;
      while (this.leaseMap.has(this.nextLeaseId));
      id = this.nextLeaseId;
    } else if (this.leaseMap.has(id)) {
      throw ERR.leaseExists();
    }
    const ttl = Math.max(this.leaseTtlMinS, 1, Math.ceil(ttlS));
    const l: MockLease = { id, ttlS: ttl, expiresAtMs: 0, keys: new Set(), timer: undefined };
    this.leaseMap.set(id, l);
    l.expiresAtMs = this.clock.now() + ttl * 1000;
    this.arm(l);
    return { id, ttlS: ttl };
  }

  /** One timer per lease, at its deadline; a renewal only moves the deadline, the timer follows it. */
  private arm(l: MockLease): void {
    l.timer?.cancel();
    if (this.closed) return;
    l.timer = this.clock.setTimer(() => {
      l.timer = undefined;
      if (this.leaseMap.get(l.id) !== l) return;
      if (this.clock.now() >= l.expiresAtMs) this.revoke(l.id);
      else this.arm(l);
    }, l.expiresAtMs - this.clock.now());
  }

  /** Restarts the lease's TTL; returns the TTL, or 0 if the lease does not exist (as etcd's keep-alive answers). */
  renew(id: bigint): number {
    const l = this.leaseMap.get(id);
    if (l === undefined) return 0;
    l.expiresAtMs = this.clock.now() + l.ttlS * 1000;
    return l.ttlS;
  }

  /** Revokes the lease: its keys are deleted in one revision. Throws "lease not found" if absent. */
  revoke(id: bigint): void {
    const l = this.leaseMap.get(id);
    if (l === undefined) throw ERR.leaseNotFound();
    l.timer?.cancel();
    this.write((tx) => {
      for (const key of [...l.keys].sort()) {
        this.deleteIn(tx, etcdserverpb.DeleteRangeRequest.create({ key: Buffer.from(key, "latin1") }));
      }
    });
    this.leaseMap.delete(id);
  }

  lease(id: bigint): LeaseInfo | undefined {
    const l = this.leaseMap.get(id);
    if (l === undefined) return undefined;
    return {
      id,
      ttlS: l.ttlS,
      remainingMs: Math.max(0, l.expiresAtMs - this.clock.now()),
      keys: [...l.keys].sort().map((x) => Buffer.from(x, "latin1").toString("utf8")),
    };
  }

  leases(): LeaseInfo[] {
    return [...this.leaseMap.keys()].map((id) => this.lease(id)!);
  }

  leaseKeys(id: bigint): Buffer[] {
    const l = this.leaseMap.get(id);
    return l === undefined ? [] : [...l.keys].sort().map((x) => Buffer.from(x, "latin1"));
  }

  close(): void {
    this.closed = true;
    for (const l of this.leaseMap.values()) l.timer?.cancel();
    this.subscribers.clear();
  }
}

function checkTxn(req: etcdserverpb.TxnRequest): void {
  if (req.success.length > TXN_OPS_MAX || req.failure.length > TXN_OPS_MAX) throw ERR.tooManyOps();
  for (const ops of [req.success, req.failure]) {
    // etcd refuses a Txn branch that writes one key twice (checkRequestPut/DeleteRange in apply.go).
    const puts = new Set<string>();
    const deletes: [string, string][] = [];
    for (const o of ops) {
      if (o.requestPut) {
        const key = k(o.requestPut.key);
        if (puts.has(key)) throw ERR.duplicateKey();
        puts.add(key);
      }
      if (o.requestDeleteRange) deletes.push([k(o.requestDeleteRange.key), k(o.requestDeleteRange.rangeEnd)]);
      if (o.requestTxn) checkTxn(o.requestTxn);
    }
    for (const key of puts) for (const [s, e] of deletes) if (inRange(key, s, e)) throw ERR.duplicateKey();
  }
}

function cmpBig(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareOne(c: etcdserverpb.Compare, kv: mvccpb.KeyValue): boolean {
  let r: number;
  switch (c.target) {
    case T.VERSION:
      r = cmpBig(kv.version, c.version ?? 0n);
      break;
    case T.CREATE:
      r = cmpBig(kv.createRevision, c.createRevision ?? 0n);
      break;
    case T.MOD:
      r = cmpBig(kv.modRevision, c.modRevision ?? 0n);
      break;
    case T.LEASE:
      r = cmpBig(kv.lease, c.lease ?? 0n);
      break;
    case T.VALUE:
      r = Buffer.compare(kv.value, c.value ?? Buffer.alloc(0));
      break;
    default:
      return false;
  }
  switch (c.result) {
    case R.EQUAL:
      return r === 0;
    case R.NOT_EQUAL:
      return r !== 0;
    case R.GREATER:
      return r > 0;
    case R.LESS:
      return r < 0;
    default:
      return false;
  }
}

function sortKvs(
  kvs: mvccpb.KeyValue[],
  order: etcdserverpb.RangeRequest_SortOrder,
  target: etcdserverpb.RangeRequest_SortTarget,
): mvccpb.KeyValue[] {
  const O = etcdserverpb.RangeRequest_SortOrder;
  const S = etcdserverpb.RangeRequest_SortTarget;
  // etcd: a target other than KEY with no order means ascending; KEY with no order is key order already.
  if (order === O.NONE && target === S.KEY) return kvs;
  const by = (a: mvccpb.KeyValue, b: mvccpb.KeyValue): number => {
    switch (target) {
      case S.VERSION:
        return cmpBig(a.version, b.version);
      case S.CREATE:
        return cmpBig(a.createRevision, b.createRevision);
      case S.MOD:
        return cmpBig(a.modRevision, b.modRevision);
      case S.VALUE:
        return Buffer.compare(a.value, b.value);
      default:
        return Buffer.compare(a.key, b.key);
    }
  };
  const sorted = [...kvs].sort(by);
  return order === O.DESCEND ? sorted.reverse() : sorted;
}
