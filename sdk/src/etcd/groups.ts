// Registry groups: a primary etcd cluster and an optional standby cluster kept as hot standby.
//
// Design. The client (EtcdClient) holds one RegistryGroups instead of one EndpointPool. It has
// the pool's shape (current(), advanceFrom(), size), so every call, the watch stream and the
// keep-alive streams keep asking "which endpoint now?" exactly as before, and the answer comes
// from the pool of the group in use. Endpoint failover stays inside a group; moving between
// groups is a separate, slower decision:
//
// - A GroupMonitor probes both groups every probeIntervalMs with Maintenance.Status (cheap, no
//   auth needed, and it says whether the member has a leader), sent to every endpoint of a group
//   at once: the group answers if one member answers within probeTimeoutMs, with that latency.
//   The pure core (group-core.ts) turns outcomes into moves with hysteresis: N consecutive bad
//   primary probes (unreachable, or slower than latencyMsMax) to leave it, M good ones to return.
// - A move bumps `epoch` and calls the client's onSwitch, which makes everything built on the
//   old group follow: watchers are closed and told to re-list (revisions of two clusters are
//   unrelated, so a watch never resumes across groups by revision), lease keepers are declared
//   lost (the lease does not exist in the other cluster; the Registrar re-grants there and writes
//   its instances again), the auth token is dropped, and the move is reported by the client's
//   `group` getter, its 'group' event and the `sdk:registry:group` channel ({from, to, reason}).
// - Work started in one epoch and finished in another is detected by the epoch, not by luck:
//   a lease carries the epoch it was granted in (a keeper for an older one is lost at once), and
//   Discovery re-lists when a listing spanned a move.
//
// What is left behind: registrations in the group the client left are not deleted (it may be
// unreachable); nobody keeps their lease alive, so they expire after their TTL. A process uses one
// group at a time; processes that did not move keep seeing the other group's records until then.

import { type ChannelCredentials, type ChannelOptions, Metadata } from "@grpc/grpc-js";
import { channels, publish } from "./channels.js";
import type { Clock, Timer } from "./clock.js";
import { EtcdError, EtcdErrorCode, fromGrpcError } from "./errors.js";
import {
  checkGroupSwitchConfig,
  type GroupChange,
  type GroupName,
  type GroupState,
  type GroupSwitchConfig,
  initialGroupState,
  onProbe,
  type ProbeOutcome,
} from "./group-core.js";
import type { Logger } from "./logger.js";
import { type EndpointClients, EndpointPool } from "./pool.js";

export type { GroupChange, GroupName, GroupSwitchConfig, ProbeOutcome } from "./group-core.js";

/** The standby group of an EtcdClient, and how the client decides to use it. */
export interface StandbyOptions {
  /** host:port of each member of the standby cluster (disjoint from the primary's). */
  endpoints: readonly string[];
  /** etcd user and password on the standby; default: the primary's. */
  auth?: { username: string; password: string };
  /** TLS for the standby; default: the primary's. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  /** How often each group is probed. */
  probeIntervalMs?: number;
  /** How long an endpoint has to answer a probe; a group fails it when no endpoint answers in time. */
  probeTimeoutMs?: number;
  /** A primary probe slower than this counts as bad. */
  latencyMsMax?: number;
  /** Consecutive bad probes before the client leaves the group in use (N). */
  badProbesToSwitch?: number;
  /** Consecutive good primary probes before the client returns to the primary (M). */
  goodProbesToReturn?: number;
}

/** The surface of a pool the watch manager and the client's calls need. */
export interface PoolView {
  readonly size: number;
  current(): EndpointClients;
  advanceFrom(endpoint: string, reason: string): EndpointClients;
}

/**
 * Probes on a clock and feeds the core. One round probes both groups (in parallel), then feeds
 * the standby's outcome before the primary's, so a move to the standby is judged on a standby
 * probe of the same round. The next round starts probeIntervalMs after one ends: rounds never
 * overlap, however slow a group is.
 */
export class GroupMonitor {
  private state: GroupState = initialGroupState();
  private timer: Timer | undefined;
  private closed = false;

  constructor(
    private readonly clock: Clock,
    private readonly intervalMs: number,
    private readonly config: GroupSwitchConfig,
    private readonly probe: (group: GroupName) => Promise<ProbeOutcome>,
    private readonly onChange: (change: GroupChange) => void,
  ) {
    checkGroupSwitchConfig(config);
    if (!(intervalMs > 0)) throw new RangeError(`probeIntervalMs must be > 0, got ${intervalMs}`);
  }

  get active(): GroupName {
    return this.state.active;
  }

  /** The core's state, for tests and diagnostics. */
  get snapshot(): GroupState {
    return this.state;
  }

  start(): void {
    if (this.closed || this.timer !== undefined) return;
    this.timer = this.clock.setTimer(() => void this.round(), this.intervalMs);
  }

  private async round(): Promise<void> {
    this.timer = undefined;
    if (this.closed) return;
    // A probe that throws or rejects is a failed probe, never a stopped monitor.
    const settle = (group: GroupName): Promise<ProbeOutcome> => {
      let p: Promise<ProbeOutcome>;
      try {
        p = this.probe(group);
      } catch (err) {
        p = Promise.reject(err);
      }
      return p.catch(
        (err: unknown): ProbeOutcome => ({ ok: false, reason: String((err as Error)?.message ?? err) }),
      );
    };
    const [standby, primary] = await Promise.all([settle("standby"), settle("primary")]);
    if (this.closed) return;
    this.feed("standby", standby);
    this.feed("primary", primary);
    this.start();
  }

  /** Feeds one outcome (the round does it; tests may too). */
  feed(group: GroupName, outcome: ProbeOutcome): void {
    if (this.closed) return;
    const r = onProbe(this.state, this.config, group, outcome);
    this.state = r.state;
    if (r.change !== undefined) this.onChange(r.change);
  }

  close(): void {
    this.closed = true;
    this.timer?.cancel();
    this.timer = undefined;
  }
}

export interface RegistryGroupsOptions {
  endpoints: readonly string[];
  credentials: ChannelCredentials;
  standby?: StandbyOptions;
  standbyCredentials?: ChannelCredentials;
  grpcOptions: ChannelOptions;
  clock: Clock;
  logger: Logger;
  defaults: {
    probeIntervalMs: number;
    probeTimeoutMs: number;
    latencyMsMax: number;
    badProbesToSwitch: number;
    goodProbesToReturn: number;
  };
  /** Called after every move, once `active` and `epoch` say where the client is now. */
  onSwitch: (change: GroupChange) => void;
}

export class RegistryGroups implements PoolView {
  readonly primary: EndpointPool;
  readonly standby: EndpointPool | undefined;
  private readonly monitor: GroupMonitor | undefined;
  private activeName: GroupName = "primary";
  private epochValue = 0;
  private closed = false;

  constructor(private readonly opts: RegistryGroupsOptions) {
    this.primary = new EndpointPool(opts.endpoints, opts.credentials, opts.grpcOptions, opts.logger);
    const sb = opts.standby;
    if (sb === undefined) return;
    const shared = sb.endpoints.filter((e) => opts.endpoints.includes(e));
    if (shared.length > 0) {
      throw new EtcdError(
        EtcdErrorCode.BAD_REQUEST,
        `standby endpoints must differ from the primary's (both have ${shared.join(", ")})`,
      );
    }
    this.standby = new EndpointPool(
      sb.endpoints,
      opts.standbyCredentials ?? opts.credentials,
      opts.grpcOptions,
      opts.logger,
    );
    const d = opts.defaults;
    const probeTimeoutMs = sb.probeTimeoutMs ?? d.probeTimeoutMs;
    const standby = this.standby;
    this.monitor = new GroupMonitor(
      opts.clock,
      sb.probeIntervalMs ?? d.probeIntervalMs,
      {
        latencyMsMax: sb.latencyMsMax ?? d.latencyMsMax,
        badProbesToSwitch: sb.badProbesToSwitch ?? d.badProbesToSwitch,
        goodProbesToReturn: sb.goodProbesToReturn ?? d.goodProbesToReturn,
      },
      (g) => this.probe(g === "primary" ? this.primary : standby, probeTimeoutMs),
      (change) => this.switchTo(change),
    );
    this.monitor.start();
  }

  /** The group calls, watches and keep-alives go to now. */
  get active(): GroupName {
    return this.activeName;
  }

  /** Bumped on every move between groups: revisions and leases of one epoch mean nothing in another. */
  get epoch(): number {
    return this.epochValue;
  }

  get hasStandby(): boolean {
    return this.standby !== undefined;
  }

  private activePool(): EndpointPool {
    return this.activeName === "standby" && this.standby !== undefined ? this.standby : this.primary;
  }

  get size(): number {
    return this.activePool().size;
  }

  current(): EndpointClients {
    return this.activePool().current();
  }

  /** Endpoint failover inside the group in use; a break reported from the other group is ignored. */
  advanceFrom(endpoint: string, reason: string): EndpointClients {
    return this.activePool().advanceFrom(endpoint, reason);
  }

  /**
   * One probe of a group: Maintenance.Status to every endpoint at once, each with timeoutMs. The
   * group answers if any member answers with a leader, and its latency is the first such answer's
   * (a dead or partitioned member neither fails the group nor slows the probe down). It fails only
   * when every endpoint failed: the group is unreachable.
   */
  private probe(pool: EndpointPool, timeoutMs: number): Promise<ProbeOutcome> {
    if (this.closed) return Promise.resolve({ ok: false, reason: "closed" });
    const endpoints = pool.endpoints;
    const startMs = this.opts.clock.now();
    return new Promise<ProbeOutcome>((resolve) => {
      const reasons: string[] = [];
      let settled = false;
      const fail = (endpoint: string, why: string) => {
        reasons.push(`${endpoint}: ${why}`);
        if (!settled && reasons.length === endpoints.length) {
          settled = true;
          resolve({ ok: false, reason: reasons.join("; ") });
        }
      };
      for (const endpoint of endpoints) {
        let c: EndpointClients;
        try {
          c = pool.clientsFor(endpoint);
        } catch (err) {
          fail(endpoint, (err as Error).message);
          continue;
        }
        c.maintenance.status({}, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
          if (err) return fail(endpoint, fromGrpcError(err, "status").message);
          if (res.leader === 0n) return fail(endpoint, "no leader");
          if (settled) return;
          settled = true;
          resolve({ ok: true, latencyMs: this.opts.clock.now() - startMs });
        });
      }
    });
  }

  private switchTo(change: GroupChange): void {
    if (this.closed || change.to === this.activeName) return;
    this.activeName = change.to;
    this.epochValue += 1;
    this.opts.logger.warn(change, "etcd: switching registry group");
    publish(channels.group, change);
    this.opts.onSwitch(change);
  }

  /** The monitor's state (streaks, last answers), for diagnostics. */
  get monitorState(): GroupState | undefined {
    return this.monitor?.snapshot;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.monitor?.close();
    this.primary.close();
    this.standby?.close();
  }
}
