// A mock registry for users' own tests (STYLE.md §4: "the SDK ships a mock registry"): an
// in-process etcd v3 gRPC server on a free loopback port, so EtcdClient, Registrar and Discovery
// run against it unchanged, with no etcd binary and no child process.
//
//   const reg = await MockRegistry.start({ clock });      // clock: drives lease expiry
//   const client = new EtcdClient({ endpoints: [reg.endpoint] });
//   ...
//   reg.services();            // { orders: [Instance, ...] }: what is registered now
//   reg.expireLease(id);       // as if the process stopped keeping it alive
//   reg.setUnavailable(true);  // every call refused with UNAVAILABLE, open streams broken
//   await reg.stop();
//
// It serves, with etcd 3.4's semantics and error strings (mock-store.ts has the model):
// - KV: Range (key, range_end with prefix and "\0", limit/more, revision, count_only,
//   keys_only, sort, min/max mod/create revision), Put (lease, prev_kv, ignore_value,
//   ignore_lease), DeleteRange (prev_kv), Txn (compares on value, version, create, mod and lease
//   revision, with range_end; nested Txns; all or nothing), Compact.
// - Watch: create (start_revision in the past replays history; compacted start revisions are
//   canceled with compact_revision; prev_kv; NOPUT/NODELETE filters; client-chosen ids), cancel,
//   progress requests (answered with watch_id -1, as etcd 3.4). Events of one revision arrive in
//   one response, revisions in order. Never fragments; no periodic progress_notify.
// - Lease: Grant (TTLs under leaseTtlMinS raised to it, as etcd does), Revoke, KeepAlive stream,
//   TimeToLive (with keys), Leases; expiry on `clock`.
// - Maintenance.Status (one member, its own leader), Cluster.MemberList, and Auth.Authenticate
//   answering "authentication is not enabled" (the client then goes on without a token).
// Not served: auth, alarms, snapshots, defragment, member changes (UNIMPLEMENTED).
// mock-differential.proc.test.ts runs one script and seeded random operations on the mock and
// on a real etcd and requires the same answers, so "as etcd does" above is checked, not hoped.

import {
  type Metadata,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { etcdserverpb } from "@regmesh/proto";
import { decodeInstanceEntry, type Instance, servicesPrefix } from "../core/instance.js";
import { type Clock, systemClock } from "../etcd/clock.js";
import { ETCD_MSG } from "../etcd/errors.js";
import { type Bytes, prefixEnd, toBuffer } from "../etcd/keys.js";
import { inRange, type LeaseInfo, MockEtcdError, MockStore, type Revision } from "./mock-store.js";

export type { LeaseInfo as MockLeaseInfo } from "./mock-store.js";

export interface MockRegistryOptions {
  /** Drives lease expiry. Default: the system clock. Give a ManualClock to expire leases at will. */
  clock?: Clock;
  /**
   * Shorter lease TTLs are raised to this, as etcd raises them to its minimum (1.5 election
   * timeouts, rounded up: 2 s with etcd's defaults). Default 2.
   */
  leaseTtlMinS?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: a free port. */
  port?: number;
}

type Stream = ServerDuplexStream<unknown, unknown>;

interface MockWatcher {
  id: bigint;
  start: string;
  end: string;
  startRevision: bigint;
  prevKv: boolean;
  noPut: boolean;
  noDelete: boolean;
}

let instances = 0;

function grpcError(code: number, details: string): Error & { code: number; details: string } {
  return Object.assign(new Error(details), { code, details, metadata: undefined as Metadata | undefined });
}

export class MockRegistry {
  readonly store: MockStore;
  readonly clusterId: bigint;
  readonly memberId: bigint;
  private readonly streams = new Set<Stream>();
  private unavailable = false;
  private stopped = false;

  private constructor(
    private readonly server: Server,
    /** host:port to give to EtcdClient's `endpoints`. */
    readonly endpoint: string,
    clock: Clock,
    leaseTtlMinS: number,
  ) {
    this.store = new MockStore(clock, leaseTtlMinS);
    instances += 1;
    this.clusterId = 0x6d6f636b00000000n + BigInt(process.pid) * 0x10000n + BigInt(instances);
    this.memberId = this.clusterId ^ 0xffffn;
  }

  static async start(opts: MockRegistryOptions = {}): Promise<MockRegistry> {
    const server = new Server();
    const host = opts.host ?? "127.0.0.1";
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${host}:${opts.port ?? 0}`, ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    const reg = new MockRegistry(
      server,
      `${host}:${port}`,
      opts.clock ?? systemClock,
      opts.leaseTtlMinS ?? 2,
    );
    reg.addServices();
    return reg;
  }

  // -------------------------------------------------------------------------------------------
  // Helpers for tests

  /** The current revision. */
  get revision(): bigint {
    return this.store.revision;
  }

  /** Every instance registered under `prefix`, by service, each list sorted by id. Bad records are skipped. */
  services(prefix = ""): Record<string, Instance[]> {
    const out: Record<string, Instance[]> = {};
    for (const kv of this.rangePrefix(servicesPrefix(prefix))) {
      const r = decodeInstanceEntry(prefix, kv.key.toString("utf8"), kv.value);
      if (!r.ok) continue;
      (out[r.value.service] ??= []).push(r.value);
    }
    for (const list of Object.values(out)) list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return out;
  }

  /** The instances of one service (sorted by id). */
  instances(service: string, prefix = ""): Instance[] {
    return this.services(prefix)[service] ?? [];
  }

  /** The value at `key` (UTF-8), or undefined. */
  get(key: Bytes): string | undefined {
    return this.store
      .range(etcdserverpb.RangeRequest.create({ key: toBuffer(key) }))
      .kvs[0]?.value.toString("utf8");
  }

  /** Keys under `prefix` (all keys when empty), in key order. */
  keys(prefix = ""): string[] {
    return this.rangePrefix(prefix).map((kv) => kv.key.toString("utf8"));
  }

  /** Writes a key, as a client would (watchers see it). */
  put(key: Bytes, value: Bytes, opts: { lease?: bigint } = {}): bigint {
    this.store.put(
      etcdserverpb.PutRequest.create({ key: toBuffer(key), value: toBuffer(value), lease: opts.lease ?? 0n }),
    );
    return this.store.revision;
  }

  /** Deletes a key, or every key under it with `prefix`; returns how many went. */
  delete(key: Bytes, opts: { prefix?: boolean } = {}): number {
    const res = this.store.deleteRange(
      etcdserverpb.DeleteRangeRequest.create({
        key: toBuffer(key),
        rangeEnd: opts.prefix ? prefixEnd(key) : Buffer.alloc(0),
      }),
    );
    return Number(res.deleted);
  }

  grantLease(ttlS: number): bigint {
    return this.store.grant(ttlS, 0n).id;
  }

  /** Expires a lease now (its keys are deleted in one revision). False if there was no such lease. */
  expireLease(id: bigint): boolean {
    if (this.store.lease(id) === undefined) return false;
    this.store.revoke(id);
    return true;
  }

  /** Live leases with their TTL, time left and attached keys. */
  leases(): LeaseInfo[] {
    return this.store.leases();
  }

  compact(revision: bigint): void {
    this.store.compact(revision);
  }

  /**
   * While true, every call is refused with UNAVAILABLE and open streams are broken, as if the
   * registry were unreachable; state (keys, leases) is kept, and leases keep expiring.
   */
  setUnavailable(on: boolean): void {
    this.unavailable = on;
    if (on) for (const s of [...this.streams]) this.breakStream(s);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const s of [...this.streams]) this.breakStream(s);
    this.store.close();
    this.server.forceShutdown();
  }

  private rangePrefix(prefix: string) {
    const key = prefix === "" ? Buffer.from([0]) : Buffer.from(prefix, "utf8");
    const rangeEnd = prefix === "" ? Buffer.from([0]) : prefixEnd(prefix);
    return this.store.range(etcdserverpb.RangeRequest.create({ key, rangeEnd })).kvs;
  }

  // -------------------------------------------------------------------------------------------
  // gRPC

  private header(revision = this.store.revision): etcdserverpb.ResponseHeader {
    return { clusterId: this.clusterId, memberId: this.memberId, revision, raftTerm: 1n };
  }

  /** A unary handler: refusal while unavailable, etcd errors as gRPC statuses, a header on the answer. */
  private unary<Req, Res>(fn: (req: Req) => Res) {
    return (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => {
      if (this.unavailable || this.stopped) {
        cb(grpcError(status.UNAVAILABLE, "mock registry: unavailable"), null);
        return;
      }
      try {
        const res = fn(call.request);
        cb(null, { ...res, header: this.header() });
      } catch (err) {
        if (err instanceof MockEtcdError) cb(grpcError(err.code, err.details), null);
        else cb(grpcError(status.UNKNOWN, String((err as Error)?.message ?? err)), null);
      }
    };
  }

  /**
   * Registers an open stream; it is refused at once while unavailable. False when refused. As in
   * etcd, a keep-alive stream ends when the client half-closes it, a watch stream goes on until
   * the client cancels it.
   */
  private openStream(call: Stream, cleanup: () => void, endOnHalfClose: boolean): boolean {
    if (this.unavailable || this.stopped) {
      call.emit("error", grpcError(status.UNAVAILABLE, "mock registry: unavailable"));
      return false;
    }
    this.streams.add(call);
    const done = () => {
      if (!this.streams.delete(call)) return;
      cleanup();
    };
    call.on("cancelled", done);
    call.on("error", done);
    call.on("close", done);
    call.on("end", () => {
      if (!endOnHalfClose) return;
      done();
      call.end();
    });
    (call as unknown as { cleanup: () => void }).cleanup = done;
    return true;
  }

  private breakStream(call: Stream): void {
    (call as unknown as { cleanup?: () => void }).cleanup?.();
    call.emit("error", grpcError(status.UNAVAILABLE, "mock registry: unavailable"));
  }

  private addServices(): void {
    const s = this.store;
    const kv: Partial<etcdserverpb.KVServer> = {
      range: this.unary((req: etcdserverpb.RangeRequest) => s.range(req)),
      put: this.unary((req: etcdserverpb.PutRequest) => s.put(req)),
      deleteRange: this.unary((req: etcdserverpb.DeleteRangeRequest) => s.deleteRange(req)),
      txn: this.unary((req: etcdserverpb.TxnRequest) => s.txn(req)),
      compact: this.unary((req: etcdserverpb.CompactionRequest) => {
        s.compact(req.revision);
        return {};
      }),
    };
    const lease: Partial<etcdserverpb.LeaseServer> = {
      leaseGrant: this.unary((req: etcdserverpb.LeaseGrantRequest) => {
        const l = s.grant(Number(req.TTL), req.ID);
        return { ID: l.id, TTL: BigInt(l.ttlS), error: "" };
      }),
      leaseRevoke: this.unary((req: etcdserverpb.LeaseRevokeRequest) => {
        s.revoke(req.ID);
        return {};
      }),
      leaseTimeToLive: this.unary((req: etcdserverpb.LeaseTimeToLiveRequest) => {
        const l = s.lease(req.ID);
        // etcd answers an unknown lease with TTL -1, not an error.
        if (l === undefined) return { ID: req.ID, TTL: -1n, grantedTTL: 0n, keys: [] };
        return {
          ID: req.ID,
          TTL: BigInt(Math.floor(l.remainingMs / 1000)),
          grantedTTL: BigInt(l.ttlS),
          keys: req.keys ? s.leaseKeys(req.ID) : [],
        };
      }),
      leaseLeases: this.unary(() => ({ leases: s.leases().map((l) => ({ ID: l.id })) })),
      leaseKeepAlive: (call) => {
        if (!this.openStream(call as Stream, () => {}, true)) return;
        call.on("data", (req: etcdserverpb.LeaseKeepAliveRequest) => {
          if (!this.streams.has(call as Stream)) return;
          // A lease that is gone is answered with TTL 0 (etcd's LeaseKeepAlive does the same).
          const ttl = s.renew(req.ID);
          call.write({ header: this.header(), ID: req.ID, TTL: BigInt(ttl) });
        });
      },
    };
    const watch: Partial<etcdserverpb.WatchServer> = {
      watch: (call) => this.serveWatch(call),
    };
    const maintenance: Partial<etcdserverpb.MaintenanceServer> = {
      status: this.unary(() => ({
        version: "3.4.23",
        dbSize: 0n,
        leader: this.memberId,
        raftIndex: s.revision,
        raftTerm: 1n,
        raftAppliedIndex: s.revision,
        errors: [],
        dbSizeInUse: 0n,
        isLearner: false,
      })),
    };
    const cluster: Partial<etcdserverpb.ClusterServer> = {
      memberList: this.unary(() => ({
        members: [
          {
            ID: this.memberId,
            name: "mock",
            peerURLs: [],
            clientURLs: [`http://${this.endpoint}`],
            isLearner: false,
          },
        ],
      })),
    };
    const auth: Partial<etcdserverpb.AuthServer> = {
      authenticate: (_call, cb) => cb(grpcError(status.FAILED_PRECONDITION, ETCD_MSG.authNotEnabled), null),
    };
    const add = (svc: object, impl: object) =>
      this.server.addService(
        svc as Parameters<Server["addService"]>[0],
        impl as UntypedServiceImplementation,
      );
    add(etcdserverpb.KVService, kv);
    add(etcdserverpb.LeaseService, lease);
    add(etcdserverpb.WatchService, watch);
    add(etcdserverpb.MaintenanceService, maintenance);
    add(etcdserverpb.ClusterService, cluster);
    add(etcdserverpb.AuthService, auth);
  }

  /** One Watch stream: its watchers, fed synchronously by the store, so events keep revision order. */
  private serveWatch(call: ServerDuplexStream<etcdserverpb.WatchRequest, etcdserverpb.WatchResponse>): void {
    const s = this.store;
    const watchers = new Map<bigint, MockWatcher>();
    let nextId = 0n;
    let open = true;
    const send = (res: Partial<etcdserverpb.WatchResponse>, revision = s.revision) => {
      if (!open) return;
      call.write(etcdserverpb.WatchResponse.fromPartial({ header: this.header(revision), ...res }));
    };
    const deliver = (w: MockWatcher, r: Revision) => {
      if (r.revision < w.startRevision) return;
      const events = r.events
        .filter((e) => inRange(e.kv.key.toString("latin1"), w.start, w.end))
        .filter((e) => (e.type === 0 ? !w.noPut : !w.noDelete))
        .map((e) => ({ type: e.type, kv: e.kv, prevKv: w.prevKv ? e.prevKv : undefined }));
      if (events.length > 0) send({ watchId: w.id, events }, r.revision);
    };
    const unsubscribe = s.subscribe((r) => {
      for (const w of watchers.values()) deliver(w, r);
    });
    if (
      !this.openStream(
        call as Stream,
        () => {
          open = false;
          unsubscribe();
          watchers.clear();
        },
        false,
      )
    ) {
      unsubscribe();
      return;
    }
    call.on("data", (req: etcdserverpb.WatchRequest) => {
      if (!open) return;
      const c = req.createRequest;
      if (c !== undefined) {
        let id = c.watchId;
        if (id !== 0n && watchers.has(id)) {
          send({
            watchId: id,
            created: true,
            canceled: true,
            cancelReason: "mvcc: duplicate watch ID provided on the WatchStream",
          });
          return;
        }
        if (id === 0n) {
          while (watchers.has(nextId)) nextId += 1n;
          id = nextId++;
        }
        send({ watchId: id, created: true });
        if (c.startRevision > 0n && c.startRevision < s.compactRevision) {
          send({ watchId: id, canceled: true, compactRevision: s.compactRevision });
          return;
        }
        const w: MockWatcher = {
          id,
          start: c.key.toString("latin1"),
          end: c.rangeEnd.toString("latin1"),
          startRevision: c.startRevision > 0n ? c.startRevision : s.revision + 1n,
          prevKv: c.prevKv,
          noPut: c.filters.includes(etcdserverpb.WatchCreateRequest_FilterType.NOPUT),
          noDelete: c.filters.includes(etcdserverpb.WatchCreateRequest_FilterType.NODELETE),
        };
        watchers.set(id, w);
        // History first, then live events: nothing runs in between, so there is no gap.
        if (c.startRevision > 0n) for (const r of s.revisionsFrom(c.startRevision)) deliver(w, r);
        return;
      }
      if (req.cancelRequest !== undefined) {
        const id = req.cancelRequest.watchId;
        if (watchers.delete(id)) send({ watchId: id, canceled: true });
        return;
      }
      if (req.progressRequest !== undefined) {
        // etcd 3.4 answers a stream-wide progress request with watch id -1.
        send({ watchId: -1n });
      }
    });
  }
}
