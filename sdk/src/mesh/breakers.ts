// Circuit breakers in the I/O shell (issue "Node SDK": opossum breakers created only for
// instances in use, evicted by LRU, sharing one bucket-rotation controller per rolling window).
//
// A breaker wraps no action of its own: each try of a call fires the breaker with a promise the
// caller settles when the try ends (`settle(failed)`), so opossum sees the outcome our
// classifier decided, not an exception from some client library. Timeouts are ours
// (opossum's `timeout: false`). opossum's half-open timer is a real setTimeout of resetTimeout;
// the rolling window rotates on our Clock, so a test on a ManualClock drives the statistics.
//
// The routing core needs "which instances have an open breaker" as a set. It is kept from the
// breakers' events: 'open' adds, 'halfOpen' removes (one trial may go), firing a trial in
// half-open adds it back until 'close' or 'open'.

import { EventEmitter } from "node:events";
import { LRUCache } from "lru-cache";
import CircuitBreaker from "opossum";
import type { BreakerOptions } from "../core/retry.js";
import { channels, publish } from "../etcd/channels.js";
import type { Clock, Timer } from "../etcd/clock.js";

const BUCKETS = 10;
export const BREAKERS_MAX_DEFAULT = 10_000;

export type BreakerStateName = "closed" | "open" | "half-open";

export interface BreakerInfo {
  readonly service: string;
  readonly instanceId: string;
  readonly state: BreakerStateName;
  readonly fires: number;
  readonly failures: number;
  readonly successes: number;
  readonly rejects: number;
}

/** Rejection of a try the breaker refused; the caller should pick another instance. */
export class BreakerOpenError extends Error {
  constructor(
    readonly service: string,
    readonly instanceId: string,
  ) {
    super(`breaker open for ${service}/${instanceId}`);
  }
}

class Rotator {
  readonly emitter = new EventEmitter();
  private timer: Timer | undefined;
  users = 0;

  constructor(
    private readonly clock: Clock,
    private readonly windowMs: number,
  ) {
    this.emitter.setMaxListeners(0);
  }

  start(): void {
    if (this.timer !== undefined) return;
    const every = Math.max(1, Math.floor(this.windowMs / BUCKETS));
    const loop = (): void => {
      this.emitter.emit("rotate");
      this.timer = this.clock.setTimer(loop, every);
    };
    this.timer = this.clock.setTimer(loop, every);
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }
}

interface Held {
  readonly service: string;
  readonly instanceId: string;
  readonly breaker: CircuitBreaker<[Promise<void>], void>;
  readonly optionsKey: string;
  readonly rotator: Rotator;
}

function key(service: string, id: string): string {
  return `${service}\u0000${id}`;
}

export class Breakers {
  private readonly held: LRUCache<string, Held>;
  private readonly rotators = new Map<number, Rotator>();
  /** service -> ids whose breaker refuses tries now. */
  private readonly openIds = new Map<string, Set<string>>();

  constructor(
    private readonly clock: Clock,
    max = BREAKERS_MAX_DEFAULT,
  ) {
    this.held = new LRUCache<string, Held>({
      max,
      dispose: (h) => this.dispose(h),
    });
  }

  /** Ids of `service` whose breaker refuses tries now (do not mutate). */
  open(service: string): ReadonlySet<string> | undefined {
    return this.openIds.get(service);
  }

  /**
   * Starts a try on `instanceId`'s breaker. Returns the function that ends it, or a
   * BreakerOpenError when the breaker refuses (open, or a half-open trial is already running).
   */
  begin(
    service: string,
    instanceId: string,
    options: BreakerOptions,
  ): ((failed: boolean) => void) | BreakerOpenError {
    const h = this.get(service, instanceId, options);
    const b = h.breaker;
    // Half-open with pendingClose: the one trial may go; without it, the trial is running.
    if (b.opened || (b.halfOpen && !b.pendingClose)) return new BreakerOpenError(service, instanceId);
    if (b.halfOpen) this.markOpen(service, instanceId, true);
    let settle!: (failed: boolean) => void;
    const p = new Promise<void>((resolve, reject) => {
      settle = (failed) => (failed ? reject(new Error("failed")) : resolve());
    });
    b.fire(p).catch(() => {});
    let done = false;
    return (failed) => {
      if (done) return;
      done = true;
      settle(failed);
    };
  }

  /** Forgets breakers of instances that left `service` (called when its set changes). */
  retain(service: string, ids: ReadonlySet<string>): void {
    for (const [k, h] of this.held.entries()) {
      if (h.service === service && !ids.has(h.instanceId)) this.held.delete(k);
    }
  }

  list(): BreakerInfo[] {
    const out: BreakerInfo[] = [];
    for (const h of this.held.values()) {
      const b = h.breaker;
      const s = b.stats;
      out.push({
        service: h.service,
        instanceId: h.instanceId,
        state: b.opened ? "open" : b.halfOpen ? "half-open" : "closed",
        fires: s.fires,
        failures: s.failures,
        successes: s.successes,
        rejects: s.rejects,
      });
    }
    return out.sort((a, b) =>
      a.service === b.service ? (a.instanceId < b.instanceId ? -1 : 1) : a.service < b.service ? -1 : 1,
    );
  }

  close(): void {
    this.held.clear();
    for (const r of this.rotators.values()) r.stop();
    this.rotators.clear();
  }

  // -------------------------------------------------------------------------------------------

  private get(service: string, instanceId: string, o: BreakerOptions): Held {
    const k = key(service, instanceId);
    const optionsKey = `${o.errorThresholdPercentage}/${o.volumeThreshold}/${o.resetTimeout}/${o.rollingCountTimeout}`;
    const have = this.held.get(k);
    if (have !== undefined && have.optionsKey === optionsKey) return have;
    if (have !== undefined) this.held.delete(k);
    let rotator = this.rotators.get(o.rollingCountTimeout);
    if (rotator === undefined) {
      rotator = new Rotator(this.clock, o.rollingCountTimeout);
      this.rotators.set(o.rollingCountTimeout, rotator);
    }
    rotator.users += 1;
    rotator.start();
    const breaker = new CircuitBreaker<[Promise<void>], void>((p: Promise<void>) => p, {
      timeout: false,
      errorThresholdPercentage: o.errorThresholdPercentage,
      volumeThreshold: o.volumeThreshold,
      resetTimeout: o.resetTimeout,
      rollingCountTimeout: o.rollingCountTimeout,
      rollingCountBuckets: BUCKETS,
      rotateBucketController: rotator.emitter,
      enableSnapshots: false,
    } as CircuitBreaker.Options);
    breaker.on("open", () => this.transition(service, instanceId, "open"));
    breaker.on("halfOpen", () => this.transition(service, instanceId, "half-open"));
    breaker.on("close", () => this.transition(service, instanceId, "closed"));
    const h: Held = { service, instanceId, breaker, optionsKey, rotator };
    this.held.set(k, h);
    return h;
  }

  private transition(service: string, instanceId: string, state: BreakerStateName): void {
    this.markOpen(service, instanceId, state === "open");
    publish(channels.breaker, { service, instanceId, state });
  }

  private markOpen(service: string, instanceId: string, open: boolean): void {
    let s = this.openIds.get(service);
    if (open) {
      if (s === undefined) this.openIds.set(service, (s = new Set()));
      s.add(instanceId);
    } else if (s !== undefined) {
      s.delete(instanceId);
      if (s.size === 0) this.openIds.delete(service);
    }
  }

  private dispose(h: Held): void {
    h.breaker.shutdown();
    this.markOpen(h.service, h.instanceId, false);
    h.rotator.users -= 1;
    if (h.rotator.users === 0) {
      h.rotator.stop();
      for (const [w, r] of this.rotators) if (r === h.rotator) this.rotators.delete(w);
    }
  }
}
