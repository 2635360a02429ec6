// Shared driver for the simulator test files: the default run splits its seeds across
// several files so vitest runs them on parallel workers.

import { expect, test } from "vitest";
import { runSeed } from "./cluster.js";

/** Seeds per file in the default suite; REGMESH_LONG=1 with REGMESH_SEEDS=N runs N per file. */
export const defaultSeedsPerFile = 2000;
const seedsPerTest = 100;

export function seedRange(file: number): { from: number; count: number } {
  const long = process.env.REGMESH_LONG === "1";
  const count = long ? Number(process.env.REGMESH_SEEDS ?? 20_000) : defaultSeedsPerFile;
  const base = long ? Number(process.env.REGMESH_SEED_BASE ?? 1_000_000) : 0;
  return { from: base + file * count, count };
}

export function defineSimTests(file: number, fileName: string): void {
  const only = process.env.REGMESH_SEED;
  if (only !== undefined) {
    test(`simulation: replay seed ${only} (with trace)`, () => {
      const { sim, livenessTicks } = runSeed(Number(only), { trace: true });
      console.log(`seed ${only}: ${JSON.stringify(sim.stats)}, liveness in ${livenessTicks} ticks`);
      // REGMESH_TRACE=1 prints the last events even when the seed passes.
      if (process.env.REGMESH_TRACE === "1") console.log(sim.trace?.join("\n"));
    });
    return;
  }
  const { from, count } = seedRange(file);
  const totals = {
    commits: 0,
    reads: 0,
    elections: 0,
    crashes: 0,
    snapshots: 0,
    confChanges: 0,
    transfers: 0,
  };
  // Chunks keep each test well inside the per-test timeout and show progress.
  for (let chunk = from; chunk < from + count; chunk += seedsPerTest) {
    const end = Math.min(chunk + seedsPerTest, from + count);
    test(`simulation: seeds ${chunk}..${end - 1} keep safety, then converge after healing`, () => {
      for (let seed = chunk; seed < end; seed++) {
        try {
          const { sim } = runSeed(seed);
          for (const k of Object.keys(totals) as (keyof typeof totals)[]) totals[k] += sim.stats[k];
        } catch (e) {
          const msg = e instanceof Error ? e.message : String(e);
          throw new Error(`${msg}\nreplay: REGMESH_SEED=${seed} npx vitest run --project unit ${fileName}`);
        }
      }
    });
  }
  test("simulation: the faults and operations actually happened", () => {
    // A run without crashes, snapshots or membership changes would prove little.
    expect(totals.commits).toBeGreaterThan(count * 10);
    expect(totals.reads).toBeGreaterThan(count);
    expect(totals.crashes).toBeGreaterThan(0);
    expect(totals.snapshots).toBeGreaterThan(0);
    expect(totals.confChanges).toBeGreaterThan(0);
    expect(totals.transfers).toBeGreaterThan(0);
    console.log(`seeds ${from}..${from + count - 1}: ${JSON.stringify(totals)}`);
  });
}
