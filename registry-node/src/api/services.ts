// The etcd v3 gRPC services over the member: KV, Watch, Lease, Maintenance, Cluster and the
// gRPC health protocol. Each handler checks its request as etcd's v3rpc layer does, hands
// writes to the log (`propose`), serves reads locally, and fills response headers.

import { etcdserverpb, health } from "@regmesh/proto";
import type { AuthInfo } from "../auth/store.js";
import { ConfChangeType } from "../raft/types.js";
import { Code, EtcdError, errors } from "../server/errors.js";
import { memberId, raftIdOf } from "../server/ids.js";
import { type EtcdServer, encodeMemberRecord, toClientError } from "../server/node.js";
import { encodeOp, type Op } from "../server/ops.js";
import { etcdServerVersion } from "../version.js";
import type { BidiStream, CallContext, GrpcRouter } from "./grpc.js";
import { serveSnapshot } from "./snapshot.js";
import { checkDeleteRequest, checkPutRequest, checkRangeRequest, checkTxnRequest } from "./validate.js";
import { serveWatch } from "./watch.js";

export type ServiceOptions = {
  /** Where temporary files (snapshot copies) go: the member's snap directory. */
  workDir: string;
  maxTxnOps: number;
  /** The backend quota (--quota-backend-bytes); writes past it raise the NOSPACE alarm. */
  quotaBackendBytes: number;
  maxRequestBytes: number;
  progressIntervalMs: number;
  /** Peer URLs and client URLs this member advertises (MemberList). */
  name: string;
  peerUrls: string[];
  clientUrls: string[];
};

const { KVService, WatchService, LeaseService, MaintenanceService, ClusterService } = etcdserverpb;
const A = etcdserverpb.AlarmRequest_AlarmAction;

// etcd's request cost estimates for the quota (etcdserver/quota.go).
const kvOverheadBytes = 256;
const leaseOverheadBytes = 64;
const costPut = (r: etcdserverpb.PutRequest) => kvOverheadBytes + r.key.length + r.value.length;
function costTxn(r: etcdserverpb.TxnRequest): number {
  const branch = (ops: etcdserverpb.RequestOp[]) =>
    ops.reduce((n, op) => n + (op.requestPut ? costPut(op.requestPut) : 0), 0);
  return Math.max(branch(r.success), branch(r.failure));
}

export class Services {
  constructor(
    readonly server: EtcdServer,
    readonly opts: ServiceOptions,
  ) {}

  /** Top-level headers carry the member's ids and term; revision 0 becomes the current one. */
  fill<T extends { header?: etcdserverpb.ResponseHeader | undefined }>(resp: T): T {
    resp.header = this.server.header(resp.header?.revision ?? 0n);
    return resp;
  }

  private async propose<T>(op: Op): Promise<T> {
    // etcd refuses a request whose encoded form exceeds --max-request-bytes.
    if (encodeOp(0n, op).length - 9 > this.opts.maxRequestBytes) throw errors.requestTooLarge();
    try {
      return (await this.server.propose(op)) as T;
    } catch (err) {
      throw toClientError(err);
    }
  }

  /**
   * etcd's quota check (etcdserver/quota.go) before a write that adds data: with a NOSPACE
   * alarm active it is refused; when the backend plus the request's estimated cost would
   * reach the quota, the NOSPACE alarm is raised and it is refused.
   */
  private async checkQuota(cost: number): Promise<void> {
    if (cost === 0) return;
    if (this.server.noSpace) throw errors.noSpace();
    if (this.server.dbSize() + cost < this.opts.quotaBackendBytes) return;
    await this.server.propose({
      kind: "alarm",
      req: { action: A.ACTIVATE, memberID: this.server.memberId, alarm: etcdserverpb.AlarmType.NOSPACE },
    });
    throw errors.noSpace();
  }

  /** Who a call runs as, from its `token` (gRPC) or `authorization` (gateway) header. */
  authInfo(headers: Record<string, string | string[] | undefined>): AuthInfo | undefined {
    const raw = headers.token ?? headers.authorization;
    const token = Array.isArray(raw) ? raw[0] : raw;
    if (token === undefined || token === "") return undefined;
    return this.server.auth.authInfoFromToken(token, this.server.clock.now());
  }

  /** Permission checks of a transaction: compares read, and each operation as itself (etcd's checkTxnReqsPermission). */
  private checkTxnAuth(ai: AuthInfo | undefined, r: etcdserverpb.TxnRequest): void {
    const auth = this.server.auth;
    if (!auth.isEnabled) return;
    for (const c of r.compare) auth.checkRange(ai, c.key, c.rangeEnd);
    for (const op of [...r.success, ...r.failure]) {
      if (op.requestRange) auth.checkRange(ai, op.requestRange.key, op.requestRange.rangeEnd);
      else if (op.requestPut) this.checkPutAuth(ai, op.requestPut);
      else if (op.requestDeleteRange) this.checkDeleteAuth(ai, op.requestDeleteRange);
      else if (op.requestTxn) this.checkTxnAuth(ai, op.requestTxn);
    }
  }

  private checkPutAuth(ai: AuthInfo | undefined, r: etcdserverpb.PutRequest): void {
    this.server.auth.checkPut(ai, r.key);
    if (r.prevKv) this.server.auth.checkRange(ai, r.key, Buffer.alloc(0));
  }

  private checkDeleteAuth(ai: AuthInfo | undefined, r: etcdserverpb.DeleteRangeRequest): void {
    this.server.auth.checkDeleteRange(ai, r.key, r.rangeEnd);
    if (r.prevKv) this.server.auth.checkRange(ai, r.key, r.rangeEnd);
  }

  /** Linearizable unless `serializable`: a ReadIndex round first (Raft thesis §6.4). */
  async range(r: etcdserverpb.RangeRequest, ai?: AuthInfo): Promise<etcdserverpb.RangeResponse> {
    checkRangeRequest(r);
    this.server.auth.checkRange(ai, r.key, r.rangeEnd);
    if (!r.serializable) {
      this.checkNotLearner();
      await this.server.linearizableRead();
    }
    try {
      return this.fill(this.server.applier.range(r));
    } catch (err) {
      throw toClientError(err);
    }
  }

  /** A learner serves only Status and serializable reads (etcd's learner restrictions). */
  checkNotLearner(): void {
    if (this.server.members.get(this.server.memberId)?.isLearner) throw errors.notSupportedForLearner();
  }

  /** `hasleader` metadata: the client wants an error, not a wait, when there is no leader. */
  checkLeader(headers: Record<string, string | string[] | undefined>): void {
    if (headers.hasleader === "true" && this.server.leaderId === 0n) throw errors.noLeader();
  }

  async put(r: etcdserverpb.PutRequest, ai?: AuthInfo): Promise<etcdserverpb.PutResponse> {
    this.checkNotLearner();
    checkPutRequest(r);
    this.checkPutAuth(ai, r);
    await this.checkQuota(costPut(r));
    return this.fill(await this.propose<etcdserverpb.PutResponse>({ kind: "put", req: r }));
  }

  async deleteRange(
    r: etcdserverpb.DeleteRangeRequest,
    ai?: AuthInfo,
  ): Promise<etcdserverpb.DeleteRangeResponse> {
    this.checkNotLearner();
    checkDeleteRequest(r);
    this.checkDeleteAuth(ai, r);
    return this.fill(await this.propose<etcdserverpb.DeleteRangeResponse>({ kind: "deleteRange", req: r }));
  }

  async txn(r: etcdserverpb.TxnRequest, ai?: AuthInfo): Promise<etcdserverpb.TxnResponse> {
    this.checkNotLearner();
    checkTxnRequest(r, this.opts.maxTxnOps);
    this.checkTxnAuth(ai, r);
    await this.checkQuota(costTxn(r));
    return this.fill(await this.propose<etcdserverpb.TxnResponse>({ kind: "txn", req: r }));
  }

  async compact(r: etcdserverpb.CompactionRequest): Promise<etcdserverpb.CompactionResponse> {
    this.checkNotLearner();
    const out = await this.propose<{ resp: etcdserverpb.CompactionResponse }>({ kind: "compaction", req: r });
    return this.fill(out.resp);
  }

  async leaseGrant(r: etcdserverpb.LeaseGrantRequest): Promise<etcdserverpb.LeaseGrantResponse> {
    this.checkNotLearner();
    await this.checkQuota(leaseOverheadBytes);
    let id = r.ID;
    // No id given: the server chooses one, positive and not in use (etcd's reqIDGen).
    while (id === 0n || this.server.lessor.exists(id)) id = this.server.nextId() & ((1n << 63n) - 1n);
    const out = await this.propose<{ ID: bigint; TTL: bigint }>({
      kind: "leaseGrant",
      req: { ID: id, TTL: r.TTL },
    });
    return this.fill<etcdserverpb.LeaseGrantResponse>({ ID: out.ID, TTL: out.TTL, error: "" });
  }

  async leaseRevoke(
    r: etcdserverpb.LeaseRevokeRequest,
    ai?: AuthInfo,
  ): Promise<etcdserverpb.LeaseRevokeResponse> {
    // Revoking deletes the lease's keys: the caller needs write permission on each (etcd's checkLeasePuts).
    const l = this.server.lessor.lookup(r.ID);
    if (l && this.server.auth.isEnabled)
      for (const k of l.keys) this.server.auth.checkPut(ai, Buffer.from(k, "latin1"));
    await this.propose({ kind: "leaseRevoke", req: r });
    return this.fill({});
  }

  /**
   * The remaining TTL is known only on the leader (others keep no deadlines), so a member
   * that is not the leader asks it, as etcd does.
   */
  async leaseTimeToLive(
    r: etcdserverpb.LeaseTimeToLiveRequest,
  ): Promise<etcdserverpb.LeaseTimeToLiveResponse> {
    const s = this.server;
    if (s.lessor.primary || s.transport === undefined || s.leaderId === 0n)
      return this.leaseTimeToLiveLocal(r);
    try {
      const out = await s.transport.call(
        raftIdOf(s.leaderId),
        "/lease/ttl",
        Buffer.from(etcdserverpb.LeaseTimeToLiveRequest.encode(r).finish()),
        2000,
      );
      return this.fill(etcdserverpb.LeaseTimeToLiveResponse.decode(out));
    } catch {
      return this.leaseTimeToLiveLocal(r);
    }
  }

  leaseTimeToLiveLocal(r: etcdserverpb.LeaseTimeToLiveRequest): etcdserverpb.LeaseTimeToLiveResponse {
    const l = this.server.lessor.lookup(r.ID);
    if (l === undefined)
      return this.fill<etcdserverpb.LeaseTimeToLiveResponse>({
        ID: r.ID,
        TTL: -1n,
        grantedTTL: 0n,
        keys: [],
      });
    return this.fill<etcdserverpb.LeaseTimeToLiveResponse>({
      ID: l.id,
      TTL: BigInt(l.remainingSeconds(this.server.clock.now())),
      grantedTTL: BigInt(l.ttlSeconds),
      keys: r.keys ? [...l.keys].sort().map((k) => Buffer.from(k, "latin1")) : [],
    });
  }

  leaseLeases(): etcdserverpb.LeaseLeasesResponse {
    return this.fill<etcdserverpb.LeaseLeasesResponse>({
      leases: this.server.lessor.ids().map((ID) => ({ ID })),
    });
  }

  /** One keep-alive: renewed by the leader (forwarded when this member is not); an unknown lease answers TTL 0, as etcd. */
  async keepAlive(r: etcdserverpb.LeaseKeepAliveRequest): Promise<etcdserverpb.LeaseKeepAliveResponse> {
    const resp = this.fill<etcdserverpb.LeaseKeepAliveResponse>({ ID: r.ID, TTL: 0n });
    try {
      resp.TTL = BigInt(await this.server.leaseRenew(r.ID));
    } catch (err) {
      if ((err as Error).message !== errors.leaseNotFound().message) throw err;
    }
    return resp;
  }

  /**
   * A keep-alive stream (gRPC or gateway): one answer per request, in request order even
   * though renewals may be forwarded to the leader; the stream ends when the client's does.
   */
  serveKeepAlive(
    stream: BidiStream<etcdserverpb.LeaseKeepAliveRequest, etcdserverpb.LeaseKeepAliveResponse>,
  ): void {
    let chain: Promise<void> = Promise.resolve();
    stream.onMessage((r) => {
      chain = chain.then(async () => {
        try {
          stream.write(await this.keepAlive(r));
        } catch (err) {
          stream.end(toClientError(err) as never);
        }
      });
    });
    stream.onHalfClose(() => {
      chain = chain.then(() => stream.end());
    });
  }

  status(): etcdserverpb.StatusResponse {
    const s = this.server;
    return this.fill<etcdserverpb.StatusResponse>({
      version: etcdServerVersion,
      dbSize: BigInt(s.dbSize()),
      leader: s.leaderId,
      raftIndex: BigInt(s.driver?.lastIndex ?? s.kv.consistentIndex),
      raftTerm: s.raftTerm,
      raftAppliedIndex: BigInt(s.driver?.applied ?? s.kv.consistentIndex),
      errors: [],
      dbSizeInUse: BigInt(s.dbSize()),
      isLearner: false,
    });
  }

  hashKV(r: etcdserverpb.HashKVRequest): etcdserverpb.HashKVResponse {
    try {
      const h = this.server.kv.hashByRev(Number(r.revision));
      return this.fill<etcdserverpb.HashKVResponse>({
        header: { clusterId: 0n, memberId: 0n, raftTerm: 0n, revision: BigInt(h.currentRev) },
        hash: h.hash,
        compactRevision: BigInt(h.compactRev),
      });
    } catch (err) {
      throw toClientError(err);
    }
  }

  async alarm(r: etcdserverpb.AlarmRequest): Promise<etcdserverpb.AlarmResponse> {
    if (r.action === A.GET)
      return this.fill<etcdserverpb.AlarmResponse>({ alarms: [...this.server.alarms.values()] });
    return this.fill(await this.propose<etcdserverpb.AlarmResponse>({ kind: "alarm", req: r }));
  }

  memberList(): etcdserverpb.MemberListResponse {
    const members = [...this.server.members.values()].map((m) => ({
      ...m,
      // A member that has not published yet shows no name, as in etcd's "unstarted" state.
      clientURLs: m.clientURLs,
    }));
    return this.fill<etcdserverpb.MemberListResponse>({ members });
  }

  private validPeerUrls(urls: string[]): string[] {
    if (urls.length === 0) throw errors.memberBadURLs();
    return urls.map((u) => {
      try {
        const url = new URL(u);
        if (
          (url.protocol !== "http:" && url.protocol !== "https:") ||
          (url.pathname !== "/" && url.pathname !== "")
        ) {
          throw errors.memberBadURLs();
        }
        return url.origin;
      } catch {
        throw errors.memberBadURLs();
      }
    });
  }

  /** MemberAdd: a voter or a learner, known to the cluster before its process starts (etcd's flow). */
  async memberAdd(r: etcdserverpb.MemberAddRequest, ai?: AuthInfo): Promise<etcdserverpb.MemberAddResponse> {
    this.server.auth.checkAdmin(ai);
    const peerURLs = this.validPeerUrls(r.peerURLs);
    for (const m of this.server.members.values()) {
      if (m.peerURLs.some((u) => peerURLs.includes(u))) throw errors.peerURLExist();
    }
    if (r.isLearner && [...this.server.members.values()].some((m) => m.isLearner))
      throw errors.tooManyLearners();
    // As etcd, the new id mixes in the time, so a re-added member gets a new identity.
    const ID = memberId(peerURLs, this.server.config.initialClusterToken, Math.floor(Date.now() / 1000));
    const member: etcdserverpb.Member = { ID, name: "", peerURLs, clientURLs: [], isLearner: r.isLearner };
    await this.server.proposeConfChange({
      type: r.isLearner ? ConfChangeType.AddLearnerNode : ConfChangeType.AddNode,
      nodeId: raftIdOf(ID),
      context: encodeMemberRecord(member),
    });
    return this.fill<etcdserverpb.MemberAddResponse>({ member, members: [...this.server.members.values()] });
  }

  async memberRemove(
    r: etcdserverpb.MemberRemoveRequest,
    ai?: AuthInfo,
  ): Promise<etcdserverpb.MemberRemoveResponse> {
    this.server.auth.checkAdmin(ai);
    if (!this.server.members.has(r.ID)) throw errors.memberNotFound();
    await this.server.proposeConfChange({ type: ConfChangeType.RemoveNode, nodeId: raftIdOf(r.ID) });
    return this.fill<etcdserverpb.MemberRemoveResponse>({ members: [...this.server.members.values()] });
  }

  /**
   * MemberPromote: only a learner, and only once it has caught up (its match index at least
   * 90% of the leader's, etcd's isLearnerReady). The check needs the leader's view.
   */
  async memberPromote(
    r: etcdserverpb.MemberPromoteRequest,
    ai?: AuthInfo,
  ): Promise<etcdserverpb.MemberPromoteResponse> {
    this.server.auth.checkAdmin(ai);
    const m = this.server.members.get(r.ID);
    if (m === undefined) throw errors.memberNotFound();
    if (!m.isLearner) throw errors.memberNotLearner();
    const raft = this.server.driver?.node.raft;
    if (raft === undefined) throw errors.notCapable();
    if (!this.server.driver!.isLeader) {
      // Only the leader knows how far the learner got: ask it, as etcd forwards promotions.
      const s = this.server;
      if (s.leaderId === 0n || s.transport === undefined) throw errors.noLeader();
      const body = Buffer.alloc(8);
      body.writeBigUInt64BE(r.ID);
      let out: Buffer;
      try {
        out = await s.transport.call(raftIdOf(s.leaderId), "/member/promote", body, s.requestTimeoutMs);
      } catch (err) {
        const msg = (err as Error).message;
        for (const e of [
          errors.learnerNotReady(),
          errors.memberNotLearner(),
          errors.memberNotFound(),
          errors.notLeader(),
        ]) {
          if (msg === e.message) throw e;
        }
        throw errors.timeout();
      }
      return this.fill(etcdserverpb.MemberPromoteResponse.decode(out));
    }
    const learner = raft.trk.progress.get(raftIdOf(r.ID));
    const leader = raft.trk.progress.get(raft.id);
    if (learner === undefined || leader === undefined || learner.match < leader.match * 0.9)
      throw errors.learnerNotReady();
    await this.server.proposeConfChange({
      type: ConfChangeType.AddNode,
      nodeId: raftIdOf(r.ID),
      context: encodeMemberRecord({ ...m, isLearner: false }),
    });
    return this.fill<etcdserverpb.MemberPromoteResponse>({ members: [...this.server.members.values()] });
  }

  async memberUpdate(
    r: etcdserverpb.MemberUpdateRequest,
    ai?: AuthInfo,
  ): Promise<etcdserverpb.MemberUpdateResponse> {
    this.server.auth.checkAdmin(ai);
    const m = this.server.members.get(r.ID);
    if (m === undefined) throw errors.memberNotFound();
    const peerURLs = this.validPeerUrls(r.peerURLs);
    await this.server.propose({ kind: "memberUpdate", req: { ...m, peerURLs } });
    return this.fill<etcdserverpb.MemberUpdateResponse>({ members: [...this.server.members.values()] });
  }

  /**
   * MoveLeader (etcd's maintenance MoveLeader): only the leader may move leadership, to a
   * voting member; the answer comes once the transferee leads, or after the request timeout.
   */
  async moveLeader(
    r: etcdserverpb.MoveLeaderRequest,
    ai?: AuthInfo,
  ): Promise<etcdserverpb.MoveLeaderResponse> {
    this.server.auth.checkAdmin(ai);
    const s = this.server;
    if (s.driver === undefined || !s.driver.isLeader) throw errors.notLeader();
    const target = s.members.get(r.targetID);
    if (target === undefined || target.isLearner) throw errors.badLeaderTransferee();
    if (r.targetID === s.memberId) return this.fill({});
    s.driver.transferLeadership(raftIdOf(r.targetID));
    const deadlineMs = Date.now() + s.requestTimeoutMs;
    while (s.leaderId !== r.targetID) {
      if (Date.now() > deadlineMs) throw errors.timeoutLeaderTransfer();
      await new Promise((res) => setTimeout(res, s.config.heartbeatIntervalMs));
    }
    return this.fill({});
  }

  /** Registers every service on the router. */
  register(router: GrpcRouter): void {
    const ai = (ctx: CallContext) => {
      this.checkLeader(ctx.headers);
      return this.authInfo(ctx.headers);
    };
    router.unary(KVService.range, (r, ctx) => this.range(r, ai(ctx)));
    router.unary(KVService.put, (r, ctx) => this.put(r, ai(ctx)));
    router.unary(KVService.deleteRange, (r, ctx) => this.deleteRange(r, ai(ctx)));
    router.unary(KVService.txn, (r, ctx) => this.txn(r, ai(ctx)));
    router.unary(KVService.compact, (r) => this.compact(r));
    router.bidi(WatchService.watch, (stream) => {
      try {
        this.checkLeader(stream.ctx.headers);
      } catch (err) {
        stream.end(err as never);
        return;
      }
      serveWatch(this.server, stream, {
        maxRequestBytes: this.opts.maxRequestBytes,
        progressIntervalMs: this.opts.progressIntervalMs,
        leaderlessLimitMs: 2 * this.server.config.electionTimeoutMs,
        authInfo: () => this.authInfo(stream.ctx.headers),
      });
    });
    router.unary(LeaseService.leaseGrant, (r) => this.leaseGrant(r));
    router.unary(LeaseService.leaseRevoke, (r, ctx) => this.leaseRevoke(r, ai(ctx)));
    router.unary(LeaseService.leaseTimeToLive, (r) => this.leaseTimeToLive(r));
    router.unary(LeaseService.leaseLeases, () => this.leaseLeases());
    router.bidi(LeaseService.leaseKeepAlive, (stream) => this.serveKeepAlive(stream));
    router.unary(MaintenanceService.status, () => this.status());
    router.unary(MaintenanceService.hashKv, (r) => this.hashKV(r));
    router.unary(MaintenanceService.hash, async () => {
      const h = await this.server.hash();
      return this.fill<etcdserverpb.HashResponse>({
        header: { clusterId: 0n, memberId: 0n, raftTerm: 0n, revision: BigInt(h.revision) },
        hash: h.hash,
      });
    });
    router.unary(MaintenanceService.moveLeader, (r, ctx) => this.moveLeader(r, ai(ctx)));
    router.unary(MaintenanceService.defragment, async () => {
      await this.server.defragment();
      return this.fill({});
    });
    router.serverStream(MaintenanceService.snapshot, (stream) =>
      serveSnapshot(this.server, stream, this.opts.workDir),
    );
    router.unary(MaintenanceService.alarm, (r) => this.alarm(r));
    router.unary(ClusterService.memberList, () => this.memberList());
    router.unary(ClusterService.memberAdd, (r, ctx) => this.memberAdd(r, ai(ctx)));
    router.unary(ClusterService.memberRemove, (r, ctx) => this.memberRemove(r, ai(ctx)));
    router.unary(ClusterService.memberPromote, (r, ctx) => this.memberPromote(r, ai(ctx)));
    router.unary(ClusterService.memberUpdate, (r, ctx) => this.memberUpdate(r, ai(ctx)));
    router.unary(health.HealthService.check, (r) => {
      // As etcd 3.4: the server as a whole ("") is SERVING; named services are unknown.
      if (r.service !== "") throw new EtcdError(Code.NotFound, "unknown service");
      return { status: health.HealthCheckResponse_ServingStatus.SERVING };
    });
  }
}
