// Append rate of the WAL with fsync on the real disk (a temp directory): one save() per
// batch of 1 or 64 entries of 256 bytes, each save awaiting its fsync (the server's ready
// loop), and 64 single-entry saves issued at once (group commit). Runs only with
// REGMESH_LONG=1; prints its figures.

import { describe, expect, it } from "vitest";
import type { Entry } from "../../src/raft/types.js";
import { Wal } from "../../src/wal/wal.js";
import { hs, nodeDisk } from "./helpers.js";

const entryBytes = 256;
const durationMs = 2000;

function entry(index: number): Entry {
  return { index, term: 1, type: 0, data: new Uint8Array(entryBytes).fill(index & 0xff) };
}

async function measure(
  batch: number,
  concurrent: boolean,
): Promise<{ entriesPerSec: number; savesPerSec: number }> {
  const d = nodeDisk();
  try {
    const wal = Wal.create(d.fs, d.dir, new Uint8Array(16));
    await wal.save(hs(1, 1, 0), []);
    let next = 1;
    let saves = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < durationMs) {
      if (concurrent) {
        const all: Promise<void>[] = [];
        for (let i = 0; i < batch; i++) all.push(wal.save(hs(1, 1, 0), [entry(next++)]));
        await Promise.all(all);
        saves += batch;
      } else {
        const ents: Entry[] = [];
        for (let i = 0; i < batch; i++) ents.push(entry(next++));
        await wal.save(hs(1, 1, 0), ents);
        saves++;
      }
    }
    const secs = (performance.now() - t0) / 1000;
    await wal.close();
    return { entriesPerSec: (next - 1) / secs, savesPerSec: saves / secs };
  } finally {
    d.done();
  }
}

describe("WAL append rate with fsync (real file system)", () => {
  it("prints entries/s for batches of 1 and 64, and for 64 concurrent single-entry saves", async () => {
    const one = await measure(1, false);
    const sixtyFour = await measure(64, false);
    const group = await measure(64, true);
    const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
    console.log(
      [
        `wal bench (${entryBytes}-byte entries, fdatasync per save):`,
        `  batch 1:   ${fmt(one.entriesPerSec)} entries/s (${fmt(one.savesPerSec)} saves/s)`,
        `  batch 64:  ${fmt(sixtyFour.entriesPerSec)} entries/s (${fmt(sixtyFour.savesPerSec)} saves/s)`,
        `  64 concurrent saves of 1 (group commit): ${fmt(group.entriesPerSec)} entries/s`,
        `  ratio batch 64 / batch 1: ${(sixtyFour.entriesPerSec / one.entriesPerSec).toFixed(1)}x`,
      ].join("\n"),
    );
    expect(sixtyFour.entriesPerSec).toBeGreaterThan(one.entriesPerSec);
  });
});
