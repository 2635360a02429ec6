// Plain round-robin: each pick takes the next member in order, skipping excluded ones.
// O(1) per pick while few members are excluded; see pickRoundRobin for the worst case.

import { HASH_PROBES_MAX } from "../limits.js";
import type { Rand } from "../random.js";
import { drawAllowed, type IsExcluded } from "./common.js";

export interface RoundRobinState {
  readonly n: number;
  /** The index the next pick starts from. Mutated only by pickRoundRobin. */
  next: number;
}

/** Starts at a random offset so that many clients do not all begin on member 0. */
export function createRoundRobin(n: number, rand: Rand): RoundRobinState {
  return { n, next: n === 0 ? 0 : Math.floor(rand() * n) % n };
}

export function pickRoundRobin(s: RoundRobinState, isExcluded: IsExcluded, rand: Rand): number {
  if (s.n === 0) return -1;
  // Walk a bounded run in order; a long run of excluded members (e.g. a whole rack ejected)
  // would make a plain walk O(n), so after HASH_PROBES_MAX steps fall back to random draws.
  const steps = Math.min(s.n, HASH_PROBES_MAX);
  for (let k = 0; k < steps; k++) {
    const i = s.next;
    s.next = (s.next + 1) % s.n;
    if (!isExcluded(i)) return i;
  }
  return drawAllowed(s.n, rand, isExcluded, HASH_PROBES_MAX);
}
