// One entry point over the balancers: build a BalancerState for a member set, pick from it.
// A pick is a function of the members, the balancer state, the request's hash key, the
// exclusion predicate, `nowMs` and the random source; the only thing it mutates is the
// balancer's own cursor (round-robin, smooth WRR), through the functions in balancers/.
//
// createBalancer(kind, members, previous) returns `previous` unchanged when the member set has
// the same fingerprint (ids and weights), so a snapshot that changes nothing in this group
// keeps its ring, maglev table and round-robin position: rebuilds happen only on change.

import { type IsExcluded, membersFingerprint, NONE_EXCLUDED } from "./balancers/common.js";
import { createMaglev, type MaglevState, pickMaglev } from "./balancers/maglev.js";
import { type LoadTracker, pickP2c } from "./balancers/p2c-peak-ewma.js";
import { createRingHash, pickRingHash, type RingHashState } from "./balancers/ring-hash.js";
import { createRoundRobin, pickRoundRobin, type RoundRobinState } from "./balancers/round-robin.js";
import { createSmoothWrr, pickSmoothWrr, type SmoothWrrState } from "./balancers/smooth-wrr.js";
import {
  createWeightedRandom,
  pickWeightedRandom,
  type WeightedRandomState,
} from "./balancers/weighted-random.js";
import { invariant } from "./errors.js";
import type { Instance } from "./instance.js";
import type { Rand } from "./random.js";

export const BALANCER_KINDS = [
  "round-robin",
  "weighted-round-robin",
  "random",
  "p2c-peak-ewma",
  "ring-hash",
  "maglev",
] as const;
export type BalancerKind = (typeof BALANCER_KINDS)[number];

export type BalancerState = {
  readonly kind: BalancerKind;
  readonly fingerprint: string;
  readonly members: readonly Instance[];
} & (
  | { readonly kind: "round-robin"; readonly rr: RoundRobinState }
  | { readonly kind: "weighted-round-robin"; readonly swrr: SmoothWrrState }
  | { readonly kind: "random"; readonly random: WeightedRandomState }
  | { readonly kind: "p2c-peak-ewma" }
  | { readonly kind: "ring-hash"; readonly ring: RingHashState; readonly random: WeightedRandomState }
  | { readonly kind: "maglev"; readonly maglev: MaglevState; readonly random: WeightedRandomState }
);

export interface PickInput {
  readonly nowMs: number;
  readonly rand: Rand;
  /** Required by ring-hash and maglev; without it they fall back to a weighted random pick. */
  readonly hashKey?: string | undefined;
  readonly isExcluded?: IsExcluded;
  /** Required by p2c-peak-ewma; without it every member has the same load. */
  readonly load?: LoadTracker | undefined;
}

export function createBalancer(
  kind: BalancerKind,
  members: readonly Instance[],
  rand: Rand,
  previous?: BalancerState,
): BalancerState {
  // The same frozen array (the router's prepared group) means the same members: O(1) reuse.
  if (previous !== undefined && previous.kind === kind && previous.members === members) return previous;
  const fingerprint = membersFingerprint(members);
  if (previous !== undefined && previous.kind === kind && previous.fingerprint === fingerprint) {
    // Same ids and weights: keep the built structure, but index into the new snapshot's array.
    // The structure was built over id order / indices of the old array, so reuse is only safe
    // when the arrays list the same ids at the same indices.
    if (sameOrder(previous.members, members)) return { ...previous, members } as BalancerState;
  }
  const base = { fingerprint, members };
  switch (kind) {
    case "round-robin":
      return { ...base, kind, rr: createRoundRobin(members.length, rand) };
    case "weighted-round-robin":
      return { ...base, kind, swrr: createSmoothWrr(members) };
    case "random":
      return { ...base, kind, random: createWeightedRandom(members) };
    case "p2c-peak-ewma":
      return { ...base, kind };
    case "ring-hash":
      return {
        ...base,
        kind,
        ring: createRingHash(members, previous?.kind === "ring-hash" ? previous.ring : undefined),
        random: createWeightedRandom(members),
      };
    case "maglev":
      return { ...base, kind, maglev: createMaglev(members), random: createWeightedRandom(members) };
  }
}

function sameOrder(a: readonly Instance[], b: readonly Instance[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i]!.id !== b[i]!.id) return false;
  return true;
}

/** Picks a member index, or -1 when every member is excluded (or the set is empty). */
export function pickIndex(b: BalancerState, input: PickInput): number {
  const isExcluded = input.isExcluded ?? NONE_EXCLUDED;
  const n = b.members.length;
  if (n === 0) return -1;
  let i: number;
  switch (b.kind) {
    case "round-robin":
      i = pickRoundRobin(b.rr, isExcluded, input.rand);
      break;
    case "weighted-round-robin":
      i = pickSmoothWrr(b.swrr, isExcluded, input.rand);
      break;
    case "random":
      i = pickWeightedRandom(b.random, isExcluded, input.rand);
      break;
    case "p2c-peak-ewma":
      i = pickP2c(b.members, input.load ?? EMPTY_TRACKER, input.nowMs, isExcluded, input.rand);
      break;
    case "ring-hash":
      i =
        input.hashKey === undefined
          ? pickWeightedRandom(b.random, isExcluded, input.rand)
          : pickRingHash(b.ring, input.hashKey, isExcluded);
      break;
    case "maglev":
      i =
        input.hashKey === undefined
          ? pickWeightedRandom(b.random, isExcluded, input.rand)
          : pickMaglev(b.maglev, input.hashKey, isExcluded);
      break;
  }
  invariant(i >= -1 && i < n, "balancer returned an index out of range");
  invariant(i < 0 || !isExcluded(i), "balancer returned an excluded member");
  return i;
}

/** Picks an instance, or undefined. */
export function pick(b: BalancerState, input: PickInput): Instance | undefined {
  const i = pickIndex(b, input);
  return i < 0 ? undefined : b.members[i];
}

const EMPTY_TRACKER: LoadTracker = { decayMs: 1, byId: new Map() };
