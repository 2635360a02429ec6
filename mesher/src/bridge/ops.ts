// The bridge's operations, shared by REST and JSON-RPC: each takes checked input and returns
// the JSON-ready result, or throws a BridgeError. Neither front end has logic of its own.

import {
  type CallOutcome,
  type Discovery,
  defaultPolicy,
  type Instance,
  type Policy,
  type RouteDecision,
  type RouteRequest,
  type ServiceSnapshot,
} from "@regmesh/sdk";
import { BridgeError, BridgeErrorCode, toBridgeError } from "./errors.js";
import { CATCH_UP_MS_MAX } from "./limits.js";
import type { HeartbeatResult, RegisterResult, Registrations } from "./registrations.js";

/** What the mesher's router offers the bridge (it is built on the SDK's route()). */
export interface BridgeRouter {
  pick(
    service: string,
    req: RouteRequest,
  ): Promise<
    { instance: Instance; decision: RouteDecision } | { error: { reason: string; message: string } }
  >;
  /** Feeds the breaker and outlier ejection of `instanceId`. */
  report(service: string, instanceId: string, outcome: CallOutcome, latencyMs?: number): void;
  /** The policy in force, and the mod revision it was read at; undefined when none is stored. */
  policy(service: string): Promise<{ policy: Policy; modRevision: bigint } | undefined>;
}

export interface ServiceView {
  service: string;
  revision: string;
  stale: boolean;
  staleForMs: number;
  instances: Instance[];
}

export interface PickView {
  service: string;
  instance: Instance;
  rule: number | "default";
  ruleName?: string;
  subset: string;
  reason: string;
  balancer: string;
  zone: string;
  protect: boolean;
  timeoutMs?: number;
  skippedTotal: number;
}

export interface PolicyView {
  service: string;
  /** False when no policy is stored and the default applies. */
  stored: boolean;
  modRevision: string;
  policy: Policy;
}

export function snapshotView(s: ServiceSnapshot): ServiceView {
  return {
    service: s.service,
    revision: s.revision.toString(),
    stale: s.stale,
    staleForMs: Math.round(s.staleForMs),
    instances: s.instances,
  };
}

export class Ops {
  constructor(
    readonly registrations: Registrations,
    private readonly discovery: Discovery,
    private readonly router: BridgeRouter,
  ) {}

  register(instance: Instance, ttlS: number): Promise<RegisterResult> {
    return this.registrations.register(instance, ttlS);
  }

  heartbeat(id: string): Promise<HeartbeatResult> {
    return this.registrations.heartbeat(id);
  }

  deregister(id: string): Promise<{ id: string; deregistered: true }> {
    return this.registrations.deregister(id);
  }

  /**
   * Read-your-writes for the bridge's clients: an app that registers and then resolves or picks
   * through the same bridge must see its write, but the discovery cache learns of it from a
   * watch event a moment later. When this bridge wrote to the service at a revision the cache
   * has not reached, wait for the cache (at most CATCH_UP_MS_MAX; after that answer with what
   * there is, marked by its revision).
   */
  private async catchUp(service: string): Promise<void> {
    const target = this.registrations.lastWrite(service);
    if (target === undefined) return;
    const now = this.discovery.peek(service);
    if (now !== undefined && now.revision >= target) {
      this.registrations.seen(service, now.revision);
      return;
    }
    await new Promise<void>((resolve) => {
      let unsubscribe: (() => void) | undefined;
      let finished = false;
      const done = () => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        unsubscribe?.();
        resolve();
      };
      const timer = setTimeout(done, CATCH_UP_MS_MAX);
      unsubscribe = this.discovery.watch(service, (snap) => {
        if (snap.revision < target) return;
        this.registrations.seen(service, snap.revision);
        done();
      });
      if (finished) unsubscribe();
    });
  }

  async resolve(service: string): Promise<ServiceView> {
    try {
      await this.catchUp(service);
      return snapshotView(await this.discovery.resolve(service));
    } catch (err) {
      throw toBridgeError(err);
    }
  }

  async pick(service: string, request: RouteRequest): Promise<PickView> {
    let r: Awaited<ReturnType<BridgeRouter["pick"]>>;
    try {
      await this.catchUp(service);
      r = await this.router.pick(service, request);
    } catch (err) {
      throw toBridgeError(err);
    }
    if ("error" in r) {
      throw new BridgeError(BridgeErrorCode.NO_INSTANCE, r.error.message, { reason: r.error.reason });
    }
    const d = r.decision;
    const view: PickView = {
      service,
      instance: r.instance,
      rule: d.rule,
      subset: d.subset,
      reason: d.reason,
      balancer: d.balancer,
      zone: d.zone,
      protect: d.protect,
      skippedTotal: d.skippedTotal,
    };
    if (d.ruleName !== undefined) view.ruleName = d.ruleName;
    if (d.timeoutMs !== undefined) view.timeoutMs = d.timeoutMs;
    return view;
  }

  report(service: string, instanceId: string, outcome: CallOutcome, latencyMs?: number): { reported: true } {
    try {
      this.router.report(service, instanceId, outcome, latencyMs);
    } catch (err) {
      throw toBridgeError(err);
    }
    return { reported: true };
  }

  async getPolicy(service: string): Promise<PolicyView> {
    let p: Awaited<ReturnType<BridgeRouter["policy"]>>;
    try {
      p = await this.router.policy(service);
    } catch (err) {
      throw toBridgeError(err);
    }
    if (p === undefined) return { service, stored: false, modRevision: "0", policy: defaultPolicy(service) };
    return { service, stored: true, modRevision: p.modRevision.toString(), policy: p.policy };
  }
}
