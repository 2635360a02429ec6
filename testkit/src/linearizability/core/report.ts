// Reports for people: the verdict per partition and, for a partition that is not
// linearizable, the longest linearizable prefix found, the operation it could not pass,
// and a timeline of the few operations around it.

import type { CheckResult, Failure, PartitionResult } from "./check.js";
import type { Operation } from "./history.js";
import type { Model } from "./model.js";

const timelineWidth = 48;
const ms = (t: number) => t.toFixed(1);

function label<S, I, O>(model: Model<S, I, O>, op: Operation<I, O>): string {
  const what = model.describeOperation(op.input, op.status === "ok" ? op.output : undefined);
  return `#${op.id} p${op.process} ${what}${op.status === "unknown" ? " (unknown outcome)" : ""}`;
}

/** One row per operation: a bar from call to return on a shared scale; `>` runs off for unknown outcomes. */
export function formatTimeline<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly Operation<I, O>[],
  note: (op: Operation<I, O>) => string = () => "",
): string {
  if (ops.length === 0) return "";
  const t0 = Math.min(...ops.map((o) => o.call));
  const ends = ops.map((o) => (o.status === "ok" ? o.ret! : o.call));
  const t1 = Math.max(t0, ...ends);
  const span = t1 - t0;
  const col = (t: number) => (span === 0 ? 0 : Math.round(((t - t0) / span) * (timelineWidth - 1)));
  const labels = ops.map((o) => label(model, o));
  const w = Math.max(...labels.map((l) => l.length));
  const rows = ops.map((o, i) => {
    const from = col(o.call);
    const bar =
      o.status === "ok"
        ? `${" ".repeat(from)}[${"=".repeat(Math.max(0, col(o.ret!) - from - 1))}${col(o.ret!) > from ? "]" : ""}`
        : `${" ".repeat(from)}[${"=".repeat(Math.max(0, timelineWidth - from - 1))}>`;
    const times = o.status === "ok" ? `${ms(o.call)}–${ms(o.ret!)}` : `${ms(o.call)}–?`;
    return `  ${labels[i]!.padEnd(w)} |${bar.padEnd(timelineWidth + 1)}| ${times}${note(o)}`;
  });
  return [
    `  ${"".padEnd(w)}  ${ms(t0)} ms${" ".repeat(Math.max(1, timelineWidth - 12))}${ms(t1)} ms`,
    ...rows,
  ].join("\n");
}

/** The failure of one partition: prefix length, the blocked operation, the reasons, the timeline. */
export function formatFailure<S, I, O>(
  model: Model<S, I, O>,
  p: PartitionResult<S, I, O>,
  f: Failure<S, I, O>,
): string {
  const position = new Map(f.prefix.map((op, i) => [op, i + 1]));
  const blocked = new Set(f.candidates.map((c) => c.op));
  const lines = [
    `key ${JSON.stringify(p.key)}: NOT LINEARIZABLE (${p.operations} operations, ${p.unknown} of unknown outcome; ${p.steps} steps)`,
    `  longest linearizable prefix: ${f.prefix.length} of ${p.operations} operations; after it the value is ${model.describeState(f.state)}`,
    `  ${label(model, f.blocker)} returned at ${ms(f.blocker.ret!)} ms, so it took effect by then; but nothing that could go next can:`,
    ...f.candidates.map((c) => `    #${c.op.id}: ${c.reason}`),
    `  timeline (n = position in the prefix, ✗ = cannot go next):`,
    formatTimeline(model, f.window, (op) =>
      position.has(op) ? `  ${position.get(op)}` : blocked.has(op) ? "  ✗" : "",
    ),
  ];
  return lines.join("\n");
}

/**
 * The whole result: a summary line, a line per partition that is not linearizable or
 * unknown, and the detailed failure of the smallest failing partitions (fewest operations
 * first, at most `maxFailures`).
 */
export function formatCheckResult<S, I, O>(
  model: Model<S, I, O>,
  r: CheckResult<S, I, O>,
  opts: { maxFailures?: number } = {},
): string {
  const count = (v: string) => r.partitions.filter((p) => p.verdict === v).length;
  const lines = [
    `linearizability: ${r.verdict.toUpperCase()}: ${r.partitions.length} partitions (${count("linearizable")} linearizable, ` +
      `${count("not-linearizable")} not, ${count("unknown")} unknown), ${r.operations} operations, ${r.steps} steps`,
  ];
  for (const p of r.partitions) {
    if (p.verdict === "unknown")
      lines.push(
        `  key ${JSON.stringify(p.key)}: UNKNOWN after ${p.steps} steps (${p.operations} operations, ${p.unknown} of unknown outcome)`,
      );
  }
  const failed = r.partitions
    .filter((p) => p.failure !== undefined)
    .sort((a, b) => a.operations - b.operations || (a.key < b.key ? -1 : 1));
  for (const p of failed.slice(0, opts.maxFailures ?? 3)) lines.push(formatFailure(model, p, p.failure!));
  if (failed.length > (opts.maxFailures ?? 3))
    lines.push(`  (${failed.length - (opts.maxFailures ?? 3)} more failing partitions)`);
  return lines.join("\n");
}
