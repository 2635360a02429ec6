// Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
// Load Balancer", NSDI 2016, §3.4), weighted as in Envoy's maglev load balancer. Each member
// has a permutation of the table slots given by (offset + j * skip) mod M with M prime; members
// take turns claiming their next free preferred slot until the table is full. A member of
// weight w takes a turn in proportion to w / max weight (Envoy's weighted variant). Lookup is
// O(1): table[hash(key) mod M]. Maglev moves slightly more than 1/N of keys on a change, in
// exchange for near-perfect balance.
//
// M is 65537 while that leaves MAGLEV_ENTRIES_PER_INSTANCE_MIN slots per member (the paper
// wants M >> N), then the next prime above that, capped. Members are taken in id order so two
// builds of the same set agree. Excluded members are skipped by re-hashing the key with the
// probe number as seed (HASH_PROBES_MAX times), then by a bounded scan.

import { invariant } from "../errors.js";
import { hash32 } from "../hash.js";
import type { Instance } from "../instance.js";
import {
  HASH_PROBES_MAX,
  MAGLEV_ENTRIES_PER_INSTANCE_MIN,
  MAGLEV_TABLE_SIZE_DEFAULT,
  MAGLEV_TABLE_SIZE_MAX,
} from "../limits.js";
import { type IsExcluded, orderById, scanFrom } from "./common.js";

export interface MaglevState {
  readonly n: number;
  readonly tableSize: number;
  /** table[slot] = member index, or -1 when no member has weight > 0. */
  readonly table: Int32Array;
}

const OFFSET_SEED = 0x2545f491;
const SKIP_SEED = 0x9e3779b9;

export function isPrime(x: number): boolean {
  if (x < 2) return false;
  if (x % 2 === 0) return x === 2;
  for (let d = 3; d * d <= x; d += 2) if (x % d === 0) return false;
  return true;
}

export function maglevTableSize(n: number): number {
  const wanted = n * MAGLEV_ENTRIES_PER_INSTANCE_MIN;
  if (wanted <= MAGLEV_TABLE_SIZE_DEFAULT) return MAGLEV_TABLE_SIZE_DEFAULT;
  let m = Math.min(wanted, MAGLEV_TABLE_SIZE_MAX);
  while (!isPrime(m)) m += 1;
  return m;
}

export function createMaglev(
  members: readonly Instance[],
  tableSize = maglevTableSize(members.length),
): MaglevState {
  invariant(isPrime(tableSize), "maglev table size must be prime");
  const n = members.length;
  const order = orderById(members).filter((i) => members[i]!.weight > 0);
  const table = new Int32Array(tableSize).fill(-1);
  if (order.length === 0) return { n, tableSize, table };
  invariant(order.length <= tableSize, "maglev: more members than table slots");
  const count = order.length;
  const offset = new Float64Array(count);
  const skip = new Float64Array(count);
  const next = new Float64Array(count);
  const weight = new Float64Array(count);
  const targetWeight = new Float64Array(count);
  let maxWeight = 0;
  order.forEach((i, j) => {
    const id = members[i]!.id;
    offset[j] = hash32(id, OFFSET_SEED) % tableSize;
    skip[j] = (hash32(id, SKIP_SEED) % (tableSize - 1)) + 1;
    weight[j] = members[i]!.weight;
    maxWeight = Math.max(maxWeight, members[i]!.weight);
  });
  let filled = 0;
  for (let iteration = 0; filled < tableSize; iteration++) {
    for (let j = 0; j < count && filled < tableSize; j++) {
      // Envoy: a member takes a turn only when its weight has "caught up" with its target.
      if (iteration * weight[j]! < targetWeight[j]!) continue;
      targetWeight[j] = targetWeight[j]! + maxWeight;
      let slot = (offset[j]! + next[j]! * skip[j]!) % tableSize;
      while (table[slot]! >= 0) {
        next[j] = next[j]! + 1;
        slot = (offset[j]! + next[j]! * skip[j]!) % tableSize;
      }
      table[slot] = order[j]!;
      next[j] = next[j]! + 1;
      filled += 1;
    }
  }
  return { n, tableSize, table };
}

export function pickMaglev(s: MaglevState, key: string, isExcluded: IsExcluded): number {
  if (s.table[0]! < 0) return -1;
  for (let p = 0; p < HASH_PROBES_MAX; p++) {
    const owner = s.table[hash32(key, p) % s.tableSize]!;
    if (!isExcluded(owner)) return owner;
  }
  return scanFrom(s.n, s.table[hash32(key) % s.tableSize]!, isExcluded);
}
