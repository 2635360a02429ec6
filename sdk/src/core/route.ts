// The routing decision (DESIGN.md "Data paths": pick an instance by the service's policy —
// subset by route rule, then balancer): a pure function of the policy, the request, the
// instance snapshot, the router state, `nowMs`, the random source and the shell's signals
// (ejected ids, open breakers). Its result is what the explain call shows.
//
//   1. allow-list: a caller not in policy.allowedCallers gets no instance;
//   2. the first route rule whose match holds (headers, path, method, caller) wins; its split
//      chooses a subset by weight (canary, blue-green), by the request's hash key when there
//      is one (a user stays on one side) and at random otherwise. No rule: every instance;
//   3. availability: instances reported unhealthy, ejected or with an open breaker are
//      excluded — unless the available share is below the protect threshold, in which case
//      nothing is excluded (protect.ts);
//   4. zone-aware routing, simplified from Envoy's (arch_overview/upstream/load_balancing/
//      zone_aware): outside panic, if the local zone's available share of this subset is at
//      least zoneAware.minHealthyFraction, only local-zone instances are candidates; otherwise
//      every zone is (failover). Envoy also balances by the caller cluster's zone shares and
//      spills residual traffic; we do not know the caller fleet's spread, so we do not;
//   5. the policy's balancer picks among the candidates.
//
// Cost: preparing a snapshot (subsets, zone groups, flags) is O(instances x subsets) and is
// memoised on the identity of the `instances` array and the policy, so the shell must pass
// the watch cache's immutable snapshot, not a fresh copy per call, and keep one RouterState
// per service. A decision then costs O(rules + ejected + open breakers), plus the explain list
// (at most EXPLAIN_SKIPPED_MAX entries, skipped with `explain: false`), plus the balancer's
// O(1)/O(log n) pick. Balancers are rebuilt only when a group's members change, and the ring
// incrementally (ring-hash.ts).

import { type BalancerKind, type BalancerState, createBalancer, pickIndex } from "./balancer.js";
import { createLoadTracker, type LoadTracker } from "./balancers/p2c-peak-ewma.js";
import { invariant } from "./errors.js";
import { hash32 } from "./hash.js";
import { type Instance, isReportedHealthy } from "./instance.js";
import {
  EXPLAIN_SKIPPED_MAX,
  HEADER_VALUE_MATCH_LENGTH_MAX,
  INSTANCES_PER_SERVICE_MAX,
  PROTECT_THRESHOLD_DEFAULT,
  ZONE_MIN_HEALTHY_FRACTION_DEFAULT,
} from "./limits.js";
import { compileHeaderRegex, type HeaderMatch, type Policy, type RouteMatch, type Subset } from "./policy.js";
import { isPanic } from "./protect.js";
import type { Rand } from "./random.js";

export interface RouteRequest {
  readonly method: string;
  /** Request path; a query string, if any, is ignored. */
  readonly path: string;
  /** Header names in any case; repeated headers as arrays (joined with "," as Envoy does). */
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  /** The calling service's name, when known (mesher: from the caller's registration). */
  readonly caller?: string | undefined;
  /** Overrides the policy's hash key source for ring-hash and maglev. */
  readonly hashKey?: string | undefined;
}

/** What the shell knows that the core cannot compute (ejections, breakers), and explain. */
export interface RouteSignals {
  /** Ids currently ejected (ejection.ts ejectedIds(state)). */
  readonly ejected?: ReadonlySet<string>;
  /** Ids whose circuit breaker is open (breakers live in the shell, e.g. opossum). */
  readonly breakerOpen?: ReadonlySet<string>;
  /**
   * List the skipped instances (default true). The hot path passes false: the decision is the
   * same and skippedTotal is still exact, but no list of up to EXPLAIN_SKIPPED_MAX is built.
   */
  readonly explain?: boolean;
}

export type SkipReason = "ejected" | "breaker-open" | "other-zone" | "filtered-by-policy" | "unhealthy";

export interface Skipped {
  readonly instanceId: string;
  readonly why: SkipReason;
}

export type RouteReason =
  /** An instance was chosen. */
  | "picked"
  /** The caller is not in policy.allowedCallers. */
  | "caller-not-allowed"
  /** The chosen subset has no instances at all. */
  | "subset-empty"
  /** Every candidate is excluded and the protect threshold is 0 (disabled). */
  | "all-excluded";

export interface RouteDecision {
  /** Index of the matching rule in policy.routes, or "default" when none matched. */
  readonly rule: number | "default";
  readonly ruleName: string | undefined;
  /** The subset chosen by the split; "*" means every instance. */
  readonly subset: string;
  readonly instance: Instance | undefined;
  readonly reason: RouteReason;
  /** True when the protect threshold was crossed and nothing was excluded. */
  readonly protect: boolean;
  /** "local": only the local zone was eligible; "failover": local zone too unavailable. */
  readonly zone: "off" | "local" | "failover";
  readonly balancer: BalancerKind;
  readonly timeoutMs: number | undefined;
  /** Up to EXPLAIN_SKIPPED_MAX instances that were not eligible, and why. */
  readonly skipped: readonly Skipped[];
  /** How many instances were not eligible in total (skipped may be truncated). */
  readonly skippedTotal: number;
}

// ---------------------------------------------------------------------------------------------
// Prepared snapshot: everything that depends only on (instances, policy).

interface Group {
  /** Frozen: also the identity the balancer cache keys on. */
  readonly members: readonly Instance[];
  readonly indexById: ReadonlyMap<string, number>;
  readonly unhealthy: Uint8Array;
  readonly unhealthyIds: readonly string[];
}

interface SubsetView {
  readonly name: string;
  readonly all: Group;
  readonly byZone: ReadonlyMap<string, Group>;
  /** A sample of instances outside the subset, for explain. */
  readonly outsideSample: readonly string[];
  readonly outsideCount: number;
}

interface Prepared {
  readonly instances: readonly Instance[];
  readonly policy: Policy;
  readonly subsets: Map<string, SubsetView>;
}

interface CompiledRule {
  readonly index: number;
  readonly name: string | undefined;
  readonly match: ((req: NormalizedRequest) => boolean) | undefined;
  readonly split: readonly { subset: string; weight: number }[];
  readonly totalWeight: number;
  readonly timeoutMs: number | undefined;
}

export interface RouterState {
  /** The zone this process runs in; undefined turns zone-aware routing off. */
  readonly localZone: string | undefined;
  /** Peak-EWMA load per instance, fed by the shell (onRequestStart / onRequestEnd). */
  readonly load: LoadTracker;
  prepared: Prepared | undefined;
  /** Balancer per (subset, zone) group; reused while the group's members do not change. */
  readonly balancers: Map<string, BalancerState>;
}

export function createRouterState(options: { localZone?: string; load?: LoadTracker } = {}): RouterState {
  return {
    localZone: options.localZone,
    load: options.load ?? createLoadTracker(),
    prepared: undefined,
    balancers: new Map(),
  };
}

const ALL = "*";
/** Independent of the balancers' hashes, so split side and instance are uncorrelated. */
const SPLIT_HASH_SEED = 0x5bd1e995;
const NO_ZONE = "";

function makeGroup(members: Instance[]): Group {
  const indexById = new Map<string, number>();
  const unhealthy = new Uint8Array(members.length);
  const unhealthyIds: string[] = [];
  members.forEach((m, i) => {
    indexById.set(m.id, i);
    if (!isReportedHealthy(m)) {
      unhealthy[i] = 1;
      unhealthyIds.push(m.id);
    }
  });
  Object.freeze(members);
  return { members, indexById, unhealthy, unhealthyIds };
}

function inSubset(inst: Instance, s: Subset): boolean {
  if (s.version !== undefined && inst.version !== s.version) return false;
  if (s.zone !== undefined && inst.zone !== s.zone) return false;
  if (s.tags !== undefined) for (const t of s.tags) if (!inst.tags.includes(t)) return false;
  return true;
}

function makeSubset(
  name: string,
  instances: readonly Instance[],
  select: ((inst: Instance) => boolean) | undefined,
): SubsetView {
  const members: Instance[] = [];
  const zones = new Map<string, Instance[]>();
  const outsideSample: string[] = [];
  let outsideCount = 0;
  for (const inst of instances) {
    if (select !== undefined && !select(inst)) {
      outsideCount += 1;
      if (outsideSample.length < EXPLAIN_SKIPPED_MAX) outsideSample.push(inst.id);
      continue;
    }
    members.push(inst);
    const z = inst.zone ?? NO_ZONE;
    let list = zones.get(z);
    if (list === undefined) zones.set(z, (list = []));
    list.push(inst);
  }
  const byZone = new Map<string, Group>();
  for (const [z, list] of zones) byZone.set(z, makeGroup(list));
  return { name, all: makeGroup(members), byZone, outsideSample, outsideCount };
}

function prepare(state: RouterState, policy: Policy, instances: readonly Instance[]): Prepared {
  const p = state.prepared;
  if (p !== undefined && p.instances === instances && p.policy === policy) return p;
  invariant(instances.length <= INSTANCES_PER_SERVICE_MAX, "too many instances for one service");
  const subsets = new Map<string, SubsetView>();
  // Subsets are built lazily by subsetView(); the "*" view is always needed.
  subsets.set(ALL, makeSubset(ALL, instances, undefined));
  const next: Prepared = { instances, policy, subsets };
  state.prepared = next;
  return next;
}

function subsetView(prep: Prepared, name: string): SubsetView {
  let v = prep.subsets.get(name);
  if (v === undefined) {
    const def = prep.policy.subsets?.find((s) => s.name === name);
    // validatePolicy guarantees referenced subsets exist; an unknown name selects nothing.
    v = makeSubset(name, prep.instances, def === undefined ? () => false : (inst) => inSubset(inst, def));
    prep.subsets.set(name, v);
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Compiled policy: regexes compiled and header names lower-cased once per policy object.

interface NormalizedRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: ReadonlyMap<string, string>;
  readonly caller: string | undefined;
}

function normalize(req: RouteRequest): NormalizedRequest {
  const headers = new Map<string, string>();
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined) continue;
    const value = typeof v === "string" ? v : v.join(",");
    const name = k.toLowerCase();
    const prev = headers.get(name);
    headers.set(name, prev === undefined ? value : `${prev},${value}`);
  }
  const q = req.path.indexOf("?");
  return {
    method: req.method.toUpperCase(),
    path: q < 0 ? req.path : req.path.slice(0, q),
    headers,
    caller: req.caller,
  };
}

function compileHeader(h: HeaderMatch): (req: NormalizedRequest) => boolean {
  const name = h.name.toLowerCase();
  let test: (value: string | undefined) => boolean;
  if ("exact" in h) test = (v) => v === h.exact;
  else if ("prefix" in h) test = (v) => v?.startsWith(h.prefix) === true;
  else if ("regex" in h) {
    const re = compileHeaderRegex(h.regex);
    // Long values are not fed to a backtracking engine: they do not match.
    test = (v) => v !== undefined && v.length <= HEADER_VALUE_MATCH_LENGTH_MAX && re.test(v);
  } else {
    const present = h.present;
    test = (v) => (v !== undefined) === present;
  }
  const invert = h.invert === true;
  return (req) => test(req.headers.get(name)) !== invert;
}

function compileMatch(m: RouteMatch): (req: NormalizedRequest) => boolean {
  const tests: ((req: NormalizedRequest) => boolean)[] = [];
  if (m.methods !== undefined) {
    const methods = new Set(m.methods);
    tests.push((r) => methods.has(r.method));
  }
  if (m.path !== undefined) {
    const p = m.path;
    tests.push("exact" in p ? (r) => r.path === p.exact : (r) => r.path.startsWith(p.prefix));
  }
  if (m.callers !== undefined) {
    const callers = new Set(m.callers);
    tests.push((r) => r.caller !== undefined && callers.has(r.caller));
  }
  for (const h of m.headers ?? []) tests.push(compileHeader(h));
  return (r) => tests.every((t) => t(r));
}

interface CompiledPolicy {
  readonly rules: readonly CompiledRule[];
  readonly allowedCallers: ReadonlySet<string> | undefined;
}

const compiledPolicies = new WeakMap<Policy, CompiledPolicy>();

function compiled(policy: Policy): CompiledPolicy {
  let c = compiledPolicies.get(policy);
  if (c === undefined) {
    const rules = (policy.routes ?? []).map((r, index) => ({
      index,
      name: r.name,
      match: r.match === undefined ? undefined : compileMatch(r.match),
      split: r.split,
      totalWeight: r.split.reduce((a, s) => a + s.weight, 0),
      timeoutMs: r.timeoutMs,
    }));
    const allowedCallers = policy.allowedCallers === undefined ? undefined : new Set(policy.allowedCallers);
    c = { rules, allowedCallers };
    compiledPolicies.set(policy, c);
  }
  return c;
}

/**
 * Chooses a subset by weight. With a hash key the choice is a function of the key, so a user
 * pinned by ring-hash or maglev also stays on one side of a canary split (sticky canary);
 * without one it is a random draw.
 */
function chooseSplit(rule: CompiledRule, hashKey: string | undefined, rand: Rand): string {
  invariant(rule.totalWeight > 0, "validated policies have split weights summing to > 0");
  const u = hashKey === undefined ? rand() : hash32(hashKey, SPLIT_HASH_SEED) / 4294967296;
  let x = u * rule.totalWeight;
  for (const s of rule.split) {
    if (x < s.weight) return s.subset;
    x -= s.weight;
  }
  // rand() returned (nearly) 1: the last entry with weight > 0.
  for (let k = rule.split.length - 1; k >= 0; k--)
    if (rule.split[k]!.weight > 0) return rule.split[k]!.subset;
  return rule.split[0]!.subset;
}

// ---------------------------------------------------------------------------------------------
// The decision

const EMPTY: ReadonlySet<string> = new Set();

function excludedIn(group: Group, ejected: ReadonlySet<string>, open: ReadonlySet<string>): number {
  let n = group.unhealthyIds.length;
  for (const id of ejected) {
    const i = group.indexById.get(id);
    if (i !== undefined && group.unhealthy[i] === 0) n += 1;
  }
  for (const id of open) {
    const i = group.indexById.get(id);
    if (i !== undefined && group.unhealthy[i] === 0 && !ejected.has(id)) n += 1;
  }
  return n;
}

/**
 * Every decision is built here with its fields in one order, so they all share one object shape:
 * object spreads of the partial results (the first version) made V8 clone through its slow
 * path, which cost about 20 us per pick, twenty times the rest of the decision.
 */
function decision(
  rule: number | "default",
  ruleName: string | undefined,
  subset: string,
  timeoutMs: number | undefined,
  balancer: BalancerKind,
  protect: boolean,
  zone: RouteDecision["zone"],
  instance: Instance | undefined,
  reason: RouteReason,
  skipped: readonly Skipped[],
  skippedTotal: number,
): RouteDecision {
  return {
    rule,
    ruleName,
    subset,
    instance,
    reason,
    protect,
    zone,
    balancer,
    timeoutMs,
    skipped,
    skippedTotal,
  };
}

export function route(
  policy: Policy,
  request: RouteRequest,
  instances: readonly Instance[],
  state: RouterState,
  nowMs: number,
  rand: Rand,
  signals: RouteSignals = {},
): RouteDecision {
  const ejected = signals.ejected ?? EMPTY;
  const open = signals.breakerOpen ?? EMPTY;
  const kind: BalancerKind = policy.loadBalancer?.kind ?? "round-robin";

  const cp = compiled(policy);
  if (
    cp.allowedCallers !== undefined &&
    (request.caller === undefined || !cp.allowedCallers.has(request.caller))
  ) {
    return decision(
      "default",
      undefined,
      ALL,
      policy.timeoutMs,
      kind,
      false,
      "off",
      undefined,
      "caller-not-allowed",
      [],
      0,
    );
  }

  const req = normalize(request);
  const header = policy.loadBalancer?.hashKey?.header.toLowerCase();
  const hashKey = request.hashKey ?? (header === undefined ? undefined : req.headers.get(header));
  const rule = cp.rules.find((r) => r.match === undefined || r.match(req));
  const subsetName = rule === undefined ? ALL : chooseSplit(rule, hashKey, rand);
  const prep = prepare(state, policy, instances);
  const view = subsetView(prep, subsetName);
  const ruleInfo = {
    rule: rule === undefined ? ("default" as const) : rule.index,
    ruleName: rule?.name,
    subset: subsetName,
    timeoutMs: rule?.timeoutMs ?? policy.timeoutMs,
  };

  const skipped: Skipped[] = [];
  let skippedTotal = 0;
  const list = (instanceId: string, why: SkipReason) => {
    if (skipped.length < EXPLAIN_SKIPPED_MAX) skipped.push({ instanceId, why });
  };

  const all = view.all;
  if (all.members.length === 0) {
    if (signals.explain !== false) for (const id of view.outsideSample) list(id, "filtered-by-policy");
    skippedTotal = view.outsideCount;
    return decision(
      ruleInfo.rule,
      ruleInfo.ruleName,
      subsetName,
      ruleInfo.timeoutMs,
      kind,
      false,
      "off",
      undefined,
      "subset-empty",
      skipped,
      skippedTotal,
    );
  }

  // Availability over the whole subset decides protect mode (Envoy computes panic per
  // priority level over all hosts, before zone routing).
  const threshold = policy.protectThreshold ?? PROTECT_THRESHOLD_DEFAULT;
  const excludedAll = excludedIn(all, ejected, open);
  const protect = isPanic(all.members.length, all.members.length - excludedAll, threshold);

  let group = all;
  let zone: RouteDecision["zone"] = "off";
  const za = policy.loadBalancer?.zoneAware;
  if (!protect && za?.enabled === true && state.localZone !== undefined) {
    const local = view.byZone.get(state.localZone);
    const minShare = za.minHealthyFraction ?? ZONE_MIN_HEALTHY_FRACTION_DEFAULT;
    if (local !== undefined) {
      const available = local.members.length - excludedIn(local, ejected, open);
      if (available > 0 && available / local.members.length >= minShare) {
        group = local;
        zone = "local";
      } else {
        zone = "failover";
      }
    } else {
      zone = "failover";
    }
  }

  const isExcluded = protect
    ? () => false
    : (i: number) =>
        group.unhealthy[i] === 1 || ejected.has(group.members[i]!.id) || open.has(group.members[i]!.id);

  // Explain: why the others were not eligible. The total is exact; the list is bounded by
  // EXPLAIN_SKIPPED_MAX and built only when asked for.
  const excludedInGroup = protect ? 0 : group === all ? excludedAll : excludedIn(group, ejected, open);
  skippedTotal = view.outsideCount + excludedInGroup + (all.members.length - group.members.length);
  if (signals.explain !== false) {
    if (!protect) {
      for (const id of group.unhealthyIds) list(id, "unhealthy");
      for (const id of ejected) {
        const i = group.indexById.get(id);
        if (i !== undefined && group.unhealthy[i] === 0) list(id, "ejected");
      }
      for (const id of open) {
        const i = group.indexById.get(id);
        if (i !== undefined && group.unhealthy[i] === 0 && !ejected.has(id)) list(id, "breaker-open");
      }
    }
    if (zone === "local") {
      for (const [z, g] of view.byZone) {
        if (z === state.localZone) continue;
        const listed = Math.min(g.members.length, Math.max(0, EXPLAIN_SKIPPED_MAX - skipped.length));
        for (let k = 0; k < listed; k++) list(g.members[k]!.id, "other-zone");
      }
    }
    for (const id of view.outsideSample) list(id, "filtered-by-policy");
  }

  const key = `${subsetName}\u0000${group === all ? ALL : (state.localZone ?? NO_ZONE)}`;
  const balancer = createBalancer(kind, group.members, rand, state.balancers.get(key));
  state.balancers.set(key, balancer);
  const i = pickIndex(balancer, { nowMs, rand, hashKey, isExcluded, load: state.load });
  const instance = i < 0 ? undefined : group.members[i];
  return decision(
    ruleInfo.rule,
    ruleInfo.ruleName,
    subsetName,
    ruleInfo.timeoutMs,
    kind,
    protect,
    zone,
    instance,
    instance === undefined ? "all-excluded" : "picked",
    skipped,
    skippedTotal,
  );
}

/**
 * Drops cached balancers of (subset, zone) groups that the current snapshot no longer has.
 * Groups that still exist keep theirs: the next route() reuses it if the members are the same.
 */
export function pruneBalancers(state: RouterState): void {
  const prep = state.prepared;
  if (prep === undefined) return;
  for (const [key, b] of state.balancers) {
    const [subset, zone] = key.split("\u0000") as [string, string];
    const known = subset === ALL || prep.policy.subsets?.some((s) => s.name === subset) === true;
    const view = known ? subsetView(prep, subset) : undefined;
    const group = view === undefined ? undefined : zone === ALL ? view.all : view.byZone.get(zone);
    if (group === undefined || b.members.length === 0) state.balancers.delete(key);
  }
}

/** The decision as text, for logs and the explain call: one line, then one per skip reason. */
export function describeDecision(d: RouteDecision): string {
  const rule =
    d.rule === "default" ? "default" : `${d.rule}${d.ruleName === undefined ? "" : `(${d.ruleName})`}`;
  const lines = [
    `rule=${rule} subset=${d.subset} instance=${d.instance?.id ?? "-"} reason=${d.reason} zone=${d.zone} protect=${d.protect}`,
  ];
  const byWhy = new Map<SkipReason, string[]>();
  for (const s of d.skipped) {
    let ids = byWhy.get(s.why);
    if (ids === undefined) byWhy.set(s.why, (ids = []));
    ids.push(s.instanceId);
  }
  for (const [why, ids] of byWhy) lines.push(`  skipped ${why}: ${ids.join(" ")}`);
  if (d.skippedTotal > d.skipped.length) lines.push(`  skipped ${d.skippedTotal - d.skipped.length} more`);
  return lines.join("\n");
}
