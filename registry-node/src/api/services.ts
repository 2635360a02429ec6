// The etcd v3 gRPC services over the member: KV, Watch, Lease, Maintenance, Cluster and the
// gRPC health protocol. Each handler checks its request as etcd's v3rpc layer does, hands
// writes to the log (`propose`), serves reads locally, and fills response headers.

import { etcdserverpb, health } from "@regmesh/proto";
import { Code, EtcdError, errors } from "../server/errors.js";
import { type EtcdServer, toClientError } from "../server/node.js";
import { encodeOp, type Op } from "../server/ops.js";
import { etcdServerVersion } from "../version.js";
import type { GrpcRouter } from "./grpc.js";
import { checkDeleteRequest, checkPutRequest, checkRangeRequest, checkTxnRequest } from "./validate.js";
import { serveWatch } from "./watch.js";

export type ServiceOptions = {
  maxTxnOps: number;
  maxRequestBytes: number;
  progressIntervalMs: number;
  /** Peer URLs and client URLs this member advertises (MemberList). */
  name: string;
  peerUrls: string[];
  clientUrls: string[];
};

const { KVService, WatchService, LeaseService, MaintenanceService, ClusterService } = etcdserverpb;

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

  range(r: etcdserverpb.RangeRequest): etcdserverpb.RangeResponse {
    checkRangeRequest(r);
    try {
      return this.fill(this.server.applier.range(r));
    } catch (err) {
      throw toClientError(err);
    }
  }

  async put(r: etcdserverpb.PutRequest): Promise<etcdserverpb.PutResponse> {
    checkPutRequest(r);
    return this.fill(await this.propose<etcdserverpb.PutResponse>({ kind: "put", req: r }));
  }

  async deleteRange(r: etcdserverpb.DeleteRangeRequest): Promise<etcdserverpb.DeleteRangeResponse> {
    checkDeleteRequest(r);
    return this.fill(await this.propose<etcdserverpb.DeleteRangeResponse>({ kind: "deleteRange", req: r }));
  }

  async txn(r: etcdserverpb.TxnRequest): Promise<etcdserverpb.TxnResponse> {
    checkTxnRequest(r, this.opts.maxTxnOps);
    return this.fill(await this.propose<etcdserverpb.TxnResponse>({ kind: "txn", req: r }));
  }

  async compact(r: etcdserverpb.CompactionRequest): Promise<etcdserverpb.CompactionResponse> {
    const out = await this.propose<{ resp: etcdserverpb.CompactionResponse }>({ kind: "compaction", req: r });
    return this.fill(out.resp);
  }

  async leaseGrant(r: etcdserverpb.LeaseGrantRequest): Promise<etcdserverpb.LeaseGrantResponse> {
    let id = r.ID;
    // No id given: the server chooses one, positive and not in use (etcd's reqIDGen).
    while (id === 0n || this.server.lessor.exists(id)) id = this.server.nextId() & ((1n << 63n) - 1n);
    const out = await this.propose<{ ID: bigint; TTL: bigint }>({
      kind: "leaseGrant",
      req: { ID: id, TTL: r.TTL },
    });
    return this.fill<etcdserverpb.LeaseGrantResponse>({ ID: out.ID, TTL: out.TTL, error: "" });
  }

  async leaseRevoke(r: etcdserverpb.LeaseRevokeRequest): Promise<etcdserverpb.LeaseRevokeResponse> {
    await this.propose({ kind: "leaseRevoke", req: r });
    return this.fill({});
  }

  leaseTimeToLive(r: etcdserverpb.LeaseTimeToLiveRequest): etcdserverpb.LeaseTimeToLiveResponse {
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

  /** One keep-alive: renews on the leader; an unknown lease answers TTL 0, as etcd. */
  keepAlive(r: etcdserverpb.LeaseKeepAliveRequest): etcdserverpb.LeaseKeepAliveResponse {
    const resp = this.fill<etcdserverpb.LeaseKeepAliveResponse>({ ID: r.ID, TTL: 0n });
    try {
      resp.TTL = BigInt(this.server.lessor.renew(r.ID, this.server.clock.now()));
    } catch (err) {
      if ((err as Error).message !== errors.leaseNotFound().message) throw err;
    }
    return resp;
  }

  status(): etcdserverpb.StatusResponse {
    const s = this.server;
    return this.fill<etcdserverpb.StatusResponse>({
      version: etcdServerVersion,
      dbSize: BigInt(s.dbSize()),
      leader: s.memberId,
      raftIndex: BigInt(s.kv.consistentIndex),
      raftTerm: s.raftTerm,
      raftAppliedIndex: BigInt(s.kv.consistentIndex),
      errors: [],
      dbSizeInUse: BigInt(s.dbSize()),
      isLearner: false,
    });
  }

  memberList(): etcdserverpb.MemberListResponse {
    return this.fill<etcdserverpb.MemberListResponse>({
      members: [
        {
          ID: this.server.memberId,
          name: this.opts.name,
          peerURLs: this.opts.peerUrls,
          clientURLs: this.opts.clientUrls,
          isLearner: false,
        },
      ],
    });
  }

  /** Registers every service on the router. */
  register(router: GrpcRouter): void {
    router.unary(KVService.range, (r) => this.range(r));
    router.unary(KVService.put, (r) => this.put(r));
    router.unary(KVService.deleteRange, (r) => this.deleteRange(r));
    router.unary(KVService.txn, (r) => this.txn(r));
    router.unary(KVService.compact, (r) => this.compact(r));
    router.bidi(WatchService.watch, (stream) =>
      serveWatch(this.server, stream, {
        maxRequestBytes: this.opts.maxRequestBytes,
        progressIntervalMs: this.opts.progressIntervalMs,
      }),
    );
    router.unary(LeaseService.leaseGrant, (r) => this.leaseGrant(r));
    router.unary(LeaseService.leaseRevoke, (r) => this.leaseRevoke(r));
    router.unary(LeaseService.leaseTimeToLive, (r) => this.leaseTimeToLive(r));
    router.unary(LeaseService.leaseLeases, () => this.leaseLeases());
    router.bidi(LeaseService.leaseKeepAlive, (stream) => {
      stream.onMessage((r) => {
        try {
          stream.write(this.keepAlive(r));
        } catch (err) {
          stream.end(toClientError(err) as never);
        }
      });
      stream.onHalfClose(() => stream.end());
    });
    router.unary(MaintenanceService.status, () => this.status());
    router.unary(ClusterService.memberList, () => this.memberList());
    router.unary(health.HealthService.check, (r) => {
      // As etcd 3.4: the server as a whole ("") is SERVING; named services are unknown.
      if (r.service !== "") throw new EtcdError(Code.NotFound, "unknown service");
      return { status: health.HealthCheckResponse_ServingStatus.SERVING };
    });
  }
}
