// The linearizability check: Wing & Gong's search (1993) with Lowe's memo of visited
// configurations (2017, "Testing for linearizability", the "just-in-time linearization"
// cache), as Porcupine implements it (github.com/anishathalye/porcupine, checker.go).
//
// Calls and returns are entries of one doubly-linked list in time order. The search walks
// it from the front: at a call it tries to linearize that operation next (the model must
// accept its output in the current state); at a return it has met an operation that must
// already have taken effect, so it backtracks. A configuration is the set of linearized
// operations (a bitset) plus the model state; one seen before is never explored again,
// which turns the factorial search into one bounded by the number of configurations.
// A step budget turns a search that would take too long into an "unknown" verdict.
//
// Pure: no clock, no randomness; the same history always gives the same verdict, steps
// and report.

import { assertWellFormed, type Operation } from "./history.js";
import type { Model } from "./model.js";

export type Verdict = "linearizable" | "not-linearizable" | "unknown";

export type CheckOptions = {
  /**
   * Search steps allowed per partition before it is given up as "unknown". A step is one
   * visit of a list entry; a modern CPU does several million a second.
   */
  maxStepsPerPartition?: number;
};

export const defaultMaxStepsPerPartition = 5_000_000;

/** Why one operation could not be linearized next, after the longest prefix found. */
export type Blocked<I, O> = { op: Operation<I, O>; reason: string };

/** Where the search got furthest in a partition that is not linearizable. */
export type Failure<S, I, O> = {
  /** The longest linearizable prefix found, in linearization order. */
  prefix: Operation<I, O>[];
  /** The model state after the prefix. */
  state: S;
  /** The earliest-returning operation outside the prefix: it had to take effect by its return. */
  blocker: Operation<I, O>;
  /** Every operation that could have gone next (called before the blocker returned), and why none can. */
  candidates: Blocked<I, O>[];
  /** The operations worth drawing: the candidates and the end of the prefix that overlaps them. */
  window: Operation<I, O>[];
};

export type PartitionResult<S, I, O> = {
  key: string;
  verdict: Verdict;
  /** Operations checked (fail operations and read-only operations of unknown outcome are left out). */
  operations: number;
  /** Operations of unknown outcome among them. */
  unknown: number;
  steps: number;
  failure?: Failure<S, I, O> | undefined;
};

export type CheckResult<S, I, O> = {
  verdict: Verdict;
  /** One per partition, in key order. */
  partitions: PartitionResult<S, I, O>[];
  operations: number;
  steps: number;
};

/** Checks a whole history: splits it by the model's partitions and checks each alone. */
export function checkHistory<S, I, O>(
  model: Model<S, I, O>,
  history: readonly Operation<I, O>[],
  opts: CheckOptions = {},
): CheckResult<S, I, O> {
  assertWellFormed(history);
  const byKey = new Map<string, Operation<I, O>[]>();
  for (const op of history) {
    const key = model.partition(op.input);
    let list = byKey.get(key);
    if (list === undefined) byKey.set(key, (list = []));
    list.push(op);
  }
  const keys = [...byKey.keys()].sort();
  const partitions = keys.map((k) => checkPartition(model, k, byKey.get(k)!, opts));
  const verdict: Verdict = partitions.some((p) => p.verdict === "not-linearizable")
    ? "not-linearizable"
    : partitions.some((p) => p.verdict === "unknown")
      ? "unknown"
      : "linearizable";
  return {
    verdict,
    partitions,
    operations: partitions.reduce((n, p) => n + p.operations, 0),
    steps: partitions.reduce((n, p) => n + p.steps, 0),
  };
}

/** Murmur3's finalizer: a well-spread 32-bit value per operation, XORed into the set's hash (Zobrist). */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * The memo of visited configurations (linearized set, state): a hash table with chaining,
 * its bitsets packed in one growing array. Millions of small typed arrays would spend the
 * search's time in the garbage collector.
 */
class ConfigurationSet<S> {
  private heads = new Int32Array(1024).fill(-1);
  private chain = new Int32Array(1024);
  private hashes = new Uint32Array(1024);
  private pool: Uint32Array;
  private readonly states: S[] = [];
  private size = 0;

  constructor(
    private readonly words: number,
    private readonly equal: (a: S, b: S) => boolean,
  ) {
    this.pool = new Uint32Array(1024 * Math.max(1, words));
  }

  /** Adds the configuration; false when it was already there. */
  add(hash: number, bits: Uint32Array, state: S): boolean {
    const w = this.words;
    const mask = this.heads.length - 1;
    for (let i = this.heads[hash & mask]!; i !== -1; i = this.chain[i]!) {
      if (this.hashes[i] !== hash) continue;
      let same = true;
      for (let k = 0; k < w && same; k++) same = this.pool[i * w + k] === bits[k];
      if (same && this.equal(this.states[i]!, state)) return false;
    }
    if (this.size === this.chain.length) this.grow();
    const i = this.size++;
    this.pool.set(bits, i * w);
    this.states.push(state);
    this.hashes[i] = hash;
    const slot = hash & (this.heads.length - 1);
    this.chain[i] = this.heads[slot]!;
    this.heads[slot] = i;
    return true;
  }

  private grow(): void {
    const capacity = this.chain.length * 2;
    const pool = new Uint32Array(capacity * Math.max(1, this.words));
    pool.set(this.pool);
    this.pool = pool;
    const hashes = new Uint32Array(capacity);
    hashes.set(this.hashes);
    this.hashes = hashes;
    this.chain = new Int32Array(capacity);
    this.heads = new Int32Array(capacity).fill(-1);
    for (let i = 0; i < this.size; i++) {
      const slot = this.hashes[i]! & (capacity - 1);
      this.chain[i] = this.heads[slot]!;
      this.heads[slot] = i;
    }
  }
}

/** Checks the operations of one partition (all must belong to it). */
export function checkPartition<S, I, O>(
  model: Model<S, I, O>,
  key: string,
  history: readonly Operation<I, O>[],
  opts: CheckOptions = {},
): PartitionResult<S, I, O> {
  const budget = opts.maxStepsPerPartition ?? defaultMaxStepsPerPartition;
  if (!(budget > 0)) throw new Error("maxStepsPerPartition must be positive");
  // A failed operation did not take effect; a read of unknown outcome saw nothing anyone
  // knows. Neither constrains the search.
  const ops = history.filter(
    (op) => op.status === "ok" || (op.status === "unknown" && !model.readOnly(op.input)),
  );
  const n = ops.length;
  const unknown = ops.filter((op) => op.status === "unknown").length;
  const retOf = (op: Operation<I, O>) => (op.status === "ok" ? op.ret! : Number.POSITIVE_INFINITY);

  // Entries 1..2n in time order; 0 is the list head. Calls sort before returns at equal
  // times, so operations that touch in time count as concurrent (the lenient reading).
  const order: { j: number; call: boolean; t: number }[] = [];
  ops.forEach((op, j) => {
    order.push({ j, call: true, t: op.call });
    order.push({ j, call: false, t: retOf(op) });
  });
  order.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : a.call !== b.call ? (a.call ? -1 : 1) : a.j - b.j));
  const size = 2 * n + 1;
  const next = new Int32Array(size);
  const prev = new Int32Array(size);
  const entryOp = new Int32Array(size);
  const entryIsCall = new Uint8Array(size);
  const callEntry = new Int32Array(n);
  const retEntry = new Int32Array(n);
  order.forEach((x, i) => {
    const e = i + 1;
    entryOp[e] = x.j;
    entryIsCall[e] = x.call ? 1 : 0;
    if (x.call) callEntry[x.j] = e;
    else retEntry[x.j] = e;
  });
  for (let e = 0; e < size; e++) {
    next[e] = e + 1 < size ? e + 1 : -1;
    prev[e] = e - 1;
  }
  // Dancing links: an operation is lifted out (call, then return) when linearized and put
  // back in reverse order on backtracking, so the list always holds the rest.
  const remove = (e: number) => {
    next[prev[e]!] = next[e]!;
    if (next[e] !== -1) prev[next[e]!] = prev[e]!;
  };
  const restore = (e: number) => {
    next[prev[e]!] = e;
    if (next[e] !== -1) prev[next[e]!] = e;
  };

  const zobrist = new Uint32Array(n);
  for (let j = 0; j < n; j++) zobrist[j] = mix32(j + 1);
  const bits = new Uint32Array((n + 31) >>> 5);
  let setHash = 0;
  const cache = new ConfigurationSet<S>(bits.length, model.equal);
  const flip = (j: number) => {
    bits[j >>> 5]! ^= 1 << (j & 31);
    setHash ^= zobrist[j]!;
  };

  const stackOp: number[] = [];
  const stackState: S[] = [];
  let best: number[] = [];
  let state = model.init();
  let steps = 0;
  let e = next[0]!;
  let verdict: Verdict;
  for (;;) {
    if (next[0] === -1) {
      verdict = "linearizable";
      break;
    }
    if (steps >= budget) {
      verdict = "unknown";
      break;
    }
    steps++;
    if (entryIsCall[e] === 1) {
      const j = entryOp[e]!;
      const op = ops[j]!;
      const after = model.step(state, op.input, op.status === "ok" ? op.output : undefined);
      // An operation of unknown outcome that would change nothing here is better placed
      // at the end, where it changes nothing either (its return is at +infinity): skip
      // that branch, which otherwise doubles the configurations per pending operation.
      const pointless = after !== undefined && op.status === "unknown" && model.equal(after, state);
      if (after !== undefined && !pointless) {
        flip(j);
        const h = (setHash ^ Math.imul(model.hash(after), 0x9e3779b1)) >>> 0;
        if (cache.add(h, bits, after)) {
          stackOp.push(j);
          stackState.push(state);
          state = after;
          remove(callEntry[j]!);
          remove(retEntry[j]!);
          if (stackOp.length > best.length) best = stackOp.slice();
          e = next[0]!;
          continue;
        }
        flip(j);
      }
      e = next[e]!;
    } else {
      // A return: this operation must already have taken effect.
      if (ops[entryOp[e]!]!.status === "unknown") {
        // Returns at +infinity come last, so every operation left is of unknown outcome:
        // they can all be linearized at the end (the model accepts any unknown output),
        // where they change nothing anyone saw.
        verdict = "linearizable";
        break;
      }
      if (stackOp.length === 0) {
        verdict = "not-linearizable";
        break;
      }
      const j = stackOp.pop()!;
      state = stackState.pop()!;
      flip(j);
      restore(retEntry[j]!);
      restore(callEntry[j]!);
      e = next[callEntry[j]!]!;
    }
  }
  const result: PartitionResult<S, I, O> = { key, verdict, operations: n, unknown, steps };
  if (verdict === "not-linearizable") result.failure = explain(model, ops, order, best);
  return result;
}

/** Describes where the search got furthest: the prefix, the operation it could not pass, and why. */
function explain<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly Operation<I, O>[],
  order: readonly { j: number; call: boolean }[],
  best: readonly number[],
): Failure<S, I, O> {
  let state = model.init();
  for (const j of best) {
    const op = ops[j]!;
    const after = model.step(state, op.input, op.status === "ok" ? op.output : undefined);
    if (after === undefined)
      throw new Error("linearizability: the recorded prefix does not replay (checker bug)");
    state = after;
  }
  const inPrefix = new Set(best);
  // The first return outside the prefix, in list order. At the first time the search
  // reached this prefix length, every call before that return was tried and refused by
  // the model (had one been accepted, a longer prefix would exist).
  const blockerAt = order.findIndex((x) => !x.call && !inPrefix.has(x.j));
  if (blockerAt < 0)
    throw new Error("linearizability: a failed search left no return outside the prefix (checker bug)");
  const blocker = ops[order[blockerAt]!.j]!;
  const candidates: Blocked<I, O>[] = [];
  for (let i = 0; i < blockerAt; i++) {
    const x = order[i]!;
    if (!x.call || inPrefix.has(x.j)) continue;
    const op = ops[x.j]!;
    const output = op.status === "ok" ? op.output : undefined;
    const after = model.step(state, op.input, output);
    candidates.push({
      op,
      reason:
        after === undefined
          ? `${model.describeOperation(op.input, output)} is impossible when the value is ${model.describeState(state)}`
          : op.status === "unknown" && model.equal(after, state)
            ? `${model.describeOperation(op.input, output)} would change nothing here (it can go last instead)`
            : `${model.describeOperation(op.input, output)} could go next, but no order of the rest works after it`,
    });
  }
  // The window: the candidates, and the end of the prefix: its last few operations, the
  // last two state changes (which explain the state), and the operations that overlap the
  // candidates in time; at most 12 prefix operations.
  const start = Math.min(...candidates.map((c) => c.op.call));
  const prefix = best.map((j) => ops[j]!);
  const tail = new Set<Operation<I, O>>();
  const writes = prefix.filter((op) => !model.readOnly(op.input));
  for (const op of [...writes.slice(-2), ...prefix.slice(-6)]) tail.add(op);
  for (let i = prefix.length - 1; i >= 0 && tail.size < 12; i--) {
    const op = prefix[i]!;
    if (op.status !== "ok" || op.ret! >= start) tail.add(op);
  }
  const window = [...tail, ...candidates.map((c) => c.op)].sort((a, b) => a.call - b.call || a.id - b.id);
  return { prefix, state, blocker, candidates, window };
}
