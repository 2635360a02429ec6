// Keeps the pure cores pure (../shared/STYLE.md §1): no node:* (or bare builtin) imports,
// no clocks, no randomness and no timers inside the folders below. Biome cannot say this.
// A core takes `now` and random draws as arguments and returns its effects as data.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { builtinModules } from "node:module";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;

// Core folders: Raft, and every folder named `core` under a package's src/
// (storage/core: B+tree, pages, freelist; mvcc/core: key index; lease/core: expiry;
// sdk/src/core: balancers, ejection, policy).
const explicit = ["registry-node/src/raft"];
const packages = ["proto", "testkit", "registry-node", "sdk", "mesher", "examples", "bench"];

const forbidden = [
  [/\bDate\.now\b/, "Date.now: take `now` as an argument"],
  [/\bnew Date\(\s*\)/, "new Date(): take `now` as an argument"],
  [/\bMath\.random\b/, "Math.random: take a seeded random source as an argument"],
  [/\bsetTimeout\b|\bsetInterval\b|\bsetImmediate\b/, "timers: return a deadline, let the shell schedule it"],
  [/\bperformance\.now\b|\bprocess\.hrtime\b/, "clocks: take `now` as an argument"],
];
const builtins = new Set(builtinModules.filter((m) => !m.startsWith("_")));

function walk(dir, out) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path, out);
    else if (/\.(ts|mts|js|mjs)$/.test(name) && !name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

function coreDirs() {
  const dirs = new Set(explicit.map((d) => join(root, d)));
  const find = (dir) => {
    let entries;
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of entries) {
      const path = join(dir, name);
      if (!statSync(path).isDirectory()) continue;
      if (name === "core") dirs.add(path);
      find(path);
    }
  };
  for (const p of packages) find(join(root, p, "src"));
  return [...dirs];
}

function stripComments(src) {
  return src.replace(/\/\*[\s\S]*?\*\//g, (m) => m.replace(/[^\n]/g, " ")).replace(/\/\/[^\n]*/g, "");
}

const problems = [];
let files = 0;
for (const dir of coreDirs()) {
  for (const file of walk(dir, [])) {
    files += 1;
    const lines = stripComments(readFileSync(file, "utf8")).split("\n");
    lines.forEach((line, i) => {
      const where = `${relative(root, file)}:${i + 1}`;
      for (const m of line.matchAll(/(?:from\s+|import\s*\(\s*|require\s*\(\s*)["']([^"']+)["']/g)) {
        const spec = m[1];
        if (spec.startsWith("node:") || builtins.has(spec.split("/")[0])) {
          problems.push(`${where}: imports ${spec}: a core does no I/O; the shell passes what it needs`);
        }
      }
      for (const [re, why] of forbidden) if (re.test(line)) problems.push(`${where}: ${why}`);
    });
  }
}

if (problems.length > 0) {
  console.error(`check-core: ${problems.length} problem(s) in pure core folders:`);
  for (const p of problems) console.error(`  ${p}`);
  process.exit(1);
}
console.log(`check-core: ${files} core file(s) clean`);
