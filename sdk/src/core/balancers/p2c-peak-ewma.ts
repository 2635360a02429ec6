// Power of two choices over peak-EWMA load, as Finagle's `Balancers.p2cPeakEwma` and
// Linkerd's proxy do. Two distinct members are drawn at random and the one with the lower
// load wins, where load = cost * (outstanding + 1) and cost is a peak-sensitive moving
// average of observed round-trip times:
//   - a sample above the current cost replaces it at once (the "peak"), so a slow instance is
//     penalised immediately;
//   - otherwise cost = cost * w + rtt * (1 - w), with w = exp(-elapsed / decay): the average
//     forgets by wall time, not by sample count (Finagle's PeakEwma, decay time 10 s).
// The cost also decays towards zero while an instance receives no samples (Finagle's get()
// observes a zero rtt), so a once-slow instance is eventually probed again. A new instance
// starts at cost 0, so it is tried at once, but while its first request is outstanding its
// load is a large penalty (Finagle's Penalty), so it is not flooded before it has answered.
//
// Load is tracked per instance id in a LoadTracker that outlives snapshots (an instance keeps
// its history when another instance joins). The shell calls onRequestStart / onRequestEnd;
// the tracker is mutated only through those functions.

import { invariant } from "../errors.js";
import type { Instance } from "../instance.js";
import { PEAK_EWMA_DECAY_MS_DEFAULT, RANDOM_REDRAWS_MAX } from "../limits.js";
import type { Rand } from "../random.js";
import { randInt } from "../random.js";
import { drawAllowed, type IsExcluded } from "./common.js";

export interface InstanceLoad {
  outstanding: number;
  /** Peak-EWMA of round-trip time at `stampMs`; 0 until the first sample. */
  costMs: number;
  stampMs: number;
}

export interface LoadTracker {
  readonly decayMs: number;
  readonly byId: Map<string, InstanceLoad>;
}

/** Finagle's PeakEwma penalty: the load of an instance with requests out but no sample yet. */
export const PEAK_EWMA_PENALTY = 1e12;

export function createLoadTracker(decayMs = PEAK_EWMA_DECAY_MS_DEFAULT): LoadTracker {
  invariant(decayMs > 0, "peak EWMA decay must be > 0 ms");
  return { decayMs, byId: new Map() };
}

function entry(t: LoadTracker, id: string, nowMs: number): InstanceLoad {
  let e = t.byId.get(id);
  if (e === undefined) {
    e = { outstanding: 0, costMs: 0, stampMs: nowMs };
    t.byId.set(id, e);
  }
  return e;
}

export function onRequestStart(t: LoadTracker, id: string, nowMs: number): void {
  entry(t, id, nowMs).outstanding += 1;
}

/** Records the end of a request and its round-trip time (failures too: a fast error is load). */
export function onRequestEnd(t: LoadTracker, id: string, nowMs: number, rttMs: number): void {
  invariant(rttMs >= 0 && Number.isFinite(rttMs), "rtt must be a finite number >= 0");
  const e = entry(t, id, nowMs);
  e.outstanding = Math.max(0, e.outstanding - 1);
  if (rttMs > e.costMs) {
    e.costMs = rttMs;
  } else {
    const w = Math.exp(-Math.max(0, nowMs - e.stampMs) / t.decayMs);
    e.costMs = e.costMs * w + rttMs * (1 - w);
  }
  e.stampMs = nowMs;
}

/** A request released without an outcome (picked, never sent): only its slot is given back. */
export function onRequestCancel(t: LoadTracker, id: string): void {
  const e = t.byId.get(id);
  if (e !== undefined) e.outstanding = Math.max(0, e.outstanding - 1);
}

/** Forget instances that left the registry, so the tracker stays bounded by live instances. */
export function forgetInstance(t: LoadTracker, id: string): void {
  t.byId.delete(id);
}

/**
 * load = decayed cost * (outstanding + 1), or the penalty while an unmeasured instance has
 * requests out (Finagle's PeakEwma.get). A pure read: picks do not mutate the tracker.
 */
export function peakEwmaLoad(t: LoadTracker, id: string, nowMs: number): number {
  const e = t.byId.get(id);
  if (e === undefined) return 0;
  const cost = e.costMs * Math.exp(-Math.max(0, nowMs - e.stampMs) / t.decayMs);
  if (cost === 0 && e.outstanding > 0) return PEAK_EWMA_PENALTY + e.outstanding;
  return cost * (e.outstanding + 1);
}

export function pickP2c(
  members: readonly Instance[],
  tracker: LoadTracker,
  nowMs: number,
  isExcluded: IsExcluded,
  rand: Rand,
): number {
  const n = members.length;
  if (n === 0) return -1;
  const a = drawAllowed(n, rand, isExcluded, RANDOM_REDRAWS_MAX);
  if (a < 0 || n === 1) return a;
  // The second choice is drawn from the others; a few redraws, then settle for the first.
  let b = -1;
  for (let k = 0; k < RANDOM_REDRAWS_MAX; k++) {
    const c = (a + 1 + randInt(rand, n - 1)) % n;
    if (!isExcluded(c)) {
      b = c;
      break;
    }
  }
  if (b < 0) return a;
  const la = peakEwmaLoad(tracker, members[a]!.id, nowMs);
  const lb = peakEwmaLoad(tracker, members[b]!.id, nowMs);
  return lb < la ? b : a;
}
