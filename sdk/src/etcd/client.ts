// A typed etcd v3 client on @grpc/grpc-js: KV, Txn, Lease (with keep-alive), Watch (multiplexed),
// several endpoints with round-robin failover, hasleader on streams, user/password auth and TLS,
// and an optional standby cluster the client moves to when the primary fails or is slow
// (groups.ts). Any etcd v3 endpoint will do: a real etcd or registry-node.

import { EventEmitter } from "node:events";
import {
  type CallOptions,
  type ChannelOptions,
  credentials as grpcCredentials,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";
import type { etcdserverpb, mvccpb } from "@regmesh/proto";
import { channels, publish } from "./channels.js";
import { backoffMs, type Clock, systemClock } from "./clock.js";
import { EtcdError, EtcdErrorCode, fromGrpcError, isRetryable } from "./errors.js";
import { type GroupChange, type GroupName, RegistryGroups, type StandbyOptions } from "./groups.js";
import type { Bytes } from "./keys.js";
import { type KeepAliveTransport, LeaseKeeper } from "./lease.js";
import {
  BACKOFF_INITIAL_MS,
  BACKOFF_MAX_MS,
  GROUP_BAD_PROBES_TO_SWITCH_DEFAULT,
  GROUP_GOOD_PROBES_TO_RETURN_DEFAULT,
  GROUP_LATENCY_MS_MAX_DEFAULT,
  GROUP_PROBE_INTERVAL_MS_DEFAULT,
  GROUP_PROBE_TIMEOUT_MS_DEFAULT,
  REQUEST_TIMEOUT_MS_DEFAULT,
  RETRY_DEADLINE_MS_DEFAULT,
  WATCH_IDLE_TIMEOUT_MS_DEFAULT,
  WATCH_PROGRESS_INTERVAL_MS_DEFAULT,
} from "./limits.js";
import { type Logger, silentLogger } from "./logger.js";
import type { EndpointClients } from "./pool.js";
import {
  type DeleteOptions,
  deleteRequest,
  type PutOptions,
  putRequest,
  type RangeOptions,
  rangeRequest,
  TxnBuilder,
} from "./txn.js";
import { type Watcher, type WatchListener, WatchManager, type WatchOptions } from "./watch.js";

export interface EtcdClientOptions {
  /** host:port of each member; calls go round robin over them on Unavailable. */
  endpoints: readonly string[];
  /** etcd user and password; the client authenticates and refreshes its token. */
  auth?: { username: string; password: string };
  /** TLS: PEM buffers. Absent means plaintext. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  /** Deadline of one attempt of a unary call. */
  requestTimeoutMs?: number;
  /** Total time a unary call retries over endpoints before failing with SDK_ERR_UNAVAILABLE. */
  retryDeadlineMs?: number;
  watchProgressIntervalMs?: number;
  watchIdleTimeoutMs?: number;
  /** Client-chosen watch ids (etcd >= 3.4). Default false: the server picks them. */
  clientWatchIds?: boolean;
  /** A second cluster kept as hot standby; the client moves there and back by itself (groups.ts). */
  standby?: StandbyOptions;
  clock?: Clock;
  logger?: Logger;
  grpcOptions?: ChannelOptions;
}

type UnaryInvoke<Res> = (
  c: EndpointClients,
  md: Metadata,
  options: Partial<CallOptions>,
  cb: (err: ServiceError | null, res?: Res) => void,
) => void;

export interface Lease {
  id: bigint;
  ttlS: number;
  /** Clock time at which the grant request was sent: the lease's first deadline is this + TTL. */
  grantSentAtMs: number;
  /** The client's group epoch when the grant was sent; a lease of an older epoch is not kept alive. */
  groupEpoch?: number;
}

export interface EtcdClientEvents {
  /** The client moved to the other registry group (also on `sdk:registry:group`). */
  group: [GroupChange];
}

type Credentials = { ca?: Buffer; cert?: Buffer; key?: Buffer };

export class EtcdClient extends EventEmitter<EtcdClientEvents> {
  readonly clock: Clock;
  readonly logger: Logger;
  /** The groups' pools; calls ask it for the endpoint in use, in whichever group is in use. */
  private readonly pool: RegistryGroups;
  private readonly watches: WatchManager;
  private readonly requestTimeoutMs: number;
  private readonly retryDeadlineMs: number;
  private token: string | undefined;
  private tokenPromise: Promise<string> | undefined;
  private readonly keepers = new Set<LeaseKeeper>();
  private closed = false;

  constructor(private readonly opts: EtcdClientOptions) {
    super();
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger ?? silentLogger;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS_DEFAULT;
    this.retryDeadlineMs = opts.retryDeadlineMs ?? RETRY_DEADLINE_MS_DEFAULT;
    const creds = (tls: Credentials | undefined) =>
      tls === undefined
        ? grpcCredentials.createInsecure()
        : grpcCredentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null);
    this.pool = new RegistryGroups({
      endpoints: opts.endpoints,
      credentials: creds(opts.tls),
      standby: opts.standby,
      standbyCredentials: opts.standby?.tls === undefined ? undefined : creds(opts.standby.tls),
      grpcOptions: opts.grpcOptions ?? {},
      clock: this.clock,
      logger: this.logger,
      defaults: {
        probeIntervalMs: GROUP_PROBE_INTERVAL_MS_DEFAULT,
        probeTimeoutMs: GROUP_PROBE_TIMEOUT_MS_DEFAULT,
        latencyMsMax: GROUP_LATENCY_MS_MAX_DEFAULT,
        badProbesToSwitch: GROUP_BAD_PROBES_TO_SWITCH_DEFAULT,
        goodProbesToReturn: GROUP_GOOD_PROBES_TO_RETURN_DEFAULT,
      },
      onSwitch: (change) => this.onGroupSwitch(change),
    });
    this.watches = new WatchManager(this.pool, () => this.streamMetadata(), this.clock, this.logger, {
      progressIntervalMs: opts.watchProgressIntervalMs ?? WATCH_PROGRESS_INTERVAL_MS_DEFAULT,
      idleTimeoutMs: opts.watchIdleTimeoutMs ?? WATCH_IDLE_TIMEOUT_MS_DEFAULT,
      clientWatchIds: opts.clientWatchIds ?? false,
      onAuthRefused: () => {
        if (this.auth() === undefined) return false;
        this.token = undefined;
        return true;
      },
    });
  }

  /** The endpoint unary calls go to now. */
  get currentEndpoint(): string {
    return this.pool.current().endpoint;
  }

  /** The registry group in use: "primary", or "standby" while the client has moved there. */
  get group(): GroupName {
    return this.pool.active;
  }

  /** Bumped on every move between groups: a revision or lease read in one epoch means nothing in another. */
  get groupEpoch(): number {
    return this.pool.epoch;
  }

  /** The credentials of the group in use. */
  private auth(): { username: string; password: string } | undefined {
    if (this.pool.active === "standby") return this.opts.standby?.auth ?? this.opts.auth;
    return this.opts.auth;
  }

  /**
   * Everything built on the old group follows the move (groups.ts): watchers are closed and told
   * to re-list, leases are declared lost (the Registrar re-grants and re-registers), the token is
   * dropped. Then the move is announced.
   */
  private onGroupSwitch(change: GroupChange): void {
    this.token = undefined;
    this.tokenPromise = undefined;
    const err = new EtcdError(
      EtcdErrorCode.GROUP_SWITCHED,
      `registry group switched from ${change.from} to ${change.to}: ${change.reason}`,
    );
    this.watches.resetAll(err);
    for (const k of [...this.keepers]) k.declareLost(err);
    this.emit("group", change);
  }

  // -------------------------------------------------------------------------------------------
  // Calls, failover and auth

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimer(resolve, ms));
  }

  private async authMetadata(): Promise<Metadata> {
    const md = new Metadata();
    if (this.auth() !== undefined) {
      const token = await this.getToken();
      if (token !== "") md.set("token", token);
    }
    return md;
  }

  /** Metadata for streams: the token, and hasleader so a member without a leader refuses them. */
  private async streamMetadata(): Promise<Metadata> {
    const md = await this.authMetadata();
    md.set("hasleader", "true");
    return md;
  }

  private getToken(): Promise<string> {
    if (this.token !== undefined) return Promise.resolve(this.token);
    if (this.tokenPromise === undefined) {
      const auth = this.auth()!;
      const epoch = this.pool.epoch;
      this.tokenPromise = this.call<etcdserverpb.AuthenticateResponse>(
        "authenticate",
        (c, md, o, cb) => c.auth.authenticate({ name: auth.username, password: auth.password }, md, o, cb),
        { anonymous: true },
      ).then(
        (res) => {
          // A token of the group the client has just left is not remembered.
          if (epoch !== this.pool.epoch) return res.token;
          this.token = res.token;
          this.tokenPromise = undefined;
          return res.token;
        },
        (err) => {
          if (epoch !== this.pool.epoch) throw err;
          this.tokenPromise = undefined;
          // As etcd's clientv3: credentials given to a server without auth are not an error; the
          // client goes on without a token ("" is remembered, and dropped on an auth error).
          if (err instanceof EtcdError && err.code === EtcdErrorCode.AUTH_NOT_ENABLED) {
            this.token = "";
            return "";
          }
          throw err;
        },
      );
    }
    return this.tokenPromise;
  }

  /**
   * One unary RPC with failover: on Unavailable, no leader or an attempt deadline it moves to the
   * next endpoint (round robin), backing off after each full round, until retryDeadlineMs. An
   * invalid auth token is refreshed once. Mutations are retried too: the SDK's writes are
   * idempotent puts and deletes of its own keys, or Txns guarded by compares.
   */
  private async call<Res>(
    what: string,
    invoke: UnaryInvoke<Res>,
    o: { anonymous?: boolean } = {},
  ): Promise<Res> {
    const start = this.clock.now();
    let attempt = 0;
    let reauthenticated = false;
    for (;;) {
      if (this.closed) throw new EtcdError(EtcdErrorCode.CLOSED, `${what}: etcd client is closed`);
      const c = this.pool.current();
      let err: EtcdError;
      try {
        const md = o.anonymous ? new Metadata() : await this.authMetadata();
        return await new Promise<Res>((resolve, reject) => {
          invoke(c, md, { deadline: Date.now() + this.requestTimeoutMs }, (e, res) => {
            if (e) reject(e);
            else resolve(res as Res);
          });
        });
      } catch (e) {
        err = fromGrpcError(e, what);
      }
      if (err.code === EtcdErrorCode.INVALID_AUTH_TOKEN && this.auth() !== undefined && !reauthenticated) {
        reauthenticated = true;
        this.token = undefined;
        continue;
      }
      if (!isRetryable(err)) throw err;
      const elapsedMs = this.clock.now() - start;
      if (elapsedMs >= this.retryDeadlineMs) {
        throw new EtcdError(
          EtcdErrorCode.UNAVAILABLE,
          `${what}: no endpoint answered in ${Math.round(elapsedMs)} ms (last: ${err.message})`,
          { cause: err, grpcCode: err.grpcCode, details: err.details },
        );
      }
      this.pool.advanceFrom(c.endpoint, err.message);
      attempt += 1;
      if (attempt % this.pool.size === 0) {
        await this.sleep(backoffMs(attempt / this.pool.size - 1, BACKOFF_INITIAL_MS, BACKOFF_MAX_MS));
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // KV

  range(key: Bytes, o: RangeOptions = {}): Promise<etcdserverpb.RangeResponse> {
    const req = rangeRequest(key, o);
    return this.call("range", (c, md, co, cb) => c.kv.range(req, md, co, cb));
  }

  /** The value at `key`, or undefined. */
  async get(key: Bytes, o: RangeOptions = {}): Promise<mvccpb.KeyValue | undefined> {
    const res = await this.range(key, o);
    return res.kvs[0];
  }

  put(key: Bytes, value: Bytes, o: PutOptions = {}): Promise<etcdserverpb.PutResponse> {
    const req = putRequest(key, value, o);
    return this.call("put", (c, md, co, cb) => c.kv.put(req, md, co, cb));
  }

  delete(key: Bytes, o: DeleteOptions = {}): Promise<etcdserverpb.DeleteRangeResponse> {
    const req = deleteRequest(key, o);
    return this.call("delete", (c, md, co, cb) => c.kv.deleteRange(req, md, co, cb));
  }

  txnRequest(req: etcdserverpb.TxnRequest): Promise<etcdserverpb.TxnResponse> {
    return this.call("txn", (c, md, co, cb) => c.kv.txn(req, md, co, cb));
  }

  txn(): TxnBuilder {
    return new TxnBuilder((req) => this.txnRequest(req));
  }

  compact(revision: bigint, physical = false): Promise<etcdserverpb.CompactionResponse> {
    return this.call("compact", (c, md, co, cb) => c.kv.compact({ revision, physical }, md, co, cb));
  }

  /** Maintenance.Status of the current endpoint (its revision, leader, version). */
  status(): Promise<etcdserverpb.StatusResponse> {
    return this.call("status", (c, md, co, cb) => c.maintenance.status({}, md, co, cb));
  }

  // -------------------------------------------------------------------------------------------
  // Lease

  async grant(ttlS: number, id = 0n): Promise<Lease> {
    const grantSentAtMs = this.clock.now();
    // The epoch of the attempt that was answered: a grant retried across a group switch belongs
    // to the group it was sent to last.
    let groupEpoch = this.pool.epoch;
    const res = await this.call<etcdserverpb.LeaseGrantResponse>("lease grant", (c, md, co, cb) => {
      groupEpoch = this.pool.epoch;
      c.lease.leaseGrant({ TTL: BigInt(Math.ceil(ttlS)), ID: id }, md, co, cb);
    });
    if (res.error !== "") throw new EtcdError(EtcdErrorCode.ETCD, `lease grant: ${res.error}`);
    publish(channels.leaseGranted, { leaseId: res.ID, ttlS: Number(res.TTL) });
    return { id: res.ID, ttlS: Number(res.TTL), grantSentAtMs, groupEpoch };
  }

  async revoke(id: bigint): Promise<void> {
    await this.call("lease revoke", (c, md, co, cb) => c.lease.leaseRevoke({ ID: id }, md, co, cb));
  }

  timeToLive(id: bigint, keys = false): Promise<etcdserverpb.LeaseTimeToLiveResponse> {
    return this.call("lease time-to-live", (c, md, co, cb) =>
      c.lease.leaseTimeToLive({ ID: id, keys }, md, co, cb),
    );
  }

  leases(): Promise<etcdserverpb.LeaseLeasesResponse> {
    return this.call("lease leases", (c, md, co, cb) => c.lease.leaseLeases({}, md, co, cb));
  }

  /** Keeps `lease` alive until closed or lost; listen to its `lost` event. */
  keepAlive(lease: Lease): LeaseKeeper {
    const keeper = new LeaseKeeper(
      lease.id,
      lease.ttlS,
      lease.grantSentAtMs,
      this.keepAliveTransport(),
      this.clock,
      this.logger,
    );
    this.keepers.add(keeper);
    const forget = () => this.keepers.delete(keeper);
    keeper.once("lost", forget);
    keeper.once("closed", forget);
    if (lease.groupEpoch !== undefined && lease.groupEpoch !== this.pool.epoch) {
      // Granted in a group the client has left since: it does not exist here. Lost once the
      // caller has had the chance to listen.
      const err = new EtcdError(
        EtcdErrorCode.GROUP_SWITCHED,
        `lease ${lease.id.toString(16)} was granted before a registry group switch`,
      );
      queueMicrotask(() => keeper.declareLost(err));
    }
    return keeper;
  }

  /**
   * One LeaseKeepAlive for `id`, for callers that renew on their own schedule (the mesher's
   * bridge renews a lease per heartbeat of an app). Resolves with the TTL granted, 0 when the
   * lease is gone (etcd answers TTL 0 for an unknown lease); rejects with UNAVAILABLE when no
   * answer comes within `timeoutMs`.
   */
  keepAliveOnce(id: bigint, timeoutMs = this.opts.requestTimeoutMs ?? 5_000): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      let settled = false;
      const stream = this.keepAliveTransport().open({
        onResponse: (res) => done(() => resolve(Number(res.TTL))),
        onError: (err) => done(() => reject(err)),
      });
      const timer = this.clock.setTimer(
        () =>
          done(() =>
            reject(
              new EtcdError(EtcdErrorCode.UNAVAILABLE, `lease keep-alive: no answer within ${timeoutMs} ms`),
            ),
          ),
        timeoutMs,
      );
      const done = (f: () => void): void => {
        if (settled) return;
        settled = true;
        timer.cancel();
        stream.close();
        f();
      };
      stream.send(id);
    });
  }

  private keepAliveTransport(): KeepAliveTransport {
    return {
      open: (handlers) => {
        let stream: ReturnType<etcdserverpb.LeaseClient["leaseKeepAlive"]> | undefined;
        let closed = false;
        let endpoint = "";
        const queued: bigint[] = [];
        // The token lookup is asynchronous; sends made meanwhile are queued.
        this.streamMetadata().then(
          (md) => {
            if (closed) return;
            const c = this.pool.current();
            endpoint = c.endpoint;
            stream = c.lease.leaseKeepAlive(md);
            // An answer still in flight on a closed stream belongs to a request the keeper has
            // forgotten; matching it to a newer send time would push the deadline too late.
            stream.on("data", (res: etcdserverpb.LeaseKeepAliveResponse) => {
              if (!closed) handlers.onResponse(res);
            });
            stream.on("error", (err) => {
              if (closed) return;
              const e = fromGrpcError(err, "lease keep-alive");
              if (isRetryable(e)) this.pool.advanceFrom(endpoint, e.message);
              handlers.onError(e);
            });
            stream.on("end", () => {
              if (!closed)
                handlers.onError(new EtcdError(EtcdErrorCode.UNAVAILABLE, "keep-alive stream ended"));
            });
            for (const id of queued.splice(0)) stream.write({ ID: id });
          },
          (err) => {
            if (!closed) handlers.onError(fromGrpcError(err, "lease keep-alive: metadata"));
          },
        );
        return {
          send: (id) => {
            if (stream === undefined) queued.push(id);
            else stream.write({ ID: id });
          },
          close: () => {
            closed = true;
            if (stream !== undefined) {
              stream.on("error", () => {});
              stream.cancel();
            }
          },
        };
      },
    };
  }

  // -------------------------------------------------------------------------------------------
  // Watch

  watch(o: WatchOptions, listener: WatchListener): Watcher {
    return this.watches.watch(o, listener);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const k of this.keepers) k.close();
    this.keepers.clear();
    this.watches.close();
    this.pool.close();
  }
}
