// The routing shell (DESIGN.md "Data paths: Call"): what the SDK's integrations (grpc-js
// resolver and LB policy, undici dispatcher), the mesher's proxy and its bridge all call.
//
// Per routed service it keeps: the discovery snapshot (an immutable array, so the core's
// per-snapshot preparation is memoised), the policy in force (PolicyStore), the routing core's
// RouterState, outlier ejection state with its timer, a retry budget and a token bucket. Per
// instance in use: an opossum breaker (breakers.ts).
//
// A call is a loop of tries. Each try: `pick()` (sync: the core decides on the snapshot in
// hand) gives an Attempt; the caller does the I/O and calls `attempt.end(outcome)`, which feeds
// the breaker, ejection and the P2C load tracker; then `retry(service, tries, outcome)` says
// whether another try may go (policy conditions, attempt limit, retry budget). A retry avoids
// the instances already tried when others are available. `call()` runs that loop for callers
// whose tries are plain promises.
//
// Rate limits: a policy's `rateLimit` is a token bucket per process. Here it limits this
// process's calls to the service (client side); the mesher also applies it to what its own
// instance admits (server side, in the mesher).

import { onRequestCancel, onRequestEnd, onRequestStart } from "../core/balancers/p2c-peak-ewma.js";
import {
  createEjectionState,
  type EjectionEvent,
  type EjectionState,
  ejectedIds,
  ejectionConfig,
  nextDeadlineMs,
  onOutcome,
  syncHosts,
  tick,
} from "../core/ejection.js";
import type { Instance } from "../core/instance.js";
import { PROTECT_THRESHOLD_DEFAULT } from "../core/limits.js";
import type { Policy, RetryPolicy } from "../core/policy.js";
import { isPanic } from "../core/protect.js";
import type { Rand } from "../core/random.js";
import { createTokenBucket, type TokenBucket, tryAcquire } from "../core/rate-limit.js";
import {
  breakerOptions,
  type CallOutcome,
  decideRetry,
  GRPC_RESOURCE_EXHAUSTED,
  GRPC_UNAVAILABLE,
  type RetryDecision,
  rateLimitParams,
} from "../core/retry.js";
import { createRetryBudget, type RetryBudgetState, recordRequest } from "../core/retry-budget.js";
import {
  createRouterState,
  type RouteDecision,
  type RouteRequest,
  type RouterState,
  route,
} from "../core/route.js";
import { channels, publish } from "../etcd/channels.js";
import type { Clock, Timer } from "../etcd/clock.js";
import type { Logger } from "../etcd/logger.js";
import type { Discovery, ServiceSnapshot } from "../registry/discovery.js";
import { type BreakerInfo, BreakerOpenError, Breakers } from "./breakers.js";
import type { PolicyState, PolicyStore } from "./policies.js";

/** Why no instance was given. Mirrors the failure reasons the mesher reports to apps. */
export type NoPickReason =
  | "no-instance"
  | "breaker-open"
  | "rate-limited"
  | "caller-not-allowed"
  | "not-resolved";

export interface Attempt {
  readonly service: string;
  readonly instance: Instance;
  readonly decision: RouteDecision;
  /** The route's or policy's timeout for the whole call, if any. */
  readonly timeoutMs: number | undefined;
  /** The policy's per-try timeout, if any. */
  readonly perTryTimeoutMs: number | undefined;
  /** Ends the try: feeds breaker, ejection and load. Idempotent. Returns whether it counted as a failure. */
  end(outcome: CallOutcome): boolean;
  /**
   * Releases a try that never went out (the caller picked, then did not send): no outcome is
   * recorded for ejection or latency. opossum has no "neither" outcome, so the breaker counts
   * it as a success. Idempotent, and a no-op after end().
   */
  cancel(): void;
}

export type PickResult =
  | { readonly ok: true; readonly attempt: Attempt }
  | {
      readonly ok: false;
      readonly reason: NoPickReason;
      readonly message: string;
      readonly decision?: RouteDecision;
    };

/** Which outcomes count against an instance (breaker, ejection). */
export type OutcomeClassifier = (o: CallOutcome) => boolean;

/**
 * Default: no response at all, a timeout, a 5xx other than 501/505 (the instance said it
 * cannot do this, not that it is broken), gRPC UNAVAILABLE, INTERNAL, UNKNOWN, DEADLINE_EXCEEDED,
 * RESOURCE_EXHAUSTED. 4xx and other gRPC codes are the caller's problem, not the instance's.
 */
export const defaultClassifier: OutcomeClassifier = (o) => {
  switch (o.kind) {
    case "response":
      return o.status >= 500 && o.status !== 501 && o.status !== 505;
    case "grpc":
      return (
        o.code === GRPC_UNAVAILABLE ||
        o.code === 13 ||
        o.code === 2 ||
        o.code === 4 ||
        o.code === GRPC_RESOURCE_EXHAUSTED
      );
    default:
      return true;
  }
};

export interface MeshOptions {
  discovery: Discovery;
  policies: PolicyStore;
  clock: Clock;
  /** This process's service, the `caller` of its requests (allow-lists, route matches). */
  caller?: string;
  /** The zone this process runs in; enables zone-aware routing where the policy asks. */
  localZone?: string;
  /** Random source for splits and balancers (default: seeded from Math.random once). */
  rand?: Rand;
  classify?: OutcomeClassifier;
  breakersMax?: number;
  logger: Logger;
}

/**
 * Hold after a connection-level failure; doubled per failure in a row, capped. Long enough that
 * a crashed instance gets no probe before its lease expires (registrations use TTLs of seconds):
 * the registry, not a probe, says when it is gone; a re-registration (a restarted instance) ends
 * the hold at once. The protect threshold keeps a hold from emptying a service.
 */
export const QUARANTINE_BASE_MS = 10_000;
export const QUARANTINE_MAX_MS = 60_000;

/** How long instances that vanished in a mass removal stay routable (protect threshold). */
export const PROTECT_HOLD_MS = 30_000;

class Routed {
  snapshot: ServiceSnapshot | undefined;
  /** What routing uses: the snapshot's instances, plus held ones after a mass removal. */
  routable: readonly Instance[] = [];
  /** Instances that left the registry recently: id -> instance and when (for protect). */
  readonly removed = new Map<string, { inst: Instance; atMs: number }>();
  holdTimer: Timer | undefined;
  /** Instances held out after a connection-level failure: id -> until (ms) and failures in a row. */
  readonly quarantine = new Map<string, { untilMs: number; failures: number }>();
  policy: PolicyState;
  readonly router: RouterState;
  ejection: EjectionState;
  ejectionKey: string;
  ejectionTimer: Timer | undefined;
  ejectionAtMs = 0;
  budget: RetryBudgetState;
  budgetKey: string;
  bucket: TokenBucket | undefined;
  bucketKey = "";
  readonly unsubscribe: (() => void)[] = [];
  readonly ready: Promise<void>;
  markReady!: () => void;
  lastUsedMs: number;

  constructor(
    readonly service: string,
    policy: PolicyState,
    localZone: string | undefined,
    nowMs: number,
  ) {
    this.policy = policy;
    this.router = createRouterState(localZone === undefined ? {} : { localZone });
    this.ejectionKey = JSON.stringify(policy.policy.outlierDetection ?? {});
    this.ejection = createEjectionState(ejectionConfig(policy.policy.outlierDetection ?? {}), nowMs);
    this.budgetKey = JSON.stringify(policy.policy.retries?.budget ?? {});
    this.budget = createRetryBudget(policy.policy.retries?.budget ?? {}, nowMs);
    this.ready = new Promise((r) => (this.markReady = r));
    this.lastUsedMs = nowMs;
  }
}

const EMPTY: ReadonlySet<string> = new Set();

function union(a: ReadonlySet<string> | undefined, b: ReadonlySet<string> | undefined): ReadonlySet<string> {
  if (a === undefined || a.size === 0) return b ?? EMPTY;
  if (b === undefined || b.size === 0) return a;
  const u = new Set(a);
  for (const x of b) u.add(x);
  return u;
}

export class Mesh {
  private readonly services = new Map<string, Routed>();
  private readonly breakers: Breakers;
  private readonly clock: Clock;
  private readonly rand: Rand;
  private readonly classify: OutcomeClassifier;
  private closed = false;

  constructor(private readonly opts: MeshOptions) {
    this.clock = opts.clock;
    this.rand = opts.rand ?? Math.random;
    this.classify = opts.classify ?? defaultClassifier;
    this.breakers = new Breakers(opts.clock, opts.breakersMax);
  }

  get caller(): string | undefined {
    return this.opts.caller;
  }

  /** Starts tracking `service` (instances and policy) and waits until both were loaded once. */
  async ready(service: string, timeoutMs = 5_000): Promise<void> {
    const r = this.routed(service);
    let t: Timer | undefined;
    await Promise.race([r.ready, new Promise<void>((res) => (t = this.clock.setTimer(res, timeoutMs)))]);
    t?.cancel();
  }

  /** The snapshot routing uses for `service` (undefined until its first load). */
  snapshot(service: string): ServiceSnapshot | undefined {
    return this.services.get(service)?.snapshot;
  }

  /**
   * Starts tracking `service` and calls `listener` with every new snapshot once routing uses it
   * (the integrations' resolvers publish addresses from it). Returns the unsubscribe function.
   */
  watchSnapshot(service: string, listener: (snapshot: ServiceSnapshot) => void): () => void {
    this.routed(service); // subscribes the mesh first, so it has the snapshot when `listener` runs
    return this.opts.discovery.watch(service, (snap) => {
      if (!this.closed) listener(snap);
    });
  }

  policy(service: string): PolicyState {
    return this.routed(service).policy;
  }

  tracked(): string[] {
    return [...this.services.keys()].sort();
  }

  /**
   * Picks an instance for one try (sync; call ready() first for a service never routed).
   * `exclude`: instances already tried by this call (avoided while others are available).
   */
  pick(service: string, req: RouteRequest, exclude?: ReadonlySet<string>): PickResult {
    const r = this.routed(service);
    const now = this.clock.now();
    r.lastUsedMs = now;
    const snap = r.snapshot;
    if (snap === undefined) {
      return { ok: false, reason: "not-resolved", message: `service ${service} is not resolved yet` };
    }
    const policy = r.policy.policy;
    if (policy.rateLimit !== undefined) {
      const k = `${policy.rateLimit.requestsPerSecond}/${policy.rateLimit.burst ?? ""}`;
      if (r.bucket === undefined || r.bucketKey !== k) {
        const p = rateLimitParams(policy.rateLimit);
        r.bucket = createTokenBucket(p.ratePerSecond, p.burst, now);
        r.bucketKey = k;
      }
      const a = tryAcquire(r.bucket, now);
      if (!a.ok) {
        return {
          ok: false,
          reason: "rate-limited",
          message: `calls to ${service} are over ${policy.rateLimit.requestsPerSecond}/s (policy rateLimit)`,
        };
      }
    }
    const request = this.withCaller(req);
    const open = union(this.breakers.open(service), this.quarantined(r, now));
    const ejected = ejectedIds(r.ejection);
    let d = route(policy, request, r.routable, r.router, now, this.rand, {
      ejected,
      breakerOpen: union(open, exclude),
      explain: false,
    });
    if (d.instance === undefined && exclude !== undefined && exclude.size > 0) {
      d = route(policy, request, r.routable, r.router, now, this.rand, {
        ejected,
        breakerOpen: open,
        explain: false,
      });
    }
    const inst = d.instance;
    if (inst === undefined) {
      if (d.reason === "caller-not-allowed") {
        return {
          ok: false,
          reason: d.reason,
          message: `caller ${request.caller ?? "(unknown)"} is not allowed to call ${service}`,
          decision: d,
        };
      }
      const reason: NoPickReason = open.size > 0 ? "breaker-open" : "no-instance";
      return {
        ok: false,
        reason,
        message:
          d.reason === "subset-empty"
            ? `service ${service}: subset ${d.subset} has no instances`
            : `service ${service}: no available instance (${snap.instances.length} known, ${d.skippedTotal} excluded)`,
        decision: d,
      };
    }
    let chosen = inst;
    let end = this.breakers.begin(service, inst.id, breakerOptions(policy.breaker));
    if (end instanceof BreakerOpenError) {
      // Opened between the decision and now (or a half-open trial is running).
      if (!d.protect) {
        if (exclude?.has(inst.id) === true) {
          return { ok: false, reason: "breaker-open", message: end.message, decision: d };
        }
        const ex = new Set(exclude ?? []);
        ex.add(inst.id);
        return this.pick(service, req, ex);
      }
      // Protect mode ignores exclusions, so route() may pick an instance whose breaker refuses
      // every time: take the next instance of the set whose breaker lets the try go.
      const all = r.routable;
      const start = all.indexOf(inst);
      let found: { inst: Instance; end: (failed: boolean) => void } | undefined;
      for (let k = 1; k < all.length && found === undefined; k++) {
        const cand = all[(start + k) % all.length]!;
        if (exclude?.has(cand.id) === true) continue;
        const e = this.breakers.begin(service, cand.id, breakerOptions(policy.breaker));
        if (!(e instanceof BreakerOpenError)) found = { inst: cand, end: e };
      }
      if (found === undefined)
        return { ok: false, reason: "breaker-open", message: end.message, decision: d };
      chosen = found.inst;
      end = found.end;
    }
    const breakerEnd = end;
    recordRequest(r.budget, now);
    onRequestStart(r.router.load, chosen.id, now);
    const started = now;
    let ended = false;
    let failed = false;
    return {
      ok: true,
      attempt: {
        service,
        instance: chosen,
        decision: d,
        timeoutMs: d.timeoutMs ?? policy.timeoutMs,
        perTryTimeoutMs: policy.retries?.perTryTimeoutMs,
        cancel: () => {
          if (ended) return;
          ended = true;
          breakerEnd(false);
          onRequestCancel(r.router.load, chosen.id);
        },
        end: (outcome) => {
          if (ended) return failed;
          ended = true;
          failed = this.classify(outcome);
          breakerEnd(failed);
          const t = this.clock.now();
          onRequestEnd(r.router.load, chosen.id, t, Math.max(0, t - started));
          this.quarantineOutcome(r, chosen.id, outcome, t);
          this.ejectionEvents(r, onOutcome(r.ejection, chosen.id, t, !failed));
          return failed;
        },
      },
    };
  }

  /**
   * The request with this process's service as its caller when it names none. Built field by
   * field: a spread of requests of different shapes takes V8's slow clone path (~1 us a call).
   */
  private withCaller(req: RouteRequest): RouteRequest {
    const caller = this.opts.caller;
    if (req.caller !== undefined || caller === undefined) return req;
    return { method: req.method, path: req.path, headers: req.headers, caller, hashKey: req.hashKey };
  }

  /**
   * After try number `tries` ended with `outcome`: may another try go? `fallback` is the retry
   * policy used when the service's policy has none (the mesher's default for idempotent calls).
   */
  retry(service: string, tries: number, outcome: CallOutcome, fallback?: RetryPolicy): RetryDecision {
    const r = this.routed(service);
    return decideRetry(r.policy.policy.retries ?? fallback, tries, outcome, r.budget, this.clock.now());
  }

  /** Records an outcome observed elsewhere (the bridge's `report`): breaker and ejection. */
  report(service: string, instanceId: string, outcome: CallOutcome): void {
    const r = this.routed(service);
    const failed = this.classify(outcome);
    const end = this.breakers.begin(service, instanceId, breakerOptions(r.policy.policy.breaker));
    if (!(end instanceof BreakerOpenError)) end(failed);
    this.quarantineOutcome(r, instanceId, outcome, this.clock.now());
    this.ejectionEvents(r, onOutcome(r.ejection, instanceId, this.clock.now(), !failed));
  }

  /** The full decision for `req`, with every skipped instance and why (nothing is consumed). */
  explain(service: string, req: RouteRequest): RouteDecision | undefined {
    const r = this.routed(service);
    if (r.snapshot === undefined) return undefined;
    const request = this.withCaller(req);
    const now = this.clock.now();
    return route(r.policy.policy, request, r.routable, r.router, now, this.rand, {
      ejected: ejectedIds(r.ejection),
      breakerOpen: union(this.breakers.open(service), this.quarantined(r, now)),
      explain: true,
    });
  }

  breakerStates(): BreakerInfo[] {
    return this.breakers.list();
  }

  /** Instances of `service` held out after a connection-level failure, and until when. */
  quarantine(service: string): { instanceId: string; forMs: number }[] {
    const r = this.services.get(service);
    if (r === undefined) return [];
    const now = this.clock.now();
    return [...r.quarantine]
      .filter(([, q]) => q.untilMs > now)
      .map(([instanceId, q]) => ({ instanceId, forMs: q.untilMs - now }));
  }

  ejected(service: string): string[] {
    const r = this.services.get(service);
    return r === undefined ? [] : [...ejectedIds(r.ejection)].sort();
  }

  /**
   * Runs a whole call: picks, runs `tryOnce` on the instance, classifies with `outcomeOf`,
   * retries as the policy allows. Resolves with the last try's result; rejects with a
   * NoInstanceError when no instance could be picked.
   */
  async call<T>(
    service: string,
    req: RouteRequest,
    tryOnce: (attempt: Attempt) => Promise<T>,
    outcomeOf: (result: { ok: true; value: T } | { ok: false; error: unknown }) => CallOutcome,
  ): Promise<T> {
    await this.ready(service);
    const tried = new Set<string>();
    for (let tries = 1; ; tries++) {
      const p = this.pick(service, req, tried);
      if (!p.ok) throw new NoInstanceError(service, p.reason, p.message);
      tried.add(p.attempt.instance.id);
      let result: { ok: true; value: T } | { ok: false; error: unknown };
      try {
        result = { ok: true, value: await tryOnce(p.attempt) };
      } catch (error) {
        result = { ok: false, error };
      }
      const outcome = outcomeOf(result);
      const failed = p.attempt.end(outcome);
      if (!failed || !this.retry(service, tries, outcome).retry) {
        if (result.ok) return result.value;
        throw result.error;
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const r of this.services.values()) {
      r.ejectionTimer?.cancel();
      r.holdTimer?.cancel();
      for (const u of r.unsubscribe) u();
    }
    this.services.clear();
    this.breakers.close();
  }

  // -------------------------------------------------------------------------------------------

  private routed(service: string): Routed {
    let r = this.services.get(service);
    if (r !== undefined) return r;
    const now = this.clock.now();
    r = new Routed(service, this.opts.policies.get(service), this.opts.localZone, now);
    this.services.set(service, r);
    const routed = r;
    let policyLoaded = false;
    let instancesLoaded = false;
    const maybeReady = (): void => {
      if (policyLoaded && instancesLoaded) routed.markReady();
    };
    routed.unsubscribe.push(
      this.opts.discovery.watch(service, (snap) => {
        this.onSnapshot(routed, snap);
        instancesLoaded = true;
        maybeReady();
      }),
      this.opts.policies.watch(service, (state) => this.onPolicy(routed, state)),
    );
    void this.opts.policies.ready(service).then((state) => {
      this.onPolicy(routed, state);
      policyLoaded = true;
      maybeReady();
    });
    return r;
  }

  /**
   * A refused connection or a reset says the instance (or its host) is down, with no doubt the
   * way a 5xx has: hold it out at once, before ejection's thresholds are met, so a crashed
   * instance gets no second request from this process. One try after the hold checks it again;
   * the hold doubles while failures go on. Any other outcome ends the hold.
   */
  private quarantineOutcome(r: Routed, id: string, outcome: CallOutcome, now: number): void {
    if (outcome.kind === "connect-failure" || outcome.kind === "reset") {
      const q = r.quarantine.get(id);
      const failures = (q?.failures ?? 0) + 1;
      const hold = Math.min(QUARANTINE_MAX_MS, QUARANTINE_BASE_MS * 2 ** Math.min(failures - 1, 10));
      r.quarantine.set(id, { untilMs: now + hold, failures });
    } else if (outcome.kind !== "timeout") {
      r.quarantine.delete(id);
    }
  }

  private quarantined(r: Routed, now: number): ReadonlySet<string> | undefined {
    if (r.quarantine.size === 0) return undefined;
    let s: Set<string> | undefined;
    for (const [id, q] of r.quarantine) {
      if (q.untilMs > now) (s ??= new Set()).add(id);
    }
    return s;
  }

  private onSnapshot(r: Routed, snap: ServiceSnapshot): void {
    if (this.closed) return;
    const before = r.snapshot;
    r.snapshot = snap;
    const ids = new Set(snap.instances.map((i) => i.id));
    const now = this.clock.now();
    if (before !== undefined) {
      const had = new Set(before.instances.map((i) => i.id));
      const added = [...ids].filter((id) => !had.has(id));
      const removed = before.instances.filter((i) => !ids.has(i.id));
      for (const inst of removed) r.removed.set(inst.id, { inst, atMs: now });
      // A changed registration (a restarted instance registers again) ends its hold.
      const prev = new Map(before.instances.map((i) => [i.id, i]));
      for (const inst of snap.instances) {
        const p = prev.get(inst.id);
        if (p !== undefined && p !== inst) r.quarantine.delete(inst.id);
      }
      if (added.length + removed.length > 0) {
        publish(channels.instances, { service: r.service, added, removed: removed.map((i) => i.id) });
      }
    }
    for (const id of ids) r.removed.delete(id);
    this.refreshRoutable(r);
  }

  /**
   * The protect threshold against mass removal: when leases expire together (a registry outage
   * longer than their TTL, a partition of many hosts) the instances vanish from the registry
   * although they may be serving. If two or more instances left and the ones still registered
   * are under the policy's protect threshold of the set before, the ones that left stay
   * routable (health "unknown") for PROTECT_HOLD_MS or until they register again; a dead one is
   * held out by the first refused connection. One instance leaving (a rollout, a drained
   * instance) never triggers it.
   */
  private refreshRoutable(r: Routed): void {
    r.holdTimer?.cancel();
    r.holdTimer = undefined;
    const snap = r.snapshot;
    if (snap === undefined) return;
    const now = this.clock.now();
    for (const [id, e] of r.removed) if (now - e.atMs >= PROTECT_HOLD_MS) r.removed.delete(id);
    const threshold = r.policy.policy.protectThreshold ?? PROTECT_THRESHOLD_DEFAULT;
    const total = snap.instances.length + r.removed.size;
    const hold = r.removed.size >= 2 && isPanic(total, snap.instances.length, threshold);
    const routable = hold
      ? [
          ...snap.instances,
          ...[...r.removed.values()].map((e) => ({ ...e.inst, health: "unknown" as const })),
        ]
      : snap.instances;
    if (hold && r.routable.length !== routable.length) {
      this.opts.logger.warn(
        { service: r.service, registered: snap.instances.length, held: r.removed.size },
        "mass removal under the protect threshold: instances that left stay routable for now",
      );
    }
    r.routable = routable;
    const ids = new Set(routable.map((i) => i.id));
    syncHosts(r.ejection, ids);
    this.breakers.retain(r.service, ids);
    for (const id of r.quarantine.keys()) if (!ids.has(id)) r.quarantine.delete(id);
    if (r.removed.size > 0) {
      let oldest = Number.POSITIVE_INFINITY;
      for (const e of r.removed.values()) oldest = Math.min(oldest, e.atMs);
      r.holdTimer = this.clock.setTimer(
        () => this.refreshRoutable(r),
        Math.max(1, oldest + PROTECT_HOLD_MS - now),
      );
    }
  }

  /** Instances of `service` routed although the registry no longer lists them (protect). */
  held(service: string): string[] {
    const r = this.services.get(service);
    if (r === undefined || r.snapshot === undefined) return [];
    const listed = new Set(r.snapshot.instances.map((i) => i.id));
    return r.routable.filter((i) => !listed.has(i.id)).map((i) => i.id);
  }

  private onPolicy(r: Routed, state: PolicyState): void {
    if (this.closed) return;
    r.policy = state;
    if (r.removed.size > 0) this.refreshRoutable(r);
    const p: Policy = state.policy;
    const now = this.clock.now();
    const ek = JSON.stringify(p.outlierDetection ?? {});
    if (ek !== r.ejectionKey) {
      r.ejectionKey = ek;
      r.ejection = createEjectionState(ejectionConfig(p.outlierDetection ?? {}), now);
      if (r.routable.length > 0)
        syncHosts(
          r.ejection,
          r.routable.map((i) => i.id),
        );
    }
    const bk = JSON.stringify(p.retries?.budget ?? {});
    if (bk !== r.budgetKey) {
      r.budgetKey = bk;
      r.budget = createRetryBudget(p.retries?.budget ?? {}, now);
    }
  }

  private ejectionEvents(r: Routed, events: EjectionEvent[]): void {
    for (const e of events) {
      publish(channels.ejection, { service: r.service, instanceId: e.id, ...e });
      this.opts.logger.info({ service: r.service, ...e }, "outlier ejection");
    }
    this.scheduleEjectionTick(r);
  }

  private scheduleEjectionTick(r: Routed): void {
    if (this.closed) return;
    if (r.ejection.ejected.size === 0 && r.ejection.hosts.size === 0) {
      r.ejectionTimer?.cancel();
      r.ejectionTimer = undefined;
      return;
    }
    // Re-armed only when the next deadline moved earlier: this runs after every call's outcome.
    const at = nextDeadlineMs(r.ejection);
    if (r.ejectionTimer !== undefined && r.ejectionAtMs <= at) return;
    r.ejectionTimer?.cancel();
    r.ejectionAtMs = at;
    r.ejectionTimer = this.clock.setTimer(
      () => {
        r.ejectionTimer = undefined;
        this.ejectionEvents(r, tick(r.ejection, this.clock.now()));
      },
      Math.max(0, at - this.clock.now()),
    );
  }
}

export class NoInstanceError extends Error {
  constructor(
    readonly service: string,
    readonly reason: NoPickReason,
    message: string,
  ) {
    super(message);
    this.name = "NoInstanceError";
  }
}
