// A small data-driven test runner in the style of etcd raft's testdata/*.txt
// (cockroachdb/datadriven): each case is one or more command lines, a `----` line,
// then the expected output, ended by a blank line. Lines starting with `#` are
// comments. With REGMESH_REWRITE=1 the expected output is rewritten from the actual.

import { readFileSync, writeFileSync } from "node:fs";

export type Command = {
  name: string;
  /** Positional arguments. */
  args: string[];
  /** key=value arguments. */
  kv: Map<string, string>;
  /** `file:line` of the command, for failure messages. */
  pos: string;
};

export type Case = { commands: Command[]; expected: string; pos: string };

type Chunk = { kind: "text"; text: string } | { kind: "case"; commandLines: string[]; case: Case };

function parseCommand(line: string, pos: string): Command {
  const words = line.trim().split(/\s+/);
  const name = words.shift()!;
  const args: string[] = [];
  const kv = new Map<string, string>();
  for (const w of words) {
    const eq = w.indexOf("=");
    if (eq > 0) kv.set(w.slice(0, eq), w.slice(eq + 1));
    else args.push(w);
  }
  return { name, args, kv, pos };
}

function parse(path: string, text: string): Chunk[] {
  const lines = text.split("\n");
  const chunks: Chunk[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i]!;
    if (line.trim() === "" || line.startsWith("#")) {
      chunks.push({ kind: "text", text: line });
      i++;
      continue;
    }
    const start = i;
    const commandLines: string[] = [];
    while (i < lines.length && lines[i] !== "----") {
      if (lines[i]!.trim() === "") throw new Error(`${path}:${i + 1}: command block without ----`);
      commandLines.push(lines[i]!);
      i++;
    }
    if (i >= lines.length) throw new Error(`${path}:${start + 1}: missing ----`);
    i++; // ----
    const out: string[] = [];
    while (i < lines.length && lines[i]!.trim() !== "") out.push(lines[i++]!);
    const commands = commandLines
      .filter((l) => !l.startsWith("#"))
      .map((l, k) => parseCommand(l, `${path}:${start + k + 1}`));
    chunks.push({
      kind: "case",
      commandLines,
      case: { commands, expected: out.join("\n"), pos: `${path}:${start + 1}` },
    });
  }
  return chunks;
}

/**
 * Runs every case of `path` through `run`; returns the mismatches (expected vs actual).
 * Under REGMESH_REWRITE=1 it rewrites the file instead and reports none.
 */
export function runDataDriven(
  path: string,
  run: (c: Command) => string,
): { pos: string; commands: string; expected: string; actual: string }[] {
  const text = readFileSync(path, "utf8");
  const chunks = parse(path, text);
  const rewrite = process.env.REGMESH_REWRITE === "1";
  const failures: { pos: string; commands: string; expected: string; actual: string }[] = [];
  const out: string[] = [];
  for (const ch of chunks) {
    if (ch.kind === "text") {
      out.push(ch.text);
      continue;
    }
    const actual = ch.case.commands
      .map((c) => run(c))
      .filter((s) => s.length > 0)
      .join("\n")
      .replace(/\n+$/, "");
    const shown = actual === "" ? "ok" : actual;
    if (shown !== ch.case.expected) {
      failures.push({
        pos: ch.case.pos,
        commands: ch.commandLines.join("\n"),
        expected: ch.case.expected,
        actual: shown,
      });
    }
    out.push(...ch.commandLines, "----", shown);
  }
  if (rewrite) {
    writeFileSync(path, out.join("\n"));
    return [];
  }
  return failures;
}
