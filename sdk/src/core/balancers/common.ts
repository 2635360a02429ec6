// What every balancer shares: members are a frozen array of instances (one snapshot of a
// subset or zone group), a pick returns an index into it or -1, and exclusions (ejected,
// breaker open, reported unhealthy) are a predicate consulted at pick time. Exclusions are not
// baked into the balancer so that an ejection does not force a ring or maglev rebuild.

import { hash32 } from "../hash.js";
import type { Instance } from "../instance.js";
import type { Rand } from "../random.js";
import { randInt } from "../random.js";

export type IsExcluded = (index: number) => boolean;
export const NONE_EXCLUDED: IsExcluded = () => false;

/**
 * An order-independent fingerprint of a member set (ids and weights). A balancer built for
 * one fingerprint is reused for another snapshot with the same fingerprint, which is how a
 * ring or maglev table survives changes elsewhere in the registry. XOR of two independent
 * 32-bit hashes plus the count: a collision needs both 32-bit sums to collide.
 */
export function membersFingerprint(members: readonly Instance[]): string {
  let a = 0;
  let b = 0;
  for (const m of members) {
    const s = `${m.id}\u0000${m.weight}`;
    a ^= hash32(s, 0x9e3779b9);
    b ^= hash32(s, 0x85ebca6b);
  }
  return `${members.length}:${(a >>> 0).toString(16)}:${(b >>> 0).toString(16)}`;
}

/**
 * The first member at or after `start` (cyclically) that is not excluded. Linear in the worst
 * case; callers only reach it after their O(1) probes all hit excluded members, which needs
 * most of the group to be excluded (and then the protect threshold usually takes over).
 */
export function scanFrom(n: number, start: number, isExcluded: IsExcluded): number {
  for (let k = 0; k < n; k++) {
    const i = (start + k) % n;
    if (!isExcluded(i)) return i;
  }
  return -1;
}

/** Random draws until a non-excluded member, then a scan from a random start. */
export function drawAllowed(n: number, rand: Rand, isExcluded: IsExcluded, redraws: number): number {
  if (n === 0) return -1;
  for (let k = 0; k < redraws; k++) {
    const i = randInt(rand, n);
    if (!isExcluded(i)) return i;
  }
  return scanFrom(n, randInt(rand, n), isExcluded);
}

/** Member indices ordered by id: hash balancers build over this order so rebuilds agree. */
export function orderById(members: readonly Instance[]): number[] {
  const order = members.map((_, i) => i);
  order.sort((x, y) => {
    const a = members[x]!.id;
    const b = members[y]!.id;
    return a < b ? -1 : a > b ? 1 : 0;
  });
  return order;
}
