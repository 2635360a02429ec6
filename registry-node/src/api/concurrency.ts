// The Election and Lock services (etcd's v3election and v3lock), built on KV, leases and
// watches exactly as etcd's clientv3/concurrency recipes are, so that a lock or leadership
// taken here behaves as one taken through etcd: keys `<name>/<lease id in hex>` attached to
// the caller's lease, the oldest creation revision holds, waiters wait for the deletion of
// every older key. A crashed holder's lease expires, its key goes, the next waiter proceeds.
// While a call waits, the member keeps the caller's lease alive, as etcd's server-side
// session does.

import { etcdserverpb, type mvccpb, v3electionpb, v3lockpb } from "@regmesh/proto";
import { Code, EtcdError } from "../server/errors.js";
import type { BidiStream, GrpcRouter } from "./grpc.js";
import type { Services } from "./services.js";

const S = etcdserverpb;
const errNotLeader = () => new EtcdError(Code.Unknown, "election: not leader");
const errNoLeader = () => new EtcdError(Code.Unknown, "election: no leader");

/** The end of the range of keys starting with `prefix` (etcd's GetPrefixRangeEnd). */
export function prefixEnd(prefix: Uint8Array): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** The key with the lowest creation revision under `prefix`: the holder (etcd's WithFirstCreate). */
function oldestUnder(prefix: Buffer): etcdserverpb.RangeRequest {
  return S.RangeRequest.create({
    key: prefix,
    rangeEnd: prefixEnd(prefix),
    sortTarget: S.RangeRequest_SortTarget.CREATE,
    sortOrder: S.RangeRequest_SortOrder.ASCEND,
    limit: 1n,
  });
}

export class Concurrency {
  constructor(private readonly services: Services) {}

  private get server() {
    return this.services.server;
  }

  /** Keeps `lease` alive while `signal` is not aborted (the server-side session). */
  private holdLease(lease: bigint, signal: AbortSignal): () => void {
    const l = this.server.lessor.lookup(lease);
    const periodMs = Math.max(500, ((l?.ttlSeconds ?? 3) * 1000) / 3);
    const timer = setInterval(() => {
      try {
        this.server.lessor.renew(lease, this.server.clock.now());
      } catch {
        // Gone or not leader: the wait goes on; the caller's own keep-alive decides.
      }
    }, periodMs);
    const stop = () => clearInterval(timer);
    signal.addEventListener("abort", stop, { once: true });
    return stop;
  }

  /** Resolves when `key` is deleted at or after revision `rev`. */
  private waitDelete(key: Buffer, rev: bigint, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const w = this.server.watchable.watch({
        key: key.toString("latin1"),
        end: undefined,
        startRev: Number(rev),
        filters: ["noPut"],
        send: (d) => {
          if (d.kind === "compacted" || d.events.some((e) => e.type === 1)) {
            this.server.watchable.cancel(w);
            resolve();
          }
          return true;
        },
      });
      this.server.syncWatchers();
      signal.addEventListener(
        "abort",
        () => {
          this.server.watchable.cancel(w);
          reject(new EtcdError(Code.Canceled, "context canceled"));
        },
        { once: true },
      );
    });
  }

  /** Waits until no key under `prefix` has a creation revision <= maxCreateRev; returns the last header. */
  private async waitDeletes(prefix: Buffer, maxCreateRev: bigint, signal: AbortSignal) {
    for (;;) {
      const r = await this.services.range(
        S.RangeRequest.create({
          key: prefix,
          rangeEnd: prefixEnd(prefix),
          sortTarget: S.RangeRequest_SortTarget.CREATE,
          sortOrder: S.RangeRequest_SortOrder.DESCEND,
          limit: 1n,
          maxCreateRevision: maxCreateRev,
        }),
      );
      if (r.kvs.length === 0) return r.header!;
      await this.waitDelete(r.kvs[0]!.key, r.header!.revision, signal);
    }
  }

  private leaseKey(name: Buffer, lease: bigint): Buffer {
    return Buffer.from(`${name.toString("latin1")}/${lease.toString(16)}`, "latin1");
  }

  async campaign(
    r: v3electionpb.CampaignRequest,
    signal: AbortSignal,
  ): Promise<v3electionpb.CampaignResponse> {
    const prefix = Buffer.concat([r.name, Buffer.from("/")]);
    const key = this.leaseKey(r.name, r.lease);
    const release = this.holdLease(r.lease, signal);
    try {
      const resp = await this.services.txn(
        S.TxnRequest.create({
          compare: [
            {
              key,
              target: S.Compare_CompareTarget.CREATE,
              result: S.Compare_CompareResult.EQUAL,
              createRevision: 0n,
            },
          ],
          success: [{ requestPut: S.PutRequest.create({ key, value: r.value, lease: r.lease }) }],
          failure: [{ requestRange: S.RangeRequest.create({ key }) }],
        }),
      );
      let rev = resp.header!.revision;
      let header = resp.header!;
      if (!resp.succeeded) {
        const kv = resp.responses[0]!.responseRange!.kvs[0]!;
        rev = kv.createRevision;
        if (!kv.value.equals(r.value)) header = (await this.proclaimAt(key, rev, r.lease, r.value)) ?? header;
      }
      try {
        await this.waitDeletes(prefix, rev - 1n, signal);
      } catch (err) {
        await this.resignAt(key, rev).catch(() => {});
        throw err;
      }
      return { header, leader: { name: r.name, key, rev, lease: r.lease } };
    } finally {
      release();
    }
  }

  private async proclaimAt(key: Buffer, rev: bigint, lease: bigint, value: Buffer) {
    const resp = await this.services.txn(
      S.TxnRequest.create({
        compare: [
          {
            key,
            target: S.Compare_CompareTarget.CREATE,
            result: S.Compare_CompareResult.EQUAL,
            createRevision: rev,
          },
        ],
        success: [{ requestPut: S.PutRequest.create({ key, value, lease }) }],
      }),
    );
    if (!resp.succeeded) throw errNotLeader();
    return resp.header;
  }

  private async resignAt(key: Buffer, rev: bigint) {
    const resp = await this.services.txn(
      S.TxnRequest.create({
        compare: [
          {
            key,
            target: S.Compare_CompareTarget.CREATE,
            result: S.Compare_CompareResult.EQUAL,
            createRevision: rev,
          },
        ],
        success: [{ requestDeleteRange: S.DeleteRangeRequest.create({ key }) }],
      }),
    );
    return resp.header;
  }

  async proclaim(r: v3electionpb.ProclaimRequest): Promise<v3electionpb.ProclaimResponse> {
    const l = r.leader;
    if (l === undefined) throw errNotLeader();
    return { header: await this.proclaimAt(l.key, l.rev, l.lease, r.value) };
  }

  async resign(r: v3electionpb.ResignRequest): Promise<v3electionpb.ResignResponse> {
    const l = r.leader;
    if (l === undefined) return this.services.fill({});
    return { header: await this.resignAt(l.key, l.rev) };
  }

  async leaderOf(
    name: Buffer,
  ): Promise<{ header: etcdserverpb.ResponseHeader; kv: mvccpb.KeyValue | undefined }> {
    const r = await this.services.range(oldestUnder(Buffer.concat([name, Buffer.from("/")])));
    return { header: r.header!, kv: r.kvs[0] };
  }

  async leader(r: v3electionpb.LeaderRequest): Promise<v3electionpb.LeaderResponse> {
    const { header, kv } = await this.leaderOf(r.name);
    if (kv === undefined) throw errNoLeader();
    return { header, kv };
  }

  /** Streams the leader's value each time leadership or the proclaimed value changes. */
  observe(stream: BidiStream<v3electionpb.LeaderRequest, v3electionpb.LeaderResponse>): void {
    let started = false;
    stream.onMessage((r) => {
      if (started) return;
      started = true;
      const prefix = Buffer.concat([r.name, Buffer.from("/")]);
      let last: mvccpb.KeyValue | undefined;
      const report = async () => {
        const { header, kv } = await this.leaderOf(r.name);
        if (kv === undefined) return;
        if (last?.key.equals(kv.key) && last.modRevision === kv.modRevision) return;
        last = kv;
        stream.write({ header, kv });
      };
      void report();
      const w = this.server.watchable.watch({
        key: prefix.toString("latin1"),
        end: prefixEnd(prefix).toString("latin1"),
        startRev: 0,
        filters: [],
        send: () => {
          void report();
          return true;
        },
      });
      stream.onEnd(() => this.server.watchable.cancel(w));
    });
  }

  async lock(r: v3lockpb.LockRequest, signal: AbortSignal): Promise<v3lockpb.LockResponse> {
    const prefix = Buffer.concat([r.name, Buffer.from("/")]);
    const key = this.leaseKey(r.name, r.lease);
    const release = this.holdLease(r.lease, signal);
    try {
      const owner = { requestRange: oldestUnder(prefix) };
      const resp = await this.services.txn(
        S.TxnRequest.create({
          compare: [
            {
              key,
              target: S.Compare_CompareTarget.CREATE,
              result: S.Compare_CompareResult.EQUAL,
              createRevision: 0n,
            },
          ],
          success: [
            { requestPut: S.PutRequest.create({ key, value: Buffer.alloc(0), lease: r.lease }) },
            owner,
          ],
          failure: [{ requestRange: S.RangeRequest.create({ key }) }, owner],
        }),
      );
      let myRev = resp.header!.revision;
      if (!resp.succeeded) myRev = resp.responses[0]!.responseRange!.kvs[0]!.createRevision;
      const ownerKvs = resp.responses[1]!.responseRange!.kvs;
      if (ownerKvs.length === 0 || ownerKvs[0]!.createRevision === myRev) return { header: resp.header, key };
      try {
        const header = await this.waitDeletes(prefix, myRev - 1n, signal);
        return { header: this.services.fill({ header }).header, key };
      } catch (err) {
        await this.services.deleteRange(S.DeleteRangeRequest.create({ key })).catch(() => {});
        throw err;
      }
    } finally {
      release();
    }
  }

  async unlock(r: v3lockpb.UnlockRequest): Promise<v3lockpb.UnlockResponse> {
    const resp = await this.services.deleteRange(S.DeleteRangeRequest.create({ key: r.key }));
    return { header: resp.header };
  }

  register(router: GrpcRouter): void {
    const E = v3electionpb.ElectionService;
    router.unary(E.campaign, (r, ctx) => this.campaign(r, ctx.signal));
    router.unary(E.proclaim, (r) => this.proclaim(r));
    router.unary(E.leader, (r) => this.leader(r));
    router.unary(E.resign, (r) => this.resign(r));
    router.serverStream(E.observe, (s) => this.observe(s));
    const L = v3lockpb.LockService;
    router.unary(L.lock, (r, ctx) => this.lock(r, ctx.signal));
    router.unary(L.unlock, (r) => this.unlock(r));
  }
}
