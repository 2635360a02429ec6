// Histories as a linearizability checker takes them: operations with an invocation time and,
// when the client learned the outcome, a return time. Times are any monotonic number (the
// recorder uses performance.now() in ms); the core never reads a clock.
//
// Outcomes follow Jepsen/Knossos: "ok" (the output is known), "fail" (the operation
// certainly did not take effect: it is left out of the check), "unknown" (a timeout or a
// broken connection: it may or may not have taken effect, at any time after its call).
// An unknown operation has no return bound (its return time is +infinity) and no output.

export type OpStatus = "ok" | "fail" | "unknown";

export type Operation<I, O> = {
  /** Unique within the history; reports name operations by it ("#12"). */
  id: number;
  /** The client (worker) that issued it. A worker never has two operations open at once. */
  process: number;
  input: I;
  /** Invocation time. */
  call: number;
  /** Return time; absent (read as +infinity) when the outcome is unknown. */
  ret?: number | undefined;
  status: OpStatus;
  /** What the operation returned; present exactly when status is "ok". */
  output?: O | undefined;
  /** The error seen, for fail and unknown operations (reports show it). */
  error?: string | undefined;
};

/** One event of an event-style history (Jepsen's :invoke / :ok / :fail / :info). */
export type HistoryEvent<I, O> =
  | { type: "invoke"; process: number; time: number; input: I }
  | { type: "ok"; process: number; time: number; output: O }
  | { type: "fail" | "unknown"; process: number; time: number; error?: string };

/**
 * Pairs each invocation with the next completion of the same process. An invocation that
 * never completes (the history ended, or the client crashed) is "unknown".
 */
export function operationsFromEvents<I, O>(events: readonly HistoryEvent<I, O>[]): Operation<I, O>[] {
  const open = new Map<number, Operation<I, O>>();
  const out: Operation<I, O>[] = [];
  for (const e of events) {
    if (e.type === "invoke") {
      if (open.has(e.process)) throw new Error(`process ${e.process} invoked twice without a completion`);
      const op: Operation<I, O> = {
        id: out.length,
        process: e.process,
        input: e.input,
        call: e.time,
        status: "unknown",
      };
      open.set(e.process, op);
      out.push(op);
      continue;
    }
    const op = open.get(e.process);
    if (op === undefined) throw new Error(`process ${e.process} completed an operation it never invoked`);
    open.delete(e.process);
    if (e.time < op.call)
      throw new Error(`operation #${op.id} returns (${e.time}) before its call (${op.call})`);
    op.status = e.type;
    if (e.type === "ok") {
      op.ret = e.time;
      op.output = e.output;
    } else if (e.type === "fail") {
      op.ret = e.time;
      op.error = e.error;
    } else {
      // Unknown: no return bound, whatever time the client gave up.
      op.error = e.error;
    }
  }
  return out;
}

/** Checks the shape every checker input must have; throws on the first problem. */
export function assertWellFormed<I, O>(ops: readonly Operation<I, O>[]): void {
  const ids = new Set<number>();
  for (const op of ops) {
    if (ids.has(op.id)) throw new Error(`operation id #${op.id} appears twice`);
    ids.add(op.id);
    if (!Number.isFinite(op.call)) throw new Error(`operation #${op.id} has no finite call time`);
    if (op.status === "ok") {
      if (op.ret === undefined || !(op.ret >= op.call))
        throw new Error(
          `operation #${op.id} is ok but its return time ${op.ret} is not >= its call ${op.call}`,
        );
      if (op.output === undefined) throw new Error(`operation #${op.id} is ok but has no output`);
    }
  }
}
