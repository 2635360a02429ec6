// The shell around the checker: records what concurrent clients did, with a monotonic
// clock, as the operations `checkHistory` takes. It wraps any client call; what the call
// returned becomes the output, and what it threw is classified as "fail" (certainly not
// applied) or "unknown" (may have been applied, at any later time).

import { performance } from "node:perf_hooks";
import type { Operation, OpStatus } from "./core/history.js";

export type ErrorOutcome = "fail" | "unknown";

/** Decides whether an error means "certainly not applied" (fail) or "maybe applied" (unknown). */
export type ErrorClassifier = (err: unknown) => ErrorOutcome;

// gRPC status codes (grpc/doc/statuscodes.md).
const grpc = {
  INVALID_ARGUMENT: 3,
  RESOURCE_EXHAUSTED: 8,
  PERMISSION_DENIED: 7,
  FAILED_PRECONDITION: 9,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/**
 * etcd's errors over gRPC, read conservatively: "fail" only when the request certainly did
 * not change anything, everything else "unknown".
 * - Refused before any proposal: "etcdserver: too many requests" and other
 *   RESOURCE_EXHAUSTED, permission and authentication errors, invalid arguments,
 *   unimplemented methods (etcd 3.4 api/v3rpc/rpctypes/error.go).
 * - Never sent: grpc-js fails a call with UNAVAILABLE "No connection established" when the
 *   channel has no connection, before anything is written.
 * - Unknown: deadlines, "request timed out", "leader changed", "no leader" (a proposal may be
 *   in a log that a later leader commits), and broken connections while the call was open.
 */
export function classifyEtcdError(err: unknown): ErrorOutcome {
  const e = err as { code?: unknown; details?: unknown; message?: unknown } | null;
  const code = typeof e?.code === "number" ? e.code : undefined;
  const text = `${typeof e?.details === "string" ? e.details : ""} ${typeof e?.message === "string" ? e.message : ""}`;
  switch (code) {
    case grpc.INVALID_ARGUMENT:
    case grpc.RESOURCE_EXHAUSTED:
    case grpc.PERMISSION_DENIED:
    case grpc.FAILED_PRECONDITION:
    case grpc.OUT_OF_RANGE:
    case grpc.UNIMPLEMENTED:
    case grpc.UNAUTHENTICATED:
      return "fail";
    case grpc.UNAVAILABLE:
      return /No connection established/.test(text) ? "fail" : "unknown";
    default:
      return "unknown";
  }
}

export type RecorderOptions = {
  /** Milliseconds from a monotonic clock (default performance.now()). */
  now?: () => number;
  classify?: ErrorClassifier;
};

/** What one recorded call came to. */
export type Outcome<O> = { status: "ok"; output: O } | { status: "fail" | "unknown"; error: string };

/**
 * Records the operations of concurrent workers. A worker runs one operation at a time. After
 * an operation of unknown outcome the worker goes on as a new process (Jepsen's rule): the
 * old one may still be "in" that operation forever.
 */
export class HistoryRecorder<I, O> {
  private readonly ops: Operation<I, O>[] = [];
  private readonly now: () => number;
  private readonly t0: number;
  private readonly classify: ErrorClassifier;
  private readonly processOf = new Map<number, number>();
  private readonly busy = new Set<number>();
  private nextProcess = 1000;

  constructor(opts: RecorderOptions = {}) {
    this.now = opts.now ?? (() => performance.now());
    this.t0 = this.now();
    this.classify = opts.classify ?? classifyEtcdError;
  }

  /** Runs `call` as `worker`'s next operation and records it; never throws what `call` throws. */
  async run(worker: number, input: I, call: () => Promise<O>): Promise<Outcome<O>> {
    if (this.busy.has(worker)) throw new Error(`worker ${worker} started an operation while one is open`);
    this.busy.add(worker);
    const process = this.processOf.get(worker) ?? worker;
    const op: Operation<I, O> = {
      id: this.ops.length,
      process,
      input,
      call: this.now() - this.t0,
      status: "unknown",
    };
    this.ops.push(op);
    try {
      const output = await call();
      op.ret = this.now() - this.t0;
      op.status = "ok";
      op.output = output;
      return { status: "ok", output };
    } catch (err) {
      const status: OpStatus = this.classify(err);
      op.status = status;
      op.error = err instanceof Error ? err.message : String(err);
      if (status === "fail") op.ret = this.now() - this.t0;
      else this.processOf.set(worker, this.nextProcess++);
      return { status, error: op.error };
    } finally {
      this.busy.delete(worker);
    }
  }

  /** The recorder's clock: ms since it was made, on the scale of the operations' times. */
  time(): number {
    return this.now() - this.t0;
  }

  /** The operations so far (a copy; open ones read as unknown). */
  history(): Operation<I, O>[] {
    return this.ops.map((op) => ({ ...op }));
  }

  /** Counts by outcome. */
  counts(): Record<OpStatus, number> {
    const c = { ok: 0, fail: 0, unknown: 0 };
    for (const op of this.ops) c[op.status] += 1;
    return c;
  }
}
