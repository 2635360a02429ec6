// A sequential specification for the checker (Herlihy & Wing 1990: a history is
// linearizable when its operations can be ordered, each at a point between its call and
// its return, so that the order is legal for the sequential object). Shaped like
// Porcupine's Model: the object is split into independent partitions, and `step` is the
// sequential object's transition function.

export type Model<S, I, O> = {
  /** The state before any operation (etcd: every key absent). */
  init(): S;
  /** Which independent part an operation touches; the checker checks each part alone. */
  partition(input: I): string;
  /**
   * The state after `input` returned `output` in `state`, or undefined when that output is
   * impossible there. `output` undefined means the outcome is unknown: any output is
   * allowed, and `step` must then never return undefined (the checker relies on being able
   * to linearize unknown operations last, where they change nothing anyone saw).
   */
  step(state: S, input: I, output: O | undefined): S | undefined;
  equal(a: S, b: S): boolean;
  /** A 32-bit hash consistent with `equal`, for the memo of visited configurations. */
  hash(state: S): number;
  /** Operations that change nothing: with an unknown outcome they constrain nothing and are dropped. */
  readOnly(input: I): boolean;
  describeOperation(input: I, output: O | undefined): string;
  describeState(state: S): string;
};

// --- The key-value model: etcd's single-key operations ------------------------------

/** put(k, v); get(k) → value | null; delete(k) → deleted count; cas: if value(k) == expected then put(k, value). */
export type KvInput =
  | { f: "put"; key: string; value: string }
  | { f: "get"; key: string }
  | { f: "delete"; key: string }
  | { f: "cas"; key: string; expected: string | null; value: string };

/**
 * What a KV operation returned: `value` for get (null: absent), `deleted` for delete (etcd's
 * count; optional, checked when given), `succeeded` for cas, nothing for put.
 */
export type KvOutput = { value?: string | null; deleted?: number; succeeded?: boolean };

/** The value of one key; null while absent. */
export type KvState = string | null;

function hashString(s: string): number {
  // FNV-1a, 32 bits.
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

const show = (v: string | null | undefined): string =>
  v === null || v === undefined ? "∅" : JSON.stringify(v);

export const kvModel: Model<KvState, KvInput, KvOutput> = {
  init: () => null,
  partition: (input) => input.key,
  step(state, input, output) {
    switch (input.f) {
      case "put":
        return input.value;
      case "get":
        if (output === undefined) return state;
        if (output.value === undefined)
          throw new Error("kv model: a get's output needs a value (null if absent)");
        return output.value === state ? state : undefined;
      case "delete":
        if (output?.deleted !== undefined && output.deleted !== (state === null ? 0 : 1)) return undefined;
        return null;
      case "cas": {
        const applies = state === input.expected;
        if (output !== undefined) {
          if (output.succeeded === undefined) throw new Error("kv model: a cas's output needs succeeded");
          if (output.succeeded !== applies) return undefined;
        }
        return applies ? input.value : state;
      }
    }
  },
  equal: (a, b) => a === b,
  hash: (s) => (s === null ? 0x9e3779b9 : hashString(s)),
  readOnly: (input) => input.f === "get",
  describeOperation(input, output) {
    const ret = output === undefined ? " → ?" : "";
    switch (input.f) {
      case "put":
        return `put ${show(input.value)}${ret}`;
      case "get":
        return `get → ${output === undefined ? "?" : show(output.value)}`;
      case "delete":
        return `delete${output?.deleted === undefined ? ret : ` → ${output.deleted}`}`;
      case "cas":
        return `cas ${show(input.expected)}→${show(input.value)}${output === undefined ? ret : output.succeeded ? " ✓" : " ✗"}`;
    }
  },
  describeState: (s) => show(s),
};
