// Watches multiplexed on one bidi Watch stream (etcd clientv3's watchGrpcStream, simplified).
//
// - Creates are answered in order on a stream, so pending creates match `created` answers FIFO;
//   with client-chosen ids (etcd >= 3.4) the id is also checked.
// - Events are delivered in order, one response at a time; a fragmented response is buffered
//   until its last fragment, so a listener always sees whole revisions.
// - On ANY stream break (error, end, no answer within the idle timeout) every watcher is told it
//   is disconnected, the stream is re-opened on the next endpoint with back-off, and each watcher
//   is re-created from its last delivered revision + 1. Events at or below that revision are
//   dropped on arrival, so a resumed watcher sees no gap and no duplicate.
// - When the server cancels a watcher because its start revision was compacted it reports
//   `compactRevision`: the watcher is closed and its listener told to re-list.
// - The stream carries `hasleader: true`, so a member cut off from the quorum ends it with
//   "etcdserver: no leader" and the watchers move to another member.
// - Liveness: a progress request is sent every progressIntervalMs; a stream silent for
//   idleTimeoutMs (a paused member, a black-holed link) is torn down and re-opened.

import type { ClientDuplexStream, Metadata } from "@grpc/grpc-js";
import { etcdserverpb, type mvccpb } from "@regmesh/proto";
import { channels, publish } from "./channels.js";
import { backoffMs, type Clock, type Timer } from "./clock.js";
import { EtcdError, EtcdErrorCode, fromGrpcError } from "./errors.js";
import { type Bytes, prefixEnd, toBuffer } from "./keys.js";
import { BACKOFF_INITIAL_MS, BACKOFF_MAX_MS, WATCHERS_MAX } from "./limits.js";
import type { Logger } from "./logger.js";
import type { EndpointPool } from "./pool.js";

export interface WatchOptions {
  key: Bytes;
  prefix?: boolean;
  rangeEnd?: Bytes;
  /** First revision to deliver; 0 or absent means "from now". */
  startRevision?: bigint;
  prevKv?: boolean;
  progressNotify?: boolean;
}

export interface WatchListener {
  /** Events of one or more whole revisions, in revision order. `revision` is the last one's. */
  events(events: mvccpb.Event[], revision: bigint): void;
  /** The watcher's resume revision was compacted; it is closed. Re-list, then watch again. */
  compacted?(compactRevision: bigint): void;
  /** The server canceled the watcher for another reason; it is closed. */
  canceled?(err: EtcdError): void;
  /**
   * The client moved to another registry group (groups.ts), whose revisions are unrelated to the
   * ones this watcher saw; it is closed. Re-list, then watch again from the listing's revision.
   * Without this callback, `canceled` is called with SDK_ERR_GROUP_SWITCHED.
   */
  groupSwitched?(err: EtcdError): void;
  /** The watcher is (re-)established on a stream. */
  connected?(endpoint: string): void;
  /** The stream broke; the watcher will resume by itself. */
  disconnected?(err: EtcdError): void;
  /** The server says every event up to `revision` has been delivered. */
  progress?(revision: bigint): void;
}

type WatcherState = "pending" | "created" | "disconnected" | "closed";

export class Watcher {
  state: WatcherState = "disconnected";
  serverId: bigint | undefined;
  /** Last revision whose events were delivered (or known to be empty for this watcher). */
  lastRevision: bigint;
  fragments: mvccpb.Event[] = [];
  /** Re-opens of the stream this watcher caused after a refusal that may be a stale token. */
  authRetries = 0;
  /** The listener was told about the current outage (told once, however many reconnects fail). */
  toldDisconnected = false;

  constructor(
    readonly id: number,
    readonly key: Buffer,
    readonly rangeEnd: Buffer,
    readonly startRevision: bigint,
    readonly opts: WatchOptions,
    readonly listener: WatchListener,
    private readonly onCancel: (w: Watcher) => void,
  ) {
    this.lastRevision = startRevision > 0n ? startRevision - 1n : 0n;
  }

  /** The revision to ask for when (re)creating: resume right after what was delivered. */
  nextStartRevision(): bigint {
    if (this.lastRevision > 0n) return this.lastRevision + 1n;
    return this.startRevision;
  }

  get closed(): boolean {
    return this.state === "closed";
  }

  cancel(): void {
    if (this.state === "closed") return;
    this.onCancel(this);
  }
}

export interface WatchManagerOptions {
  /**
   * Called when a watch is refused with "permission denied" while the client authenticates: the
   * stream's token may be stale (etcd reads it once, when the stream opens). The client drops its
   * token; the stream is re-opened once with a fresh one before the refusal is believed.
   */
  onAuthRefused?: () => boolean;
  progressIntervalMs: number;
  idleTimeoutMs: number;
  /** Send client-chosen watch ids (etcd >= 3.4); otherwise the server picks them. */
  clientWatchIds: boolean;
}

export class WatchManager {
  private stream: ClientDuplexStream<etcdserverpb.WatchRequest, etcdserverpb.WatchResponse> | undefined;
  private streamEndpoint = "";
  private connecting = false;
  private readonly watchers = new Map<number, Watcher>();
  private readonly byServerId = new Map<bigint, Watcher>();
  private pendingCreates: Watcher[] = [];
  private nextId = 1;
  private reconnectAttempt = 0;
  private reconnectTimer: Timer | undefined;
  private livenessTimer: Timer | undefined;
  private lastReceivedMs = 0;
  private closed = false;

  constructor(
    private readonly pool: Pick<EndpointPool, "current" | "advanceFrom">,
    private readonly metadata: () => Promise<Metadata>,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly opts: WatchManagerOptions,
  ) {}

  get size(): number {
    return this.watchers.size;
  }

  watch(o: WatchOptions, listener: WatchListener): Watcher {
    if (this.closed) throw new EtcdError(EtcdErrorCode.CLOSED, "etcd client is closed");
    if (this.watchers.size >= WATCHERS_MAX) {
      throw new EtcdError(EtcdErrorCode.BAD_REQUEST, `at most ${WATCHERS_MAX} watchers per client`);
    }
    const key = toBuffer(o.key);
    const rangeEnd = o.prefix
      ? prefixEnd(key)
      : o.rangeEnd === undefined
        ? Buffer.alloc(0)
        : toBuffer(o.rangeEnd);
    const w = new Watcher(this.nextId++, key, rangeEnd, o.startRevision ?? 0n, o, listener, (x) =>
      this.cancelWatcher(x),
    );
    this.watchers.set(w.id, w);
    if (this.stream !== undefined) this.sendCreate(w);
    else this.ensureStream();
    return w;
  }

  private ensureStream(): void {
    if (this.stream !== undefined || this.connecting || this.reconnectTimer !== undefined || this.closed)
      return;
    void this.connect();
  }

  private async connect(): Promise<void> {
    this.connecting = true;
    let md: Metadata;
    try {
      md = await this.metadata();
    } catch (err) {
      this.connecting = false;
      this.scheduleReconnect(fromGrpcError(err, "watch: metadata"));
      return;
    }
    this.connecting = false;
    if (this.closed || this.watchers.size === 0) return;
    const c = this.pool.current();
    const stream = c.watch.watch(md);
    this.stream = stream;
    this.streamEndpoint = c.endpoint;
    this.lastReceivedMs = this.clock.now();
    stream.on("data", (res: etcdserverpb.WatchResponse) => {
      if (this.stream !== stream) return;
      this.lastReceivedMs = this.clock.now();
      try {
        this.onResponse(res);
      } catch (err) {
        this.logger.error({ err }, "watch: listener threw");
      }
    });
    stream.on("error", (err) => {
      if (this.stream === stream) this.onBroken(fromGrpcError(err, "watch stream"));
    });
    stream.on("end", () => {
      if (this.stream === stream) {
        this.onBroken(new EtcdError(EtcdErrorCode.UNAVAILABLE, "watch stream ended by the server"));
      }
    });
    for (const w of this.watchers.values()) if (!w.closed) this.sendCreate(w);
    this.armLiveness();
  }

  private sendCreate(w: Watcher): void {
    w.state = "pending";
    this.pendingCreates.push(w);
    const createRequest = etcdserverpb.WatchCreateRequest.create({
      key: w.key,
      rangeEnd: w.rangeEnd,
      startRevision: w.nextStartRevision(),
      prevKv: w.opts.prevKv ?? false,
      progressNotify: w.opts.progressNotify ?? false,
      fragment: true,
      watchId: this.opts.clientWatchIds ? BigInt(w.id) : 0n,
    });
    this.stream!.write({ createRequest });
  }

  private onResponse(res: etcdserverpb.WatchResponse): void {
    if (res.created) {
      const w = this.pendingCreates.shift();
      if (w === undefined) return;
      if (this.opts.clientWatchIds && res.watchId !== BigInt(w.id)) {
        this.logger.warn(
          { want: w.id, got: res.watchId.toString() },
          "watch: created answer for an unexpected id",
        );
      }
      this.reconnectAttempt = 0;
      if (w.closed) {
        if (!res.canceled) this.stream?.write({ cancelRequest: { watchId: res.watchId } });
        return;
      }
      w.serverId = res.watchId;
      this.byServerId.set(res.watchId, w);
      if (res.canceled) {
        if (
          (res.cancelReason.includes("invalid auth token") ||
            res.cancelReason.includes("permission denied")) &&
          w.authRetries === 0 &&
          this.opts.onAuthRefused?.() === true
        ) {
          w.authRetries += 1;
          this.onBroken(
            new EtcdError(EtcdErrorCode.INVALID_AUTH_TOKEN, "watch refused; refreshing the token"),
          );
          return;
        }
        this.onCanceled(w, res);
        return;
      }
      w.authRetries = 0;
      w.state = "created";
      w.toldDisconnected = false;
      if (w.startRevision === 0n && w.lastRevision === 0n && res.header !== undefined) {
        // A watch "from now" has seen nothing up to the revision it was created at.
        w.lastRevision = res.header.revision;
      }
      w.listener.connected?.(this.streamEndpoint);
      return;
    }
    if (res.watchId === -1n) {
      // An answer to a stream-wide progress request: only liveness, already recorded.
      return;
    }
    const w = this.byServerId.get(res.watchId);
    if (w === undefined || w.closed) return;
    if (res.canceled) {
      this.onCanceled(w, res);
      return;
    }
    if (res.fragment) {
      w.fragments.push(...res.events);
      return;
    }
    const all = w.fragments.length > 0 ? [...w.fragments, ...res.events] : res.events;
    w.fragments = [];
    if (all.length === 0) {
      // Progress notify: etcd sends it only to a synced watcher, so nothing up to it is missing.
      const rev = res.header?.revision ?? 0n;
      if (rev > w.lastRevision) w.lastRevision = rev;
      w.listener.progress?.(rev);
      return;
    }
    const fresh = all.filter((e) => (e.kv?.modRevision ?? 0n) > w.lastRevision);
    if (fresh.length === 0) return;
    const rev = fresh[fresh.length - 1]!.kv!.modRevision;
    w.lastRevision = rev;
    w.listener.events(fresh, rev);
  }

  private onCanceled(w: Watcher, res: etcdserverpb.WatchResponse): void {
    this.forget(w);
    if (res.compactRevision > 0n) {
      publish(channels.watchCompacted, { watcherId: w.id, compactRevision: res.compactRevision });
      w.listener.compacted?.(res.compactRevision);
      return;
    }
    w.listener.canceled?.(
      new EtcdError(EtcdErrorCode.WATCH_CANCELED, `watch canceled by the server: ${res.cancelReason}`, {
        details: res.cancelReason,
      }),
    );
  }

  private forget(w: Watcher): void {
    w.state = "closed";
    this.watchers.delete(w.id);
    if (w.serverId !== undefined && this.byServerId.get(w.serverId) === w) this.byServerId.delete(w.serverId);
    if (this.watchers.size === 0) this.closeStream();
  }

  private cancelWatcher(w: Watcher): void {
    const wasCreated = w.state === "created";
    const serverId = w.serverId;
    this.forget(w);
    if (wasCreated && serverId !== undefined && this.stream !== undefined) {
      this.stream.write({ cancelRequest: { watchId: serverId } });
    }
  }

  private onBroken(err: EtcdError): void {
    const endpoint = this.streamEndpoint;
    this.closeStream();
    for (const w of this.watchers.values()) {
      w.fragments = [];
      w.state = "disconnected";
      if (!w.toldDisconnected) {
        w.toldDisconnected = true;
        try {
          w.listener.disconnected?.(err);
        } catch (e) {
          this.logger.error({ err: e }, "watch: listener threw");
        }
      }
    }
    this.pool.advanceFrom(endpoint, err.message);
    this.scheduleReconnect(err, endpoint);
  }

  private scheduleReconnect(err: EtcdError, endpoint = this.streamEndpoint): void {
    if (this.closed || this.reconnectTimer !== undefined) return;
    const delayMs = backoffMs(this.reconnectAttempt++, BACKOFF_INITIAL_MS, BACKOFF_MAX_MS);
    this.logger.debug({ endpoint, err: err.message, delayMs }, "watch: reconnecting");
    publish(channels.watchReconnect, {
      endpoint,
      attempt: this.reconnectAttempt,
      delayMs,
      reason: err.message,
    });
    this.reconnectTimer = this.clock.setTimer(() => {
      this.reconnectTimer = undefined;
      this.ensureStream();
    }, delayMs);
  }

  private closeStream(): void {
    this.livenessTimer?.cancel();
    this.livenessTimer = undefined;
    const s = this.stream;
    this.stream = undefined;
    this.pendingCreates = [];
    this.byServerId.clear();
    if (s !== undefined) {
      s.removeAllListeners("data");
      s.on("error", () => {}); // a cancelled call reports CANCELLED; nobody is listening any more.
      s.cancel();
    }
  }

  private armLiveness(): void {
    this.livenessTimer?.cancel();
    this.livenessTimer = this.clock.setTimer(() => this.checkLiveness(), this.opts.progressIntervalMs);
  }

  private checkLiveness(): void {
    this.livenessTimer = undefined;
    if (this.stream === undefined) return;
    const silentMs = this.clock.now() - this.lastReceivedMs;
    if (silentMs >= this.opts.idleTimeoutMs) {
      this.onBroken(
        new EtcdError(EtcdErrorCode.TIMEOUT, `watch stream silent for ${Math.round(silentMs)} ms`),
      );
      return;
    }
    this.stream.write({ progressRequest: {} });
    this.armLiveness();
  }

  /**
   * Closes every watcher and tells it to re-list: the client moved to another registry group, and
   * a watch must never resume there by a revision of this one. The stream is closed; the next
   * watch opens one in the group now in use.
   */
  resetAll(err: EtcdError): void {
    if (this.closed) return;
    const all = [...this.watchers.values()];
    this.reconnectTimer?.cancel();
    this.reconnectTimer = undefined;
    this.reconnectAttempt = 0;
    for (const w of all) this.forget(w);
    this.closeStream();
    for (const w of all) {
      try {
        if (w.listener.groupSwitched !== undefined) w.listener.groupSwitched(err);
        else w.listener.canceled?.(err);
      } catch (e) {
        this.logger.error({ err: e }, "watch: listener threw");
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reconnectTimer?.cancel();
    this.reconnectTimer = undefined;
    for (const w of this.watchers.values()) w.state = "closed";
    this.watchers.clear();
    this.closeStream();
  }
}
