// Consistent hashing on a ring with virtual nodes, weight-aware, after Envoy's ring hash load
// balancer (source/extensions/load_balancing_policies/ring_hash): each member owns a number
// of points on a 32-bit ring proportional to its weight, and a key goes to the owner of the
// first point at or after the key's hash. Adding one of N+1 equal members moves about
// 1/(N+1) of the keys, all of them to the new member (see the scale below).
//
// Points are named `<id>_<k>` and equal hashes are ordered by id, so two builds of the same
// member set agree whatever order the snapshot lists them in. Lookup is a binary
// search: O(log ring). Excluded owners are skipped by walking clockwise (HASH_PROBES_MAX
// points), which is what moves a key off an ejected instance without a rebuild.

import { invariant } from "../errors.js";
import { hash32 } from "../hash.js";
import type { Instance } from "../instance.js";
import { HASH_PROBES_MAX, RING_SIZE_MAX, RING_VNODES_PER_INSTANCE } from "../limits.js";
import { type IsExcluded, orderById, scanFrom } from "./common.js";

export interface RingHashState {
  readonly n: number;
  /** Point hashes in ascending order; equal hashes are ordered by owner id. */
  readonly points: Uint32Array;
  /** owners[k] is the member index owning points[k]. */
  readonly owners: Int32Array;
  /** Points per unit of weight; an incremental rebuild needs the same scale. */
  readonly scale: number;
  /** The member ids and weights the ring was built over, by member index. */
  readonly ids: readonly string[];
  readonly weights: readonly number[];
}

/** Ranks are packed below the hash in one float64 sort key; 2^21 > INSTANCES_PER_SERVICE_MAX. */
const RANK_BITS = 2 ** 21;

function ringScale(members: readonly Instance[]): number {
  let totalWeight = 0;
  let minWeight = Number.POSITIVE_INFINITY;
  for (const m of members) {
    if (m.weight <= 0) continue;
    totalWeight += m.weight;
    minWeight = Math.min(minWeight, m.weight);
  }
  if (totalWeight === 0) return 0;
  // The lightest member gets RING_VNODES_PER_INSTANCE points and the others proportionally
  // more. Envoy scales its ring to a minimum size that depends on the member count, which
  // reshuffles existing members' points whenever a member joins; anchoring the scale on the
  // lightest weight instead means a newcomer of weight >= the lightest only adds points, so
  // keys move only to it. Big sets would pass RING_SIZE_MAX: then the lightest member's share
  // is halved each time the set doubles (a power-of-two step), so the scale, and with it every
  // point, stays put between steps and incremental rebuilds keep working at 100,000 members.
  const units = totalWeight / minWeight;
  const step = 2 ** Math.ceil(Math.log2(Math.max(1, units)));
  // Weights so uneven that one point for the lightest would still overflow the ring: scale the
  // whole ring to its bound (lighter members keep one point each) and give up incrementality.
  if (step > RING_SIZE_MAX) return RING_SIZE_MAX / totalWeight;
  const perLightest = Math.min(RING_VNODES_PER_INSTANCE, Math.floor(RING_SIZE_MAX / step));
  return perLightest / minWeight;
}

function pointCount(scale: number, weight: number): number {
  return weight <= 0 ? 0 : Math.max(1, Math.round(scale * weight));
}

/**
 * Builds the ring for `members`. With `previous` (the ring of the last member set) and an
 * unchanged scale, it is rebuilt incrementally: surviving members keep their points (already
 * sorted), only joining or re-weighted members are hashed, and the two sorted runs are merged,
 * O(ring + new points * log) instead of hashing and sorting every point again. Both paths give
 * the same ring (a test checks it).
 */
export function createRingHash(members: readonly Instance[], previous?: RingHashState): RingHashState {
  const n = members.length;
  invariant(n < RANK_BITS, "ring hash: too many members");
  const scale = ringScale(members);
  const ids = members.map((m) => m.id);
  const weights = members.map((m) => m.weight);
  if (scale === 0) return { n, points: new Uint32Array(0), owners: new Int32Array(0), scale, ids, weights };
  if (previous !== undefined && previous.scale === scale && previous.points.length > 0) {
    return rebuildIncrementally(members, previous, scale, ids, weights);
  }
  const order = orderById(members).filter((i) => members[i]!.weight > 0);
  const keys: number[] = [];
  order.forEach((i, rank) => {
    const id = members[i]!.id;
    const count = pointCount(scale, members[i]!.weight);
    for (let k = 0; k < count; k++) keys.push(hash32(`${id}_${k}`) * RANK_BITS + rank);
  });
  const sorted = Float64Array.from(keys).sort();
  const points = new Uint32Array(sorted.length);
  const owners = new Int32Array(sorted.length);
  for (let k = 0; k < sorted.length; k++) {
    const v = sorted[k]!;
    const rank = v % RANK_BITS;
    owners[k] = order[rank]!;
    points[k] = (v - rank) / RANK_BITS;
  }
  return { n, points, owners, scale, ids, weights };
}

function rebuildIncrementally(
  members: readonly Instance[],
  previous: RingHashState,
  scale: number,
  ids: readonly string[],
  weights: readonly number[],
): RingHashState {
  const indexById = new Map<string, number>();
  members.forEach((m, i) => {
    indexById.set(m.id, i);
  });
  // Old member index -> new member index, when the member survived with the same weight.
  const remap = new Int32Array(previous.ids.length).fill(-1);
  const kept = new Uint8Array(members.length);
  previous.ids.forEach((id, j) => {
    const i = indexById.get(id);
    if (i !== undefined && members[i]!.weight === previous.weights[j] && members[i]!.weight > 0) {
      remap[j] = i;
      kept[i] = 1;
    }
  });
  // Surviving points, in ring order, re-pointed at the new indices.
  let survivors = 0;
  for (let k = 0; k < previous.owners.length; k++) if (remap[previous.owners[k]!]! >= 0) survivors += 1;
  const oldPoints = new Uint32Array(survivors);
  const oldOwners = new Int32Array(survivors);
  for (let k = 0, o = 0; k < previous.owners.length; k++) {
    const i = remap[previous.owners[k]!]!;
    if (i < 0) continue;
    oldPoints[o] = previous.points[k]!;
    oldOwners[o] = i;
    o += 1;
  }
  // Points of joining or re-weighted members, sorted by (hash, id).
  const fresh: { hash: number; owner: number }[] = [];
  members.forEach((m, i) => {
    if (kept[i] === 1 || m.weight <= 0) return;
    const count = pointCount(scale, m.weight);
    for (let k = 0; k < count; k++) fresh.push({ hash: hash32(`${m.id}_${k}`), owner: i });
  });
  const before = (ha: number, oa: number, hb: number, ob: number) =>
    ha < hb || (ha === hb && members[oa]!.id < members[ob]!.id);
  fresh.sort((a, b) =>
    before(a.hash, a.owner, b.hash, b.owner) ? -1 : before(b.hash, b.owner, a.hash, a.owner) ? 1 : 0,
  );
  const len = survivors + fresh.length;
  invariant(len <= RING_SIZE_MAX + members.length, "ring hash: ring grew past its bound");
  const points = new Uint32Array(len);
  const owners = new Int32Array(len);
  let a = 0;
  let b = 0;
  for (let k = 0; k < len; k++) {
    const takeOld =
      b >= fresh.length ||
      (a < survivors && before(oldPoints[a]!, oldOwners[a]!, fresh[b]!.hash, fresh[b]!.owner));
    if (takeOld) {
      points[k] = oldPoints[a]!;
      owners[k] = oldOwners[a]!;
      a += 1;
    } else {
      points[k] = fresh[b]!.hash;
      owners[k] = fresh[b]!.owner;
      b += 1;
    }
  }
  return { n: members.length, points, owners, scale, ids, weights };
}

/** Index of the first point >= h, wrapping to 0. */
function firstPointAtOrAfter(s: RingHashState, h: number): number {
  let lo = 0;
  let hi = s.points.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (s.points[mid]! < h) lo = mid + 1;
    else hi = mid;
  }
  return lo === s.points.length ? 0 : lo;
}

export function pickRingHash(s: RingHashState, key: string, isExcluded: IsExcluded): number {
  const len = s.points.length;
  if (len === 0) return -1;
  let k = firstPointAtOrAfter(s, hash32(key));
  const probes = Math.min(len, HASH_PROBES_MAX);
  for (let p = 0; p < probes; p++) {
    const owner = s.owners[k]!;
    if (!isExcluded(owner)) return owner;
    k = k + 1 === len ? 0 : k + 1;
  }
  return scanFrom(s.n, s.owners[k]!, isExcluded);
}
