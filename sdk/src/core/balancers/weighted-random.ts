// Weighted random: a member is chosen with probability weight / total, by binary search over
// cumulative weights (O(log n)). The random source is an argument, so tests replay from a seed.
// If every weight is 0 the members are chosen uniformly, rather than not at all.

import type { Instance } from "../instance.js";
import { RANDOM_REDRAWS_MAX } from "../limits.js";
import type { Rand } from "../random.js";
import { drawAllowed, type IsExcluded, scanFrom } from "./common.js";

export interface WeightedRandomState {
  readonly n: number;
  /** cumulative[i] = sum of weights of members 0..i. */
  readonly cumulative: Float64Array;
  readonly totalWeight: number;
}

export function createWeightedRandom(members: readonly Instance[]): WeightedRandomState {
  const cumulative = new Float64Array(members.length);
  let total = 0;
  members.forEach((m, i) => {
    total += Math.max(0, m.weight);
    cumulative[i] = total;
  });
  return { n: members.length, cumulative, totalWeight: total };
}

function draw(s: WeightedRandomState, rand: Rand): number {
  const x = rand() * s.totalWeight;
  // First index whose cumulative weight exceeds x.
  let lo = 0;
  let hi = s.n - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (s.cumulative[mid]! > x) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export function pickWeightedRandom(s: WeightedRandomState, isExcluded: IsExcluded, rand: Rand): number {
  if (s.n === 0) return -1;
  if (s.totalWeight === 0) return drawAllowed(s.n, rand, isExcluded, RANDOM_REDRAWS_MAX);
  for (let k = 0; k < RANDOM_REDRAWS_MAX; k++) {
    const i = draw(s, rand);
    if (!isExcluded(i)) return i;
  }
  const start = draw(s, rand);
  const weighted = scanFrom(s.n, start, (i) => isExcluded(i) || weightAt(s, i) === 0);
  return weighted >= 0 ? weighted : scanFrom(s.n, start, isExcluded);
}

function weightAt(s: WeightedRandomState, i: number): number {
  return s.cumulative[i]! - (i === 0 ? 0 : s.cumulative[i - 1]!);
}
