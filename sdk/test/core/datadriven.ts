// A small data-driven test runner in the style of etcd raft's testdata/*.txt (STYLE.md §5):
//
//   # comment
//   command arg key=value key=v1,v2
//   optional input lines
//   ----
//   expected output lines
//   <blank line>
//
// Output may not contain blank lines. REGMESH_REWRITE=1 rewrites the expected outputs from
// what the handler returns, so a deliberate change is one command and one reviewed diff.
import { readFileSync, writeFileSync } from "node:fs";
import { expect } from "vitest";

export interface Directive {
  readonly line: number;
  readonly command: string;
  readonly args: readonly string[];
  readonly kv: ReadonlyMap<string, string>;
  readonly input: readonly string[];
  readonly expected: string;
}

export function parseScript(text: string): { directives: Directive[]; comments: Map<number, string[]> } {
  const lines = text.split("\n");
  const directives: Directive[] = [];
  const comments = new Map<number, string[]>();
  let pending: string[] = [];
  let i = 0;
  while (i < lines.length) {
    const l = lines[i]!;
    if (l.trim() === "") {
      i += 1;
      continue;
    }
    if (l.startsWith("#")) {
      pending.push(l);
      i += 1;
      continue;
    }
    const start = i + 1;
    const [command, ...words] = l.trim().split(/\s+/);
    const args: string[] = [];
    const kv = new Map<string, string>();
    for (const w of words) {
      const eq = w.indexOf("=");
      if (eq > 0) kv.set(w.slice(0, eq), w.slice(eq + 1));
      else args.push(w);
    }
    i += 1;
    const input: string[] = [];
    while (i < lines.length && lines[i] !== "----") input.push(lines[i++]!);
    if (i >= lines.length) throw new Error(`line ${start}: missing ---- after ${command}`);
    i += 1;
    const out: string[] = [];
    while (i < lines.length && lines[i]!.trim() !== "") out.push(lines[i++]!);
    if (pending.length > 0) comments.set(directives.length, pending);
    pending = [];
    directives.push({ line: start, command: command!, args, kv, input, expected: out.join("\n") });
  }
  return { directives, comments };
}

/** Runs every directive through `handle`; compares (or, with REGMESH_REWRITE=1, rewrites). */
export function runScript(path: string, handle: (d: Directive) => string): void {
  const { directives, comments } = parseScript(readFileSync(path, "utf8"));
  const rewrite = process.env.REGMESH_REWRITE === "1";
  const blocks: string[] = [];
  directives.forEach((d, k) => {
    const actual = handle(d).trimEnd();
    if (!rewrite) expect(actual, `${path}:${d.line} ${d.command}`).toBe(d.expected);
    const head = [d.command, ...d.args, ...[...d.kv].map(([key, v]) => `${key}=${v}`)].join(" ");
    blocks.push([...(comments.get(k) ?? []), head, ...d.input, "----", actual].join("\n"));
  });
  if (rewrite) writeFileSync(path, `${blocks.join("\n\n")}\n`);
}
