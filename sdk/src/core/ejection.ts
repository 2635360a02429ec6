// Outlier ejection with Envoy's semantics (docs: intro/arch_overview/upstream/outlier,
// api: config.cluster.v3.OutlierDetection), as a pure core driven by `nowMs`:
//
//   - consecutive failures: the host that fails `consecutiveFailures` times in a row is an
//     outlier at once (Envoy's consecutive_5xx; the shell decides what counts as a failure);
//   - success rate: every `intervalMs`, among hosts with at least `requestVolume` requests in
//     the interval, and only if there are at least `minimumHosts` of them, a host whose
//     success rate is below mean - stdevFactor * stdev is an outlier;
//   - failure percentage: every `intervalMs`, among hosts with at least `requestVolume`
//     requests (and at least `minimumHosts` such hosts), a host whose failure percentage is
//     >= `threshold` is an outlier;
//   - an outlier is ejected only if no host is ejected yet or the ejected share is below
//     `maxEjectionPercent` (so at least one host can always be ejected, as Envoy does);
//   - an ejection lasts baseEjectionTimeMs * (times ejected), capped at maxEjectionTimeMs;
//     the multiplier drops by one at each interval the host spends un-ejected;
//   - a host returns when its ejection time has passed, at the next tick().
//
// State is held in an EjectionState mutated only through the functions below (one Map entry
// per host: copying it per outcome would cost O(hosts) per request for 100,000 instances).
// Every function returns the events it caused; the shell publishes them on diagnostics
// channels and schedules the next tick() at nextDeadlineMs().

import { invariant } from "./errors.js";
import {
  EJECTION_BASE_TIME_MS_DEFAULT,
  EJECTION_CONSECUTIVE_FAILURES_DEFAULT,
  EJECTION_FAILURE_PERCENT_MIN_HOSTS_DEFAULT,
  EJECTION_FAILURE_PERCENT_REQUEST_VOLUME_DEFAULT,
  EJECTION_FAILURE_PERCENT_THRESHOLD_DEFAULT,
  EJECTION_HOSTS_MAX,
  EJECTION_INTERVAL_MS_DEFAULT,
  EJECTION_MAX_PERCENT_DEFAULT,
  EJECTION_MAX_TIME_MS_DEFAULT,
  EJECTION_SUCCESS_RATE_MIN_HOSTS_DEFAULT,
  EJECTION_SUCCESS_RATE_REQUEST_VOLUME_DEFAULT,
  EJECTION_SUCCESS_RATE_STDEV_FACTOR_DEFAULT,
} from "./limits.js";

export interface SuccessRateConfig {
  readonly minimumHosts: number;
  readonly requestVolume: number;
  readonly stdevFactor: number;
}

export interface FailurePercentageConfig {
  readonly threshold: number;
  readonly minimumHosts: number;
  readonly requestVolume: number;
}

export interface EjectionConfig {
  /** 0 disables consecutive-failure detection. */
  readonly consecutiveFailures: number;
  readonly intervalMs: number;
  readonly baseEjectionTimeMs: number;
  readonly maxEjectionTimeMs: number;
  readonly maxEjectionPercent: number;
  readonly successRate: SuccessRateConfig | undefined;
  readonly failurePercentage: FailurePercentageConfig | undefined;
}

export interface EjectionConfigInput {
  consecutiveFailures?: number;
  intervalMs?: number;
  baseEjectionTimeMs?: number;
  maxEjectionTimeMs?: number;
  maxEjectionPercent?: number;
  successRate?: Partial<SuccessRateConfig> | undefined;
  failurePercentage?: Partial<FailurePercentageConfig> | undefined;
}

/** Fills defaults (Envoy's). Success-rate and failure-percentage are on only when given. */
export function ejectionConfig(input: EjectionConfigInput = {}): EjectionConfig {
  const c: EjectionConfig = {
    consecutiveFailures: input.consecutiveFailures ?? EJECTION_CONSECUTIVE_FAILURES_DEFAULT,
    intervalMs: input.intervalMs ?? EJECTION_INTERVAL_MS_DEFAULT,
    baseEjectionTimeMs: input.baseEjectionTimeMs ?? EJECTION_BASE_TIME_MS_DEFAULT,
    maxEjectionTimeMs: Math.max(
      input.maxEjectionTimeMs ?? EJECTION_MAX_TIME_MS_DEFAULT,
      input.baseEjectionTimeMs ?? EJECTION_BASE_TIME_MS_DEFAULT,
    ),
    maxEjectionPercent: input.maxEjectionPercent ?? EJECTION_MAX_PERCENT_DEFAULT,
    successRate:
      input.successRate === undefined
        ? undefined
        : {
            minimumHosts: input.successRate.minimumHosts ?? EJECTION_SUCCESS_RATE_MIN_HOSTS_DEFAULT,
            requestVolume: input.successRate.requestVolume ?? EJECTION_SUCCESS_RATE_REQUEST_VOLUME_DEFAULT,
            stdevFactor: input.successRate.stdevFactor ?? EJECTION_SUCCESS_RATE_STDEV_FACTOR_DEFAULT,
          },
    failurePercentage:
      input.failurePercentage === undefined
        ? undefined
        : {
            threshold: input.failurePercentage.threshold ?? EJECTION_FAILURE_PERCENT_THRESHOLD_DEFAULT,
            minimumHosts: input.failurePercentage.minimumHosts ?? EJECTION_FAILURE_PERCENT_MIN_HOSTS_DEFAULT,
            requestVolume:
              input.failurePercentage.requestVolume ?? EJECTION_FAILURE_PERCENT_REQUEST_VOLUME_DEFAULT,
          },
  };
  invariant(c.consecutiveFailures >= 0, "consecutiveFailures must be >= 0");
  invariant(c.intervalMs > 0, "intervalMs must be > 0");
  invariant(c.baseEjectionTimeMs > 0, "baseEjectionTimeMs must be > 0");
  invariant(c.maxEjectionPercent >= 0 && c.maxEjectionPercent <= 100, "maxEjectionPercent must be in 0..100");
  return c;
}

export type EjectionReason = "consecutive-failures" | "success-rate" | "failure-percentage";

export type EjectionEvent =
  | {
      readonly type: "ejected";
      readonly id: string;
      readonly reason: EjectionReason;
      readonly ejectionTimeMs: number;
      readonly untilMs: number;
      readonly timesEjected: number;
    }
  | {
      readonly type: "ejection-refused";
      readonly id: string;
      readonly reason: EjectionReason;
      readonly why: "max-ejection-percent";
    }
  | { readonly type: "returned"; readonly id: string };

interface HostState {
  consecutiveFailures: number;
  intervalSuccesses: number;
  intervalFailures: number;
  /** The ejection multiplier: times ejected, minus intervals spent healthy since. */
  timesEjected: number;
  /** Defined while ejected. */
  ejectedUntilMs: number | undefined;
}

export interface EjectionState {
  readonly config: EjectionConfig;
  readonly hosts: Map<string, HostState>;
  /** Ids of ejected hosts; kept in step with hosts[*].ejectedUntilMs. */
  readonly ejected: Set<string>;
  nextIntervalMs: number;
}

export function createEjectionState(config: EjectionConfig, nowMs: number): EjectionState {
  return { config, hosts: new Map(), ejected: new Set(), nextIntervalMs: nowMs + config.intervalMs };
}

function newHost(): HostState {
  return {
    consecutiveFailures: 0,
    intervalSuccesses: 0,
    intervalFailures: 0,
    timesEjected: 0,
    ejectedUntilMs: undefined,
  };
}

/** Makes the tracked hosts equal to `ids` (the service's current instances); keeps history. */
export function syncHosts(s: EjectionState, ids: Iterable<string>): void {
  const keep = new Set(ids);
  invariant(keep.size <= EJECTION_HOSTS_MAX, "too many hosts for outlier detection");
  for (const id of s.hosts.keys()) {
    if (!keep.has(id)) {
      s.hosts.delete(id);
      s.ejected.delete(id);
    }
  }
  for (const id of keep) if (!s.hosts.has(id)) s.hosts.set(id, newHost());
}

export function isEjected(s: EjectionState, id: string): boolean {
  return s.ejected.has(id);
}

export function ejectedIds(s: EjectionState): ReadonlySet<string> {
  return s.ejected;
}

/** Envoy: eject if nothing is ejected yet, or while the ejected share is below the maximum. */
function mayEject(s: EjectionState): boolean {
  if (s.ejected.size === 0) return true;
  return (100 * s.ejected.size) / s.hosts.size < s.config.maxEjectionPercent;
}

function eject(
  s: EjectionState,
  id: string,
  h: HostState,
  nowMs: number,
  reason: EjectionReason,
): EjectionEvent {
  if (!mayEject(s)) return { type: "ejection-refused", id, reason, why: "max-ejection-percent" };
  h.timesEjected += 1;
  const ejectionTimeMs = Math.min(s.config.baseEjectionTimeMs * h.timesEjected, s.config.maxEjectionTimeMs);
  h.ejectedUntilMs = nowMs + ejectionTimeMs;
  h.consecutiveFailures = 0;
  s.ejected.add(id);
  return {
    type: "ejected",
    id,
    reason,
    ejectionTimeMs,
    untilMs: h.ejectedUntilMs,
    timesEjected: h.timesEjected,
  };
}

/**
 * Records one call's outcome. Unknown ids are ignored (the instance left the registry while the
 * call was in flight). Returns the ejection this outcome caused, if any.
 */
export function onOutcome(s: EjectionState, id: string, nowMs: number, ok: boolean): EjectionEvent[] {
  const h = s.hosts.get(id);
  if (h === undefined) return [];
  if (ok) {
    h.intervalSuccesses += 1;
    h.consecutiveFailures = 0;
    return [];
  }
  h.intervalFailures += 1;
  h.consecutiveFailures += 1;
  const limit = s.config.consecutiveFailures;
  if (limit > 0 && h.ejectedUntilMs === undefined && h.consecutiveFailures >= limit) {
    const ev = eject(s, id, h, nowMs, "consecutive-failures");
    // A refused ejection restarts the count, so the host is reconsidered after `limit` more.
    if (ev.type === "ejection-refused") h.consecutiveFailures = 0;
    return [ev];
  }
  return [];
}

/**
 * Advances time: returns hosts whose ejection has passed and, when an interval has elapsed,
 * runs the success-rate and failure-percentage detectors over that interval's counts.
 */
export function tick(s: EjectionState, nowMs: number): EjectionEvent[] {
  const events: EjectionEvent[] = [];
  for (const id of [...s.ejected]) {
    const h = s.hosts.get(id)!;
    if (h.ejectedUntilMs !== undefined && h.ejectedUntilMs <= nowMs) {
      h.ejectedUntilMs = undefined;
      // Failures of calls that were in flight while it was ejected do not count against it.
      h.consecutiveFailures = 0;
      s.ejected.delete(id);
      events.push({ type: "returned", id });
    }
  }
  if (nowMs >= s.nextIntervalMs) {
    events.push(...evaluateInterval(s, nowMs));
    // Skip whole missed intervals rather than replaying them: their counts are already merged.
    const missed = Math.floor((nowMs - s.nextIntervalMs) / s.config.intervalMs);
    s.nextIntervalMs += (missed + 1) * s.config.intervalMs;
  }
  invariant(s.ejected.size <= s.hosts.size, "more hosts ejected than tracked");
  return events;
}

/** When the shell should call tick() next. */
export function nextDeadlineMs(s: EjectionState): number {
  let next = s.nextIntervalMs;
  for (const id of s.ejected) next = Math.min(next, s.hosts.get(id)!.ejectedUntilMs ?? next);
  return next;
}

function evaluateInterval(s: EjectionState, nowMs: number): EjectionEvent[] {
  const events: EjectionEvent[] = [];
  const sr = s.config.successRate;
  if (sr !== undefined) {
    const rates: [string, number][] = [];
    for (const [id, h] of s.hosts) {
      const volume = h.intervalSuccesses + h.intervalFailures;
      if (h.ejectedUntilMs === undefined && volume >= sr.requestVolume)
        rates.push([id, h.intervalSuccesses / volume]);
    }
    if (rates.length >= sr.minimumHosts && rates.length > 0) {
      const mean = rates.reduce((a, [, r]) => a + r, 0) / rates.length;
      const variance = rates.reduce((a, [, r]) => a + (r - mean) ** 2, 0) / rates.length;
      const threshold = mean - sr.stdevFactor * Math.sqrt(variance);
      for (const [id, rate] of rates) {
        const h = s.hosts.get(id)!;
        if (rate < threshold && h.ejectedUntilMs === undefined)
          events.push(eject(s, id, h, nowMs, "success-rate"));
      }
    }
  }
  const fp = s.config.failurePercentage;
  if (fp !== undefined) {
    const candidates: [string, number][] = [];
    for (const [id, h] of s.hosts) {
      const volume = h.intervalSuccesses + h.intervalFailures;
      if (volume >= fp.requestVolume) candidates.push([id, (100 * h.intervalFailures) / volume]);
    }
    if (candidates.length >= fp.minimumHosts) {
      for (const [id, pct] of candidates) {
        const h = s.hosts.get(id)!;
        if (pct >= fp.threshold && h.ejectedUntilMs === undefined) {
          events.push(eject(s, id, h, nowMs, "failure-percentage"));
        }
      }
    }
  }
  for (const h of s.hosts.values()) {
    h.intervalSuccesses = 0;
    h.intervalFailures = 0;
    // Envoy lowers the multiplier of a host that stayed un-ejected through an interval, so a
    // host that recovered for good eventually gets the base ejection time again.
    if (h.ejectedUntilMs === undefined && h.timesEjected > 0) h.timesEjected -= 1;
  }
  return events;
}
