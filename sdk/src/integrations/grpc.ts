// @grpc/grpc-js integration: a name resolver for `registry:///<service>` and a load-balancing
// policy ("regmesh") whose picker asks the Mesh, so a plain grpc-js client routes by the
// service's policy (subsets, splits, balancer kind), skips open breakers and ejected instances,
// and feeds every call's outcome back. Built on grpc-js 1.14's `experimental` API (the same one
// its xDS package uses); the shapes follow its own round_robin and pick_first.
//
// Division of labour:
// - The resolver publishes the instances' addresses on every snapshot the Mesh takes (Discovery
//   keeps the last set while the registry is unreachable, so a registry outage never empties the
//   channel), and a service config selecting the "regmesh" policy. It also installs a config
//   selector that puts the method path into the pick information (grpc-js gives a picker only
//   metadata otherwise) and turns the policy's `timeoutMs` and `retries` into a method config.
// - The LB policy keeps one subchannel per address, connected at all times (as round_robin
//   does), and publishes a picker over the READY ones.
// - The picker calls `mesh.pick()` with the instances that have no READY subchannel excluded,
//   and reports the call's end status through the pick result's onCallEnded as
//   `{ kind: "grpc", code }`.
//
// What grpc-js does instead of the Mesh: retries (grpc-js's retrying call, from the policy's
// `attempts` and `retryOn` mapped to status codes; the Mesh's retry budget is not consulted,
// per-try timeouts are not supported by grpc-js) and the deadline (the policy's `timeoutMs`;
// per-route timeouts are decided at pick time, after grpc-js fixed the deadline, so only the
// policy-wide one applies).

import type { RetryPolicy as GrpcRetryPolicy, MethodConfig, ServiceConfig } from "@grpc/grpc-js";
import { type ChannelOptions, connectivityState, experimental, Metadata, status } from "@grpc/grpc-js";
import { joinHostPort } from "../core/instance.js";
import type { Policy } from "../core/policy.js";
import { GRPC_RESOURCE_EXHAUSTED, GRPC_UNAVAILABLE, RETRY_ON_DEFAULT } from "../core/retry.js";
import type { Attempt, Mesh } from "../mesh/mesh.js";
import type { ServiceSnapshot } from "../registry/discovery.js";

/** The URI scheme `installRegistryResolver` registers by default: `registry:///orders`. */
export const REGISTRY_SCHEME = "registry";
/** The load-balancing policy name the resolver's service config selects. */
export const REGMESH_LB_POLICY = "regmesh";

/**
 * Channel-argument keys the resolver passes to the LB policy. The prefix is grpc-js's
 * SUBCHANNEL_ARGS_EXCLUDE_KEY_PREFIX, so a Mesh object never ends up in subchannel arguments
 * (which the subchannel pool compares to share connections).
 */
const MESH_ARG = `${experimental.SUBCHANNEL_ARGS_EXCLUDE_KEY_PREFIX}.regmesh.mesh`;
/** Pick-information key carrying the method path, set by the resolver's config selector. */
const PATH_PICK_INFO = "regmesh.path";

/** A pick that grpc-js never turned into a call (cancelled meanwhile, subchannel lost) is released after this. */
const PICK_START_GRACE_MS = 5_000;
const PICK_SWEEP_INTERVAL_MS = 1_000;
/** grpc-js caps retry attempts at 5 (grpc-node.retry_max_attempts_limit). */
const GRPC_RETRY_ATTEMPTS_MAX = 5;

export interface RegistryResolverOptions {
  /** URI scheme to register (default "registry"). One scheme per Mesh. */
  scheme?: string;
}

/** `registry:///<service>`, the target a grpc-js client uses for `service`. */
export function registryTarget(service: string, scheme = REGISTRY_SCHEME): string {
  return `${scheme}:///${service}`;
}

/**
 * Registers, process-wide, a grpc-js resolver for `<scheme>:///<service>` that resolves through
 * `mesh`, and the "regmesh" LB policy. Clients then need nothing else:
 * `new Client(registryTarget("orders"), credentials.createInsecure())`.
 * Registering the same scheme again replaces the Mesh for channels created afterwards.
 */
export function installRegistryResolver(
  mesh: Mesh,
  opts: RegistryResolverOptions = {},
): { scheme: string; lbPolicy: string } {
  const scheme = opts.scheme ?? REGISTRY_SCHEME;
  if (!experimental.isLoadBalancerNameRegistered(REGMESH_LB_POLICY)) {
    experimental.registerLoadBalancerType(REGMESH_LB_POLICY, RegmeshLoadBalancer, RegmeshLbConfig);
  }
  experimental.registerResolver(
    scheme,
    class extends RegistryResolver {
      constructor(target: experimental.GrpcUri, listener: experimental.ResolverListener, _o: ChannelOptions) {
        super(mesh, target, listener);
      }
      static getDefaultAuthority(target: experimental.GrpcUri): string {
        return serviceOf(target);
      }
    },
  );
  return { scheme, lbPolicy: REGMESH_LB_POLICY };
}

function serviceOf(target: experimental.GrpcUri): string {
  const service = target.path.replace(/^\/+/, "");
  if (service.length === 0 || service.includes("/")) {
    throw new Error(`registry target ${JSON.stringify(target.path)}: want <scheme>:///<service>`);
  }
  return service;
}

// ---------------------------------------------------------------------------------------------
// Resolver

class RegistryResolver implements experimental.Resolver {
  private readonly service: string;
  private unsubscribe: (() => void) | undefined;
  private ready = false;
  private destroyed = false;
  private readonly selector: experimental.ConfigSelector;
  private readonly serviceConfig: ServiceConfig;

  constructor(
    private readonly mesh: Mesh,
    target: experimental.GrpcUri,
    private readonly listener: experimental.ResolverListener,
  ) {
    this.service = serviceOf(target);
    this.serviceConfig = {
      loadBalancingConfig: [{ [REGMESH_LB_POLICY]: { service: this.service } }],
      methodConfig: [],
    };
    this.selector = configSelector(mesh, this.service);
  }

  updateResolution(): void {
    this.destroyed = false;
    if (this.unsubscribe === undefined) {
      this.unsubscribe = this.mesh.watchSnapshot(this.service, (snap) => {
        if (this.ready) this.publish(snap);
      });
      // Publish only once the policy was loaded too, so no call routes by a default policy.
      void this.mesh.ready(this.service).then(() => {
        if (this.destroyed) return;
        this.ready = true;
        const snap = this.mesh.snapshot(this.service);
        if (snap !== undefined) this.publish(snap);
        else
          this.fail(
            `registry: service ${this.service} is not resolved (registry unreachable, no cached copy)`,
          );
      });
      return;
    }
    // grpc-js asks again after a connection drops; the set is already current, but answer
    // (never synchronously: the Resolver contract).
    if (this.ready) {
      setImmediate(() => {
        const snap = this.mesh.snapshot(this.service);
        if (!this.destroyed && snap !== undefined) this.publish(snap);
      });
    }
  }

  destroy(): void {
    this.destroyed = true;
    this.ready = false;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  private publish(snap: ServiceSnapshot): void {
    if (this.destroyed) return;
    const seen = new Set<string>();
    const endpoints: experimental.Endpoint[] = [];
    for (const inst of snap.instances) {
      const key = joinHostPort(inst.address, inst.port);
      if (seen.has(key)) continue;
      seen.add(key);
      endpoints.push({ addresses: [{ host: inst.address, port: inst.port }] });
    }
    const note =
      endpoints.length === 0
        ? `service ${this.service} has no registered instances`
        : snap.stale
          ? `service ${this.service}: instance set stale for ${Math.round(snap.staleForMs)} ms`
          : "";
    this.listener(
      { ok: true, value: endpoints },
      { [MESH_ARG]: this.mesh, [experimental.CHANNEL_ARGS_CONFIG_SELECTOR_KEY]: this.selector },
      { ok: true, value: this.serviceConfig },
      note,
    );
  }

  private fail(details: string): void {
    // With our service config, so the regmesh policy reports it (and keeps any earlier set).
    this.listener(
      { ok: false, error: { code: status.UNAVAILABLE, details, metadata: emptyMetadata() } },
      { [MESH_ARG]: this.mesh, [experimental.CHANNEL_ARGS_CONFIG_SELECTOR_KEY]: this.selector },
      { ok: true, value: this.serviceConfig },
      details,
    );
  }
}

function emptyMetadata(): Metadata {
  return new Metadata();
}

/** Per call: the method path into the pick information; timeout and retries from the policy. */
function configSelector(mesh: Mesh, service: string): experimental.ConfigSelector {
  const cache = new WeakMap<Policy, MethodConfig>();
  return {
    invoke(methodName: string) {
      const policy = mesh.policy(service).policy;
      let methodConfig = cache.get(policy);
      if (methodConfig === undefined) {
        methodConfig = methodConfigOf(policy);
        cache.set(policy, methodConfig);
      }
      return {
        methodConfig,
        pickInformation: { [PATH_PICK_INFO]: methodName },
        status: status.OK,
        dynamicFilterFactories: [],
      };
    },
    unref() {},
  };
}

/** The grpc-js method config equivalent to a policy's call timeout and retries. */
export function methodConfigOf(policy: Policy): MethodConfig {
  const mc: MethodConfig = { name: [] };
  if (policy.timeoutMs !== undefined) {
    mc.timeout = { seconds: Math.floor(policy.timeoutMs / 1000), nanos: (policy.timeoutMs % 1000) * 1e6 };
  }
  const r = policy.retries;
  if (r !== undefined && r.attempts > 0) {
    // gRPC reports connection failures, resets and refused streams as UNAVAILABLE; per-try
    // timeouts and HTTP status conditions have no gRPC equivalent.
    const codes = new Set<number>();
    for (const c of r.retryOn ?? RETRY_ON_DEFAULT) {
      if (c === "resource-exhausted") codes.add(GRPC_RESOURCE_EXHAUSTED);
      else if (c !== "timeout" && c !== "retriable-status-codes") codes.add(GRPC_UNAVAILABLE);
    }
    if (codes.size > 0) {
      const retryPolicy: GrpcRetryPolicy = {
        maxAttempts: Math.min(r.attempts + 1, GRPC_RETRY_ATTEMPTS_MAX),
        initialBackoff: "0.01s",
        maxBackoff: "0.1s",
        backoffMultiplier: 2,
        retryableStatusCodes: [...codes].sort((a, b) => a - b),
      };
      mc.retryPolicy = retryPolicy;
    }
  }
  return mc;
}

// ---------------------------------------------------------------------------------------------
// LB policy

class RegmeshLbConfig implements experimental.TypedLoadBalancingConfig {
  constructor(readonly service: string) {}
  getLoadBalancerName(): string {
    return REGMESH_LB_POLICY;
  }
  toJsonObject(): object {
    return { [REGMESH_LB_POLICY]: { service: this.service } };
  }
  static createFromJson(obj: unknown): RegmeshLbConfig {
    const service = (obj as { service?: unknown } | null)?.service;
    if (typeof service !== "string" || service.length === 0) {
      throw new Error(`${REGMESH_LB_POLICY} LB config: "service" must be a non-empty string`);
    }
    return new RegmeshLbConfig(service);
  }
}

interface Child {
  readonly key: string;
  readonly subchannel: experimental.SubchannelInterface;
  readonly listener: experimental.ConnectivityStateListener;
  state: connectivityState;
}

class RegmeshLoadBalancer implements experimental.LoadBalancer {
  private readonly children = new Map<string, Child>();
  private mesh: Mesh | undefined;
  private service = "";
  private updatesPaused = false;
  private lastError = "";
  private resolutionNote = "";
  /** Picks handed to grpc-js whose call has not started yet, with when they were made. */
  private readonly pending = new Map<Attempt, number>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly helper: experimental.ChannelControlHelper) {}

  updateAddressList(
    endpoints: experimental.StatusOr<experimental.Endpoint[]>,
    config: experimental.TypedLoadBalancingConfig,
    options: ChannelOptions,
    resolutionNote: string,
  ): boolean {
    if (!(config instanceof RegmeshLbConfig)) return false;
    this.service = config.service;
    this.resolutionNote = resolutionNote;
    const mesh = options[MESH_ARG] as Mesh | undefined;
    if (mesh === undefined) {
      this.report(
        connectivityState.TRANSIENT_FAILURE,
        new experimental.UnavailablePicker({
          details: `${REGMESH_LB_POLICY} LB policy: use a ${REGISTRY_SCHEME}:/// target (installRegistryResolver)`,
        }),
      );
      return true;
    }
    this.mesh = mesh;
    if (!endpoints.ok) {
      // Keep serving the last addresses; only a channel that never had any fails.
      if (this.children.size === 0) {
        this.lastError = endpoints.error.details;
        this.report(connectivityState.TRANSIENT_FAILURE, new experimental.UnavailablePicker(endpoints.error));
      }
      return true;
    }
    const subchannelArgs: ChannelOptions = {};
    for (const [k, v] of Object.entries(options)) {
      if (!k.startsWith(experimental.SUBCHANNEL_ARGS_EXCLUDE_KEY_PREFIX)) subchannelArgs[k] = v;
    }
    const wanted = new Map<string, experimental.SubchannelAddress>();
    for (const e of endpoints.value) {
      for (const a of e.addresses) wanted.set(experimental.subchannelAddressToString(a), a);
    }
    this.updatesPaused = true;
    for (const [key, child] of this.children) {
      if (!wanted.has(key)) this.removeChild(child);
    }
    for (const [key, address] of wanted) {
      if (!this.children.has(key)) this.addChild(key, address, subchannelArgs);
    }
    this.updatesPaused = false;
    this.recompute();
    return true;
  }

  exitIdle(): void {
    for (const c of this.children.values()) {
      if (c.state === connectivityState.IDLE) c.subchannel.startConnecting();
    }
  }

  resetBackoff(): void {
    // Backoff lives in the subchannels.
  }

  destroy(): void {
    for (const c of [...this.children.values()]) this.removeChild(c);
    for (const a of this.pending.keys()) a.cancel();
    this.pending.clear();
    this.stopSweeper();
  }

  getTypeName(): string {
    return REGMESH_LB_POLICY;
  }

  private addChild(key: string, address: experimental.SubchannelAddress, args: ChannelOptions): void {
    const subchannel = this.helper.createSubchannel(address, args);
    const child: Child = {
      key,
      subchannel,
      state: subchannel.getConnectivityState(),
      listener: (_sub, previous, next, _keepalive, error) => {
        child.state = next;
        if (error) this.lastError = error;
        // Keep every address connected, as round_robin does.
        if (next === connectivityState.IDLE) subchannel.startConnecting();
        if (previous === connectivityState.READY && next !== connectivityState.READY) {
          this.helper.requestReresolution();
        }
        this.recompute();
      },
    };
    subchannel.ref();
    this.helper.addChannelzChild(subchannel.getChannelzRef());
    subchannel.addConnectivityStateListener(child.listener);
    this.children.set(key, child);
    subchannel.startConnecting();
  }

  private removeChild(child: Child): void {
    child.subchannel.removeConnectivityStateListener(child.listener);
    this.helper.removeChannelzChild(child.subchannel.getChannelzRef());
    child.subchannel.unref();
    this.children.delete(child.key);
  }

  private recompute(): void {
    if (this.updatesPaused) return;
    const ready = new Map<string, experimental.SubchannelInterface>();
    let connecting = false;
    for (const c of this.children.values()) {
      if (c.state === connectivityState.READY) ready.set(c.key, c.subchannel);
      else if (c.state === connectivityState.CONNECTING || c.state === connectivityState.IDLE)
        connecting = true;
    }
    if (ready.size > 0) {
      this.report(connectivityState.READY, new MeshPicker(this, ready));
    } else if (connecting) {
      this.report(connectivityState.CONNECTING, new experimental.QueuePicker(this));
    } else {
      const details =
        this.children.size === 0
          ? `service ${this.service}: no addresses (${this.resolutionNote || "empty instance set"})`
          : `service ${this.service}: no instance reachable (last error: ${this.lastError || "unknown"})`;
      this.report(
        connectivityState.TRANSIENT_FAILURE,
        new experimental.UnavailablePicker({ code: status.UNAVAILABLE, details }),
      );
    }
  }

  private report(state: connectivityState, picker: experimental.Picker): void {
    const error = state === connectivityState.TRANSIENT_FAILURE ? this.lastError || null : null;
    this.helper.updateState(state, picker, error);
  }

  /** The picker's work: the Mesh decides among the instances that have a READY subchannel. */
  pick(
    args: experimental.PickArgs,
    ready: ReadonlyMap<string, experimental.SubchannelInterface>,
    excluded: (snap: ServiceSnapshot) => ReadonlySet<string>,
    fallback: () => experimental.SubchannelInterface,
  ): experimental.PickResult {
    const mesh = this.mesh;
    const snap = mesh?.snapshot(this.service);
    if (mesh === undefined || snap === undefined)
      return transientFailure(`service ${this.service} is not resolved yet`);
    const p = mesh.pick(
      this.service,
      {
        method: "POST",
        path: args.extraPickInfo[PATH_PICK_INFO] ?? "",
        headers: headersOf(args.metadata),
      },
      excluded(snap),
    );
    if (!p.ok) {
      switch (p.reason) {
        case "rate-limited":
          return drop(status.RESOURCE_EXHAUSTED, p.message);
        case "caller-not-allowed":
          return drop(status.PERMISSION_DENIED, p.message);
        default:
          return transientFailure(p.message);
      }
    }
    const attempt = p.attempt;
    const sub = ready.get(joinHostPort(attempt.instance.address, attempt.instance.port));
    if (sub === undefined) {
      // The Mesh chose an instance with no READY connection: it ignores exclusions in protect
      // (panic) mode, or the resolver has not caught up. That try is released unused (not
      // charged to the instance: grpc-js already knows whether it is reachable, and charging
      // every such pick would open its breaker, after which the Mesh refuses picks in protect
      // mode) and the call goes to the next READY subchannel in turn; its outcome is still
      // reported for the instance it went to.
      attempt.cancel();
      const other = fallback();
      const inst = snap.instances.find((i) => joinHostPort(i.address, i.port) === other.getAddress());
      return complete(
        other,
        null,
        inst === undefined ? null : (code) => mesh.report(this.service, inst.id, { kind: "grpc", code }),
      );
    }
    this.pending.set(attempt, Date.now());
    this.startSweeper();
    return complete(
      sub,
      () => this.pending.delete(attempt),
      (code) => {
        this.pending.delete(attempt);
        attempt.end({ kind: "grpc", code });
      },
    );
  }

  private startSweeper(): void {
    if (this.sweeper !== undefined) return;
    this.sweeper = setInterval(() => {
      const cutoff = Date.now() - PICK_START_GRACE_MS;
      for (const [a, at] of this.pending) {
        if (at <= cutoff) {
          this.pending.delete(a);
          a.cancel();
        }
      }
      if (this.pending.size === 0) this.stopSweeper();
    }, PICK_SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  private stopSweeper(): void {
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }
}

class MeshPicker implements experimental.Picker {
  private excludedFor: ServiceSnapshot | undefined;
  private excludedIds: ReadonlySet<string> = new Set();
  private readonly readyList: experimental.SubchannelInterface[];
  private next = 0;

  constructor(
    private readonly lb: RegmeshLoadBalancer,
    private readonly ready: ReadonlyMap<string, experimental.SubchannelInterface>,
  ) {
    this.readyList = [...ready.values()];
  }

  pick(args: experimental.PickArgs): experimental.PickResult {
    return this.lb.pick(
      args,
      this.ready,
      (snap) => this.excluded(snap),
      () => this.readyList[this.next++ % this.readyList.length]!,
    );
  }

  /** Instances without a READY subchannel, memoised per snapshot (a picker's READY set is fixed). */
  private excluded(snap: ServiceSnapshot): ReadonlySet<string> {
    if (snap !== this.excludedFor) {
      const ids = new Set<string>();
      for (const i of snap.instances) if (!this.ready.has(joinHostPort(i.address, i.port))) ids.add(i.id);
      this.excludedFor = snap;
      this.excludedIds = ids;
    }
    return this.excludedIds;
  }
}

function headersOf(md: Metadata): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(md.getMap())) if (typeof v === "string") out[k] = v;
  return out;
}

function complete(
  subchannel: experimental.SubchannelInterface,
  onCallStarted: (() => void) | null,
  onCallEnded: ((code: number) => void) | null,
): experimental.PickResult {
  return {
    pickResultType: experimental.PickResultType.COMPLETE,
    subchannel,
    status: null,
    onCallStarted,
    onCallEnded,
  };
}

function transientFailure(details: string): experimental.PickResult {
  return {
    pickResultType: experimental.PickResultType.TRANSIENT_FAILURE,
    subchannel: null,
    status: { code: status.UNAVAILABLE, details, metadata: emptyMetadata() },
    onCallStarted: null,
    onCallEnded: null,
  };
}

function drop(code: status, details: string): experimental.PickResult {
  return {
    pickResultType: experimental.PickResultType.DROP,
    subchannel: null,
    status: { code, details, metadata: emptyMetadata() },
    onCallStarted: null,
    onCallEnded: null,
  };
}
