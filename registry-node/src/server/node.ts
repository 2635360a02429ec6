// The registry member: the state machine (mvcc, lessor, watchable store) behind the
// request path, and the timers that drive it (backend commits, lease expiry, watcher
// catch-up, physical compaction).
//
// Writes go through `propose()`: today a one-member log applies them at once in order;
// the Raft-replicated log (registry-node/src/raft, src/wal) replaces that inside `propose`
// without changing callers. Reads are served from the local state (a linearizable read
// on one member is its current state; with Raft it waits for a ReadIndex first).

import { crc32c } from "@node-rs/crc32";
import { etcdserverpb } from "@regmesh/proto";
import { AuthStore } from "../auth/store.js";
import type { Config } from "../config/config.js";
import { Lessor } from "../lease/lessor.js";
import { BufferedBackend, buckets, type Storage } from "../mvcc/backend.js";
import { MvccError } from "../mvcc/errors.js";
import { KVStore } from "../mvcc/kvstore.js";
import { WatchableStore } from "../mvcc/watchable.js";
import { type ConfChange, ConfChangeType } from "../raft/types.js";
import { KVApplier } from "./apply-kv.js";
import { EtcdError, errors } from "./errors.js";
import { clusterId, IdGenerator, memberId, raftIdOf } from "./ids.js";
import { decodeOp, encodeOp, type Op } from "./ops.js";
import type { RaftDriver } from "./raft-driver.js";
import type { Transport } from "./transport.js";

export type Clock = { now(): number };

/** Who this member is, in which cluster, and the members it starts with. */
export type Identity = { memberId: bigint; clusterId: bigint; members: etcdserverpb.Member[] };

/** The identity of a member of a new cluster, from its flags (etcd's ids, see ids.ts). */
export function identityFromConfig(config: Config): Identity {
  const members: etcdserverpb.Member[] = [];
  for (const [name, urls] of config.initialCluster) {
    const peerURLs = urls.map((u) => u.origin);
    members.push({
      ID: memberId(peerURLs, config.initialClusterToken),
      name,
      peerURLs,
      clientURLs: [],
      isLearner: false,
    });
  }
  const own = config.initialCluster.get(config.name)!.map((u) => u.origin);
  return {
    memberId: memberId(own, config.initialClusterToken),
    clusterId: clusterId(members.map((m) => m.ID)),
    members,
  };
}

/** etcd 3.4's members bucket value: {"id", "peerURLs", "isLearner"?, "name"?, "clientURLs"?}, id as a JSON number. */
export function encodeMemberRecord(m: etcdserverpb.Member): Uint8Array {
  const parts = [`"id":${m.ID.toString()}`, `"peerURLs":${JSON.stringify(m.peerURLs)}`];
  if (m.isLearner) parts.push(`"isLearner":true`);
  if (m.name !== "") parts.push(`"name":${JSON.stringify(m.name)}`);
  if (m.clientURLs.length > 0) parts.push(`"clientURLs":${JSON.stringify(m.clientURLs)}`);
  return Buffer.from(`{${parts.join(",")}}`);
}

export function decodeMemberRecord(b: Uint8Array): etcdserverpb.Member {
  const text = Buffer.from(b).toString();
  const id = /"id":(\d+)/.exec(text);
  const o = JSON.parse(text) as {
    peerURLs?: string[];
    isLearner?: boolean;
    name?: string;
    clientURLs?: string[];
  };
  return {
    ID: BigInt(id?.[1] ?? "0"),
    peerURLs: o.peerURLs ?? [],
    isLearner: o.isLearner ?? false,
    name: o.name ?? "",
    clientURLs: o.clientURLs ?? [],
  };
}
export const systemClock: Clock = { now: () => Date.now() };

export type Logger = {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
};

/** Timings of the member's background work (etcd's values where etcd has them). */
export const serverTimings = {
  leaseCheckIntervalMs: 500,
  /** etcd revokes at most 1000 expired leases per second. */
  leaseRevokePerSecond: 1000,
  watchSyncIntervalMs: 100,
};

/** Limits of the request path (etcd's values). */
export const serverLimits = {
  /**
   * Proposals are refused with "etcdserver: too many requests" while the applied index
   * trails the committed index by more than this (etcd 3.4's
   * maxGapBetweenApplyAndCommitIndex, checked in processInternalRaftRequestOnce): a member
   * that cannot keep up with applying should not take on more work.
   */
  maxGapBetweenApplyAndCommitIndex: 5000,
};

type Task = { done: () => boolean; step: () => boolean };

/** Converts mvcc's errors to etcd's client errors. */
export function toClientError(err: unknown): unknown {
  if (err instanceof MvccError)
    return err.code === "REG_ERR_COMPACTED" ? errors.compacted() : errors.futureRev();
  return err;
}

export class EtcdServer {
  readonly memberId: bigint;
  readonly clusterId: bigint;
  backend!: BufferedBackend;
  lessor!: Lessor;
  kv!: KVStore;
  watchable!: WatchableStore;
  applier!: KVApplier;
  auth!: AuthStore;
  private readonly ids: IdGenerator;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly compactions: { task: Task; resolve: () => void }[] = [];
  private appliedIndex = 0;
  private restored = false;
  private stopped = false;
  /** The Raft term; a single member elects itself at term 2, as etcd's does on first start. */
  raftTerm = 2n;
  /** The Raft log behind `propose` (undefined: apply at once, for in-process tests). */
  driver: RaftDriver | undefined;
  /** The peer transport (lease renewals are forwarded to the leader over it). */
  transport: Transport | undefined;
  /** Proposals waiting for their entry to be applied, by request id. */
  private readonly waiting = new Map<
    bigint,
    { resolve: (v: unknown) => void; reject: (e: unknown) => void }
  >();
  /** The cluster's members: ids, names, peer and client URLs (MemberList). */
  readonly members = new Map<bigint, etcdserverpb.Member>();
  /** Member id of the current leader (0 when none is known). */
  leaderId = 0n;
  /** Active alarms, keyed "memberId:type" (persisted in the `alarm` bucket, as etcd's alarm store). */
  readonly alarms = new Map<string, etcdserverpb.AlarmMember>();

  constructor(
    readonly config: Config,
    readonly storage: Storage,
    readonly log: Logger,
    readonly clock: Clock = systemClock,
    identity: Identity = identityFromConfig(config),
  ) {
    this.memberId = identity.memberId;
    this.clusterId = identity.clusterId;
    this.ids = new IdGenerator(this.memberId, clock.now());
    this.buildStateMachine();
    for (const m of identity.members) this.members.set(m.ID, { ...m });
    if (identity.members.length === 1 && identity.members[0]!.ID === this.memberId)
      this.leaderId = this.memberId;
  }

  private saveMember(m: etcdserverpb.Member): void {
    this.backend.put(buckets.members, Buffer.from(m.ID.toString(16)), encodeMemberRecord(m));
  }

  /** Conf changes waiting to be applied, by "type:raftId". */
  private readonly confWaiters = new Map<string, () => void>();

  /** Proposes a membership change and waits until it is applied here. */
  async proposeConfChange(cc: ConfChange): Promise<void> {
    if (this.driver === undefined) throw errors.notCapable();
    const key = `${cc.type}:${cc.nodeId}`;
    const applied = new Promise<void>((resolve) => this.confWaiters.set(key, resolve));
    const deadlineMs = Date.now() + this.requestTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(errors.timeout()), this.requestTimeoutMs);
    });
    try {
      await Promise.race([this.driver.proposeConfChange(cc, deadlineMs), timeout]);
      await Promise.race([applied, timeout]);
    } finally {
      clearTimeout(timer);
      this.confWaiters.delete(key);
    }
  }

  /**
   * Applies a committed membership change: the member record (carried in the change's
   * context, as etcd's), the members buckets, and the transport's peers.
   */
  applyConfChange(cc: ConfChange, index: number): void {
    this.appliedIndex = index;
    this.kv.setConsistentIndex(index);
    const m = cc.context && cc.context.length > 0 ? decodeMemberRecord(cc.context) : undefined;
    if (cc.type === ConfChangeType.RemoveNode) {
      const id = [...this.members.keys()].find((k) => raftIdOf(k) === cc.nodeId);
      if (id !== undefined) {
        this.members.delete(id);
        this.backend.delete(buckets.members, Buffer.from(id.toString(16)));
        this.backend.put(buckets.membersRemoved, Buffer.from(id.toString(16)), Buffer.from("removed"));
        this.removedRaftIds.add(cc.nodeId);
        this.transport?.removePeer(cc.nodeId);
        if (id === this.memberId) {
          this.log.error({}, "the member has been permanently removed from the cluster; stopping");
          // A moment later, so an answer to the removal itself can still go out.
          setTimeout(() => this.onRemoved?.(), 500).unref();
        }
      }
    } else if (m !== undefined) {
      const existing = this.members.get(m.ID);
      const next: etcdserverpb.Member = existing
        ? { ...existing, isLearner: cc.type === ConfChangeType.AddLearnerNode }
        : { ...m, isLearner: cc.type === ConfChangeType.AddLearnerNode };
      this.members.set(m.ID, next);
      this.saveMember(next);
      if (m.ID !== this.memberId) this.transport?.addPeer(cc.nodeId, next.peerURLs);
    }
    this.confWaiters.get(`${cc.type}:${cc.nodeId}`)?.();
  }

  /** Raft ids of members removed from the cluster (the members_removed bucket), for the transport. */
  private readonly removedRaftIds = new Set<number>();

  isRemovedRaftId(raftId: number): boolean {
    return this.removedRaftIds.has(raftId);
  }

  /** Called when this member is removed from the cluster. */
  onRemoved: (() => void) | undefined;

  /** The state machine's objects over the current storage (again after installing a snapshot). */
  private buildStateMachine(): void {
    this.backend = new BufferedBackend(this.storage, this.config.backendBatchLimit);
    // etcd: minimum lease TTL is 1.5 election timeouts, rounded up to whole seconds.
    const minTTLSeconds = Math.ceil((1.5 * this.config.electionTimeoutMs) / 1000);
    this.lessor = new Lessor(this.backend, minTTLSeconds);
    this.kv = new KVStore(this.backend, this.lessor);
    // Watch streams hold their watchers in the watchable store: on a rebuild it is kept and
    // moved over to the new store, so they go on from where they were.
    if (this.watchable === undefined) this.watchable = new WatchableStore(this.kv);
    else this.watchable.restore(this.kv);
    this.applier = new KVApplier(this.kv, this.lessor);
    this.auth = new AuthStore(this.backend);
  }

  /**
   * Installs a Raft snapshot from the leader: its data is the leader's whole backend file
   * (etcd's design), in memory or received into a file, which replaces ours; the state
   * machine is rebuilt from it, and watchers move over to it. Returns the backend's
   * consistent index: entries up to it are already in.
   */
  async installSnapshot(source: Uint8Array | { path: string }): Promise<number> {
    const st = this.storage;
    const replace =
      source instanceof Uint8Array
        ? st.replaceWith && (() => st.replaceWith!(source))
        : st.replaceWithFile && (() => st.replaceWithFile!(source.path));
    if (replace === undefined) throw new Error("server: this storage cannot install a snapshot");
    await this.backend.commit();
    await this.backend.exclusive(replace);
    this.buildStateMachine();
    this.restored = false;
    this.restore();
    // Catch the watchers up from the new store now rather than at the next timer round.
    this.syncWatchers();
    this.log.info(
      { revision: this.kv.rev, consistentIndex: this.kv.consistentIndex },
      "installed a snapshot from the leader",
    );
    return this.kv.consistentIndex;
  }

  /** etcd's request timeout: 5 s plus two election timeouts. */
  get requestTimeoutMs(): number {
    return 5000 + 2 * this.config.electionTimeoutMs;
  }

  /** Restores state from storage and starts the background work. */
  start(): void {
    if (!this.restored) this.restore();
    if (this.driver === undefined) {
      // One member without a log: it is the leader and owns lease expiry.
      this.lessor.promote(this.config.electionTimeoutMs, this.clock.now());
    }
    this.startTimers();
  }

  /** Reads the state machine back from storage (before the log replays anything after it). */
  restore(): void {
    if (this.restored) throw new Error("server: state restored twice");
    this.restored = true;
    this.lessor.restore();
    this.auth.restore();
    // Membership: the members bucket once written; at first start, the starting members.
    this.backend.createBucket(buckets.members);
    this.backend.createBucket(buckets.membersRemoved);
    const stored: etcdserverpb.Member[] = [];
    this.backend.scan(buckets.members, new Uint8Array(0), undefined, (_k, v) => {
      stored.push(decodeMemberRecord(v));
      return true;
    });
    this.backend.scan(buckets.membersRemoved, new Uint8Array(0), undefined, (k) => {
      this.removedRaftIds.add(raftIdOf(BigInt(`0x${Buffer.from(k).toString()}`)));
      return true;
    });
    if (stored.length > 0) {
      this.members.clear();
      for (const m of stored) this.members.set(m.ID, m);
    } else {
      for (const m of this.members.values()) this.saveMember(m);
    }
    this.backend.createBucket(buckets.alarm);
    this.backend.scan(buckets.alarm, new Uint8Array(0), undefined, (k) => {
      const a = etcdserverpb.AlarmMember.decode(k);
      this.alarms.set(`${a.memberID}:${a.alarm}`, a);
      return true;
    });
    const { scheduledCompact } = this.kv.restore();
    this.appliedIndex = this.kv.consistentIndex;
    if (scheduledCompact !== undefined) this.runCompaction(this.kv.resumeCompaction(scheduledCompact));
  }

  private startTimers(): void {
    const every = (ms: number, f: () => void) => {
      const t = setInterval(() => {
        try {
          f();
        } catch (err) {
          this.log.error({ err }, "background task failed");
        }
      }, ms);
      t.unref();
      this.timers.push(t);
    };
    every(this.config.backendBatchIntervalMs, () => {
      this.commitBackend();
    });
    every(serverTimings.leaseCheckIntervalMs, () => this.revokeExpiredLeases());
    every(serverTimings.watchSyncIntervalMs, () => this.syncWatchers());
    this.log.info(
      { memberId: this.memberId.toString(16), clusterId: this.clusterId.toString(16), revision: this.kv.rev },
      "registry member started",
    );
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    while (this.compactions.length > 0) this.stepCompactions();
    await this.backend.commit();
    await this.storage.close();
  }

  /**
   * A keep-alive: renewed here on the leader (no Raft round trip, as etcd's lessor), or
   * forwarded to the leader over the peer transport until it answers or the request times out.
   */
  async leaseRenew(id: bigint): Promise<number> {
    if (this.lessor.primary || this.transport === undefined) return this.lessor.renew(id, this.clock.now());
    const body = Buffer.alloc(8);
    body.writeBigInt64BE(id);
    const deadlineMs = Date.now() + this.requestTimeoutMs;
    while (Date.now() < deadlineMs && !this.stopped) {
      if (this.lessor.primary) return this.lessor.renew(id, this.clock.now());
      if (this.leaderId !== 0n) {
        try {
          const out = await this.transport.call(raftIdOf(this.leaderId), "/lease/renew", body, 2000);
          const ttl = out.readBigInt64BE(0);
          if (ttl < 0n) throw errors.leaseNotFound();
          return Number(ttl);
        } catch (err) {
          if (err instanceof EtcdError) throw err;
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw errors.timeout();
  }

  /** The leader's side of a forwarded renewal: the TTL, or -1 for an unknown lease. */
  async serveLeaseRenew(body: Buffer): Promise<Buffer> {
    if (!this.lessor.primary) throw new Error("not leader");
    const out = Buffer.alloc(8);
    try {
      out.writeBigInt64BE(BigInt(this.lessor.renew(body.readBigInt64BE(0), this.clock.now())));
    } catch (err) {
      if (!(err instanceof EtcdError) || err.message !== errors.leaseNotFound().message) throw err;
      out.writeBigInt64BE(-1n);
    }
    return out;
  }

  /**
   * Maintenance.Hash (etcd's backend.Hash): CRC-32C over every bucket's name, keys and
   * values in bucket-name order, skipping meta/consistent_index (which differs between
   * members). Equal on members that applied the same entries.
   */
  async hash(): Promise<{ hash: number; revision: number }> {
    await this.backend.commit();
    const revision = this.kv.rev;
    let h = 0;
    const names = Object.values(buckets).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    for (const name of names) {
      h = crc32c(Buffer.from(name), h);
      this.backend.scan(name, new Uint8Array(0), undefined, (k, v) => {
        if (!(name === buckets.meta && Buffer.from(k).toString() === "consistent_index")) {
          h = crc32c(Buffer.from(k), h);
          h = crc32c(Buffer.from(v), h);
        }
        return true;
      });
    }
    return { hash: h >>> 0, revision };
  }

  /** Maintenance.Defragment: commits what is buffered, then rewrites the data file without free pages. */
  async defragment(): Promise<void> {
    const storage = this.storage;
    if (storage.defragment === undefined) return;
    await this.backend.commit();
    const t0 = Date.now();
    const before = storage.sizeBytes();
    await this.backend.exclusive(() => storage.defragment!());
    this.log.info(
      { beforeBytes: before, afterBytes: storage.sizeBytes(), tookMs: Date.now() - t0 },
      "defragmented",
    );
  }

  dbSize(): number {
    return this.storage.sizeBytes();
  }

  get rev(): number {
    return this.kv.rev;
  }

  /** A response header as etcd fills it (revision 0 means "the current one"). */
  header(revision = 0n): etcdserverpb.ResponseHeader {
    return {
      clusterId: this.clusterId,
      memberId: this.memberId,
      revision: revision === 0n ? BigInt(this.kv.rev) : revision,
      raftTerm: this.raftTerm,
    };
  }

  nextId(): bigint {
    return this.ids.next();
  }

  /** Orders a write through the log and applies it; resolves with its response. */
  async propose(op: Op): Promise<unknown> {
    if (this.stopped) throw errors.stopped();
    const d = this.driver;
    if (d !== undefined && d.committed > d.applied + serverLimits.maxGapBetweenApplyAndCommitIndex)
      throw errors.tooManyRequests();
    let result: unknown;
    if (this.driver === undefined) {
      result = this.apply(op, this.appliedIndex + 1);
    } else {
      const id = this.nextId();
      const deadlineMs = Date.now() + this.requestTimeoutMs;
      const applied = new Promise<unknown>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(errors.timeout()), this.requestTimeoutMs);
      });
      try {
        await Promise.race([this.driver.propose(encodeOp(id, op), deadlineMs), timeout]);
        result = await Promise.race([applied, timeout]);
      } finally {
        clearTimeout(timer);
        this.waiting.delete(id);
      }
    }
    if (op.kind === "compaction" && op.req.physical) await (result as { physical: Promise<void> }).physical;
    return result;
  }

  /** Applies a committed log entry (from the Raft driver) and answers its proposer, if it waits here. */
  applyEntry(index: number, data: Uint8Array): void {
    const { id, op } = decodeOp(data);
    const w = this.waiting.get(id);
    try {
      const result = this.apply(op, index);
      w?.resolve(result);
    } catch (err) {
      w?.reject(err);
    }
  }

  /** Waits until a linearizable read may be served from the local state (ReadIndex). */
  async linearizableRead(): Promise<void> {
    if (this.driver === undefined) return;
    await this.driver.readIndex(Date.now() + this.requestTimeoutMs);
  }

  /** Called by the Raft driver when leadership changes. */
  onLeaderChange(leaderId: bigint, isLeader: boolean, term: number): void {
    this.leaderId = leaderId;
    this.raftTerm = BigInt(term);
    if (isLeader) this.lessor.promote(this.config.electionTimeoutMs, this.clock.now());
    else this.lessor.demote();
    this.log.info({ leader: leaderId.toString(16), term, isLeader }, "leader changed");
  }

  /** Applies one committed entry to the state machine, in log order. */
  private apply(op: Op, index: number): unknown {
    this.appliedIndex = index;
    this.kv.setConsistentIndex(index);
    try {
      switch (op.kind) {
        case "put":
          return this.applier.put(op.req);
        case "deleteRange":
          return this.applier.deleteRange(op.req);
        case "txn":
          return this.applier.txn(op.req);
        case "compaction": {
          const { resp, task } = this.applier.compaction(op.req);
          return { resp, physical: this.runCompaction(task) };
        }
        case "leaseGrant": {
          const l = this.lessor.grant(op.req.ID, Number(op.req.TTL), this.clock.now());
          return { ID: l.id, TTL: BigInt(l.ttlSeconds) };
        }
        case "leaseRevoke":
          this.lessor.revoke(op.req.ID, this.kv);
          return {};
        case "alarm":
          return this.applyAlarm(op.req);
        case "publish": {
          const m = this.members.get(op.req.ID);
          if (m) {
            const next = { ...m, name: op.req.name, clientURLs: op.req.clientURLs };
            this.members.set(op.req.ID, next);
            this.saveMember(next);
          }
          return {};
        }
        case "memberUpdate": {
          const m = this.members.get(op.req.ID);
          if (m === undefined) throw errors.memberNotFound();
          const next = { ...m, peerURLs: op.req.peerURLs };
          this.members.set(op.req.ID, next);
          this.saveMember(next);
          if (op.req.ID !== this.memberId) this.transport?.addPeer(raftIdOf(op.req.ID), next.peerURLs);
          return {};
        }
        default:
          return this.applyAuth(op);
      }
    } catch (err) {
      throw toClientError(err);
    } finally {
      if (this.backend.pendingCount >= this.backend.batchLimit) this.commitBackend();
    }
  }

  /** Applies a user, role or auth change (see auth/store.ts); answers an empty response. */
  private applyAuth(op: Op): object {
    const a = this.auth;
    const empty = Buffer.alloc(0);
    switch (op.kind) {
      case "authEnable":
        a.enable();
        break;
      case "authDisable":
        a.disable();
        break;
      case "authenticate":
        a.assignToken(op.req.name, op.req.password, this.clock.now());
        return { token: op.req.password };
      case "userAdd":
        a.userAdd(op.req.name, Buffer.from(op.req.password), op.req.options?.noPassword ?? false);
        break;
      case "userDelete":
        a.userDelete(op.req.name);
        break;
      case "userChangePassword":
        a.userChangePassword(op.req.name, Buffer.from(op.req.password));
        break;
      case "userGrantRole":
        a.userGrantRole(op.req.user, op.req.role);
        break;
      case "userRevokeRole":
        a.userRevokeRole(op.req.name, op.req.role);
        break;
      case "roleAdd":
        a.roleAdd(op.req.name);
        break;
      case "roleDelete":
        a.roleDelete(op.req.role);
        break;
      case "roleGrantPermission":
        a.roleGrantPermission(op.req.name, op.req.perm ?? { permType: 0, key: empty, rangeEnd: empty });
        break;
      case "roleRevokePermission":
        a.roleRevokePermission(op.req.role, op.req.key, op.req.rangeEnd);
        break;
      default:
        throw new Error(`server: no applier for ${op.kind}`);
    }
    return {};
  }

  /** etcd's applierV3backend.Alarm: GET lists, ACTIVATE and DEACTIVATE change the set. */
  private applyAlarm(r: etcdserverpb.AlarmRequest): etcdserverpb.AlarmResponse {
    const A = etcdserverpb.AlarmRequest_AlarmAction;
    const list = () => [...this.alarms.values()];
    if (r.action === A.GET) return { alarms: list() };
    const member: etcdserverpb.AlarmMember = { memberID: r.memberID, alarm: r.alarm };
    const key = `${r.memberID}:${r.alarm}`;
    const bytes = etcdserverpb.AlarmMember.encode(member).finish();
    if (r.action === A.ACTIVATE) {
      if (r.alarm === etcdserverpb.AlarmType.NONE) return { alarms: [] };
      if (!this.alarms.has(key)) {
        this.alarms.set(key, member);
        this.backend.put(buckets.alarm, bytes, new Uint8Array(0));
        this.log.warn(
          { alarm: etcdserverpb.alarmTypeToJSON(r.alarm), member: r.memberID.toString(16) },
          "alarm raised",
        );
      }
      return { alarms: [member] };
    }
    if (r.action === A.DEACTIVATE) {
      if (!this.alarms.delete(key)) return { alarms: [] };
      this.backend.delete(buckets.alarm, bytes);
      return { alarms: [member] };
    }
    return { alarms: [] };
  }

  /** True while a NOSPACE alarm is active: writes that add data are refused. */
  get noSpace(): boolean {
    for (const a of this.alarms.values()) if (a.alarm === etcdserverpb.AlarmType.NOSPACE) return true;
    return false;
  }

  private commitBackend(): void {
    this.backend.commit().catch((err) => {
      // The applied entries are acknowledged: a failed commit cannot be undone (etcd panics).
      this.log.error({ err }, "backend commit failed; stopping");
      process.exit(1);
    });
  }

  private runCompaction(task: Task): Promise<void> {
    return new Promise((resolve) => {
      this.compactions.push({ task, resolve });
      if (this.compactions.length === 1) setImmediate(() => this.stepCompactions());
    });
  }

  /** One batch of physical compaction; reschedules itself so writes interleave. */
  private stepCompactions(): void {
    const head = this.compactions[0];
    if (head === undefined) return;
    if (head.task.step()) {
      this.compactions.shift();
      head.resolve();
      this.commitBackend();
    }
    if (this.compactions.length > 0 && !this.stopped) setImmediate(() => this.stepCompactions());
  }

  private revokeExpiredLeases(): void {
    const limit = Math.ceil((serverTimings.leaseRevokePerSecond * serverTimings.leaseCheckIntervalMs) / 1000);
    for (const id of this.lessor.expired(this.clock.now(), limit)) {
      this.propose({ kind: "leaseRevoke", req: { ID: id } }).catch((err) => {
        if (!(err instanceof EtcdError))
          this.log.warn({ err, lease: id.toString(16) }, "revoking expired lease failed");
      });
    }
  }

  /** Catches unsynced watchers up, a bounded round at a time, until none is left. */
  syncWatchers(): void {
    if (this.watchable.syncWatchers()) setImmediate(() => this.syncWatchers());
  }
}
