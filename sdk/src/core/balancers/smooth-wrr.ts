// Smooth weighted round-robin, nginx's algorithm (ngx_http_upstream_get_peer in
// ngx_http_upstream_round_robin.c): on every pick each peer's current weight grows by its
// weight, the peer with the largest current weight (first in order on ties) is chosen, and
// the total weight is subtracted from it. Weights 5,1,1 give a a b a c a a.
//
// nginx is O(n) per pick. We get the same sequence in O(D), D = number of distinct weights:
// after t picks a peer's current weight is (t+1)*w - W*c, where c is how often it was chosen.
// Peers of equal weight share the slope, so among them the one chosen fewest times (first in
// order on ties) leads, and equal-weight peers are therefore chosen in cyclic order: a group
// needs only a round counter r and a cursor p (members before p were chosen r+1 times, the
// rest r times). Every W picks we subtract W from t and w from each group's r, which leaves
// every current weight unchanged and keeps the numbers small.
//
// With more than SWRR_DISTINCT_WEIGHTS_MAX distinct weights we switch to an earliest-deadline-
// first schedule (Envoy's EdfScheduler for weighted round robin), O(log n) per pick: the same
// long-run shares, slightly less smooth. Members of weight 0 are never chosen (draining).
//
// Excluded members: nginx leaves down peers out of the loop; we pick over all members and
// pick again when the chosen one is excluded, which keeps the remaining members' shares
// proportional to their weights.

import { invariant } from "../errors.js";
import type { Instance } from "../instance.js";
import { HASH_PROBES_MAX, SWRR_DISTINCT_WEIGHTS_MAX } from "../limits.js";
import type { Rand } from "../random.js";
import { drawAllowed, type IsExcluded } from "./common.js";

interface WeightGroup {
  readonly weight: number;
  /** Member indices in ascending order (nginx's tie-break is peer order). */
  readonly members: readonly number[];
  rounds: number;
  cursor: number;
}

export interface SmoothWrrState {
  readonly mode: "grouped" | "edf";
  readonly n: number;
  readonly weights: Float64Array;
  readonly totalWeight: number;
  readonly groups: WeightGroup[];
  step: number;
  readonly edf: EdfHeap | undefined;
}

export function createSmoothWrr(members: readonly Instance[]): SmoothWrrState {
  const byWeight = new Map<number, number[]>();
  const weights = new Float64Array(members.length);
  let totalWeight = 0;
  members.forEach((m, i) => {
    weights[i] = Math.max(0, m.weight);
    if (m.weight <= 0) return;
    totalWeight += m.weight;
    let list = byWeight.get(m.weight);
    if (list === undefined) byWeight.set(m.weight, (list = []));
    list.push(i);
  });
  const n = members.length;
  if (byWeight.size > SWRR_DISTINCT_WEIGHTS_MAX) {
    return { mode: "edf", n, weights, totalWeight, groups: [], step: 0, edf: createEdf(members) };
  }
  const groups: WeightGroup[] = [...byWeight].map(([weight, list]) => ({
    weight,
    members: list,
    rounds: 0,
    cursor: 0,
  }));
  return { mode: "grouped", n, weights, totalWeight, groups, step: 0, edf: undefined };
}

/** One step of nginx's algorithm over all members with weight > 0; -1 if there are none. */
function stepGrouped(s: SmoothWrrState): number {
  let best: WeightGroup | undefined;
  let bestValue = 0;
  let bestIndex = 0;
  const t1 = s.step + 1;
  for (const g of s.groups) {
    const value = t1 * g.weight - s.totalWeight * g.rounds;
    const index = g.members[g.cursor]!;
    if (best === undefined || value > bestValue || (value === bestValue && index < bestIndex)) {
      best = g;
      bestValue = value;
      bestIndex = index;
    }
  }
  if (best === undefined) return -1;
  best.cursor += 1;
  if (best.cursor === best.members.length) {
    best.cursor = 0;
    best.rounds += 1;
  }
  s.step += 1;
  if (s.step === s.totalWeight) {
    s.step = 0;
    for (const g of s.groups) g.rounds -= g.weight;
  }
  return bestIndex;
}

export function pickSmoothWrr(s: SmoothWrrState, isExcluded: IsExcluded, rand: Rand): number {
  if (s.totalWeight === 0) return -1;
  for (let k = 0; k < HASH_PROBES_MAX; k++) {
    const i = s.mode === "grouped" ? stepGrouped(s) : stepEdf(s.edf!);
    if (i < 0) return -1;
    if (!isExcluded(i)) return i;
  }
  // Almost everything is excluded: any allowed member with weight > 0 will do.
  return drawAllowed(s.n, rand, (i) => isExcluded(i) || s.weights[i] === 0, HASH_PROBES_MAX);
}

// ---------------------------------------------------------------------------------------------
// Earliest deadline first (Envoy's EdfScheduler): each member's next deadline is its last one
// plus 1/weight; the smallest deadline is picked (lowest index on ties). A binary heap.

interface EdfHeap {
  readonly weights: Float64Array;
  readonly deadline: Float64Array;
  /** Heap of member indices ordered by (deadline, index). */
  readonly heap: Int32Array;
  size: number;
}

function createEdf(members: readonly Instance[]): EdfHeap {
  const n = members.length;
  const weights = new Float64Array(n);
  const deadline = new Float64Array(n);
  const heap = new Int32Array(n);
  let size = 0;
  members.forEach((m, i) => {
    weights[i] = m.weight;
    if (m.weight <= 0) return;
    deadline[i] = 1 / m.weight;
    heap[size++] = i;
  });
  const h: EdfHeap = { weights, deadline, heap, size };
  for (let i = (size >> 1) - 1; i >= 0; i--) siftDown(h, i);
  return h;
}

function less(h: EdfHeap, a: number, b: number): boolean {
  const da = h.deadline[a]!;
  const db = h.deadline[b]!;
  return da < db || (da === db && a < b);
}

function siftDown(h: EdfHeap, i: number): void {
  for (;;) {
    const l = 2 * i + 1;
    const r = l + 1;
    let m = i;
    if (l < h.size && less(h, h.heap[l]!, h.heap[m]!)) m = l;
    if (r < h.size && less(h, h.heap[r]!, h.heap[m]!)) m = r;
    if (m === i) return;
    const tmp = h.heap[i]!;
    h.heap[i] = h.heap[m]!;
    h.heap[m] = tmp;
    i = m;
  }
}

function stepEdf(h: EdfHeap): number {
  if (h.size === 0) return -1;
  const top = h.heap[0]!;
  invariant(h.weights[top]! > 0, "EDF heap holds only members with weight > 0");
  h.deadline[top] = h.deadline[top]! + 1 / h.weights[top]!;
  siftDown(h, 0);
  return top;
}
