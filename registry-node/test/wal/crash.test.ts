// Crash tests on the fault file system: random saves, overwrites, snapshots, reopens and
// power losses (unsynced writes dropped, or torn sector by sector), each run from a seed
// and checked against a model (harness.ts). A few hundred seeds by default, thousands
// with REGMESH_LONG=1; REGMESH_SEED=n replays one.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type FileSystem, NodeFileSystem, Rng } from "../../src/io/index.js";
import { type Op, randomOps, replayHint, WalHarness } from "./harness.js";

const long = process.env.REGMESH_LONG === "1";
const only = process.env.REGMESH_SEED === undefined ? undefined : Number(process.env.REGMESH_SEED);
const fcPath = process.env.REGMESH_FC_PATH;
/** Long runs take minutes; the default 60 s limit is for the default seed counts. */
const timeout = long ? 1_200_000 : 60_000;

async function runSeed(
  seed: number,
  ops: Op[] | undefined = undefined,
  disk?: { fs: FileSystem; root: string },
): Promise<WalHarness> {
  const h = new WalHarness(seed, disk);
  const script = ops ?? randomOps(new Rng(seed), 60);
  try {
    await h.run(script);
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    // The seeded loop replays by seed; fast-check prints its own seed and path below.
    const hint = ops
      ? "replay with: REGMESH_SEED=<fast-check seed> REGMESH_FC_PATH=<path> npx vitest run --project unit " +
        "registry-node/test/wal/crash.test.ts -t property"
      : replayHint("crash.test.ts", seed);
    e.message = `seed ${seed}: ${e.message}\n${hint}`;
    throw e;
  }
  return h;
}

describe("Wal crash recovery on the fault file system", () => {
  it("after any crash, readAll returns a prefix of the saved frames holding every fsynced save", {
    timeout,
  }, async () => {
    const seeds = only !== undefined ? [only] : Array.from({ length: long ? 3000 : 300 }, (_, i) => i + 1);
    let crashes = 0;
    let repairs = 0;
    let saves = 0;
    for (const seed of seeds) {
      const h = await runSeed(seed);
      crashes += h.stats.crashes;
      repairs += h.stats.repairs;
      saves += h.stats.saves;
    }
    // The runs must actually exercise what they claim to.
    if (only === undefined) {
      expect(crashes).toBeGreaterThan(seeds.length);
      expect(repairs).toBeGreaterThan(seeds.length / 10);
      expect(saves).toBeGreaterThan(seeds.length * 30);
    }
  });

  it("the same crash runs over the real file system (fault layer over NodeFileSystem in a temp dir)", {
    timeout,
  }, async () => {
    const seeds = only !== undefined ? [only] : Array.from({ length: long ? 60 : 6 }, (_, i) => 10_001 + i);
    for (const seed of seeds) {
      const root = mkdtempSync(join(tmpdir(), "regmesh-wal-crash-"));
      try {
        await runSeed(seed, undefined, { fs: new NodeFileSystem(), root });
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    }
  });

  it("property: any script of saves, overwrites, snapshots, reopens and crashes keeps the model (fast-check)", {
    timeout,
  }, async () => {
    const op: fc.Arbitrary<Op> = fc.oneof(
      {
        weight: 8,
        arbitrary: fc.record({ t: fc.constant("append" as const), n: fc.integer({ min: 1, max: 8 }) }),
      },
      {
        weight: 2,
        arbitrary: fc.record({
          t: fc.constant("term" as const),
          back: fc.integer({ min: 0, max: 6 }),
          n: fc.integer({ min: 1, max: 4 }),
          vote: fc.integer({ min: 1, max: 3 }),
        }),
      },
      {
        weight: 3,
        arbitrary: fc.record({ t: fc.constant("commit" as const), by: fc.integer({ min: 0, max: 10 }) }),
      },
      {
        weight: 2,
        arbitrary: fc.record({
          t: fc.constant("pair" as const),
          n1: fc.integer({ min: 1, max: 4 }),
          n2: fc.integer({ min: 1, max: 4 }),
        }),
      },
      { weight: 1, arbitrary: fc.constant({ t: "snapshot" as const }) },
      { weight: 1, arbitrary: fc.constant({ t: "reopen" as const }) },
      {
        weight: 2,
        arbitrary: fc.record({
          t: fc.constant("crash" as const),
          afterOps: fc.integer({ min: 0, max: 40 }),
          tear: fc.boolean(),
        }),
      },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 2 ** 30 }),
        fc.array(op, { maxLength: 50 }),
        async (seed, ops) => {
          await runSeed(seed, ops);
        },
      ),
      {
        numRuns: long ? 2000 : 150,
        ...(only !== undefined ? { seed: only } : {}),
        ...(fcPath !== undefined ? { path: fcPath } : {}),
      },
    );
  });
});
