// The generated code is committed; this fails when it no longer matches what
// scripts/gen.sh makes from the .proto files (someone edited a .proto, or the
// generator options, and did not regenerate).
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, expect, it } from "vitest";

const pkgDir = fileURLToPath(new URL("..", import.meta.url));
const committedDir = join(pkgDir, "src", "gen");
const genTimeoutMs = 60_000;

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

let outDir: string | undefined;

afterAll(async () => {
  if (outDir !== undefined) await rm(outDir, { recursive: true, force: true });
});

it("src/gen is what scripts/gen.sh generates from protos/", async () => {
  outDir = await mkdtemp(join(tmpdir(), "regmesh-proto-gen-"));
  await promisify(execFile)("bash", [join(pkgDir, "scripts", "gen.sh"), outDir], { timeout: genTimeoutMs });

  const fresh = await listFiles(outDir);
  const committed = await listFiles(committedDir);
  expect(fresh.length).toBeGreaterThan(0);
  const stale: string[] = [];
  for (const f of new Set([...fresh, ...committed])) {
    const a = fresh.includes(f) ? await readFile(join(outDir, f), "utf8") : undefined;
    const b = committed.includes(f) ? await readFile(join(committedDir, f), "utf8") : undefined;
    if (a === undefined) stale.push(`${f} (committed, but no longer generated)`);
    else if (b === undefined) stale.push(`${f} (generated, but not committed)`);
    else if (a !== b) stale.push(`${f} (differs)`);
  }
  expect(
    stale,
    `proto/src/gen is stale: ${stale.join(", ")}. Run \`npm run proto:gen\` and commit the result.`,
  ).toEqual([]);
});
