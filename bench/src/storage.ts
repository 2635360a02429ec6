// Storage engine benchmark: registry-node's bbolt-format engine against lmdb (the peer,
// a dependency of this package only). Same workload on both, with fsync on every commit:
//   puts of 256-byte values in commits of 1 (2,000 puts: each commit is two fsyncs, so
//   100k would take minutes), 100 and 1000 (100,000 puts each); random gets; prefix scans;
//   open time of a 1M-key file. Gets are measured after one warm-up pass on each engine.
// Run: npx tsc -b && node bench/dist/storage.js   (REGMESH_BENCH_DIR picks the directory)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NodeFileSystem } from "@regmesh/registry-node/io/index";
import { DB } from "@regmesh/registry-node/storage/index";
import { open as openLmdb, type RootDatabase } from "lmdb";

const VALUE_BYTES = 256;
const BUCKET = new TextEncoder().encode("bench");
const value = new Uint8Array(VALUE_BYTES).fill(7);

function key(i: number): Buffer {
  // Keys grouped under 1000 prefixes so prefix scans return ~100 keys each.
  return Buffer.from(`p${String(i % 1000).padStart(4, "0")}/k${String(i).padStart(8, "0")}`);
}

/** A tiny deterministic PRNG so both engines get the same random keys. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Row = { name: string; ours: number; lmdb: number; unit: string };
const rows: Row[] = [];

async function time(fn: () => unknown | Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

const base = process.env.REGMESH_BENCH_DIR ?? tmpdir();
const dir = mkdtempSync(join(base, "regmesh-bench-storage-"));
const fs = new NodeFileSystem();

async function oursPuts(path: string, total: number, perCommit: number): Promise<DB> {
  const db = await DB.open(path, { fs });
  await db.update((tx) => void tx.createBucket(BUCKET));
  for (let i = 0; i < total; i += perCommit) {
    await db.update((tx) => {
      const b = tx.bucket(BUCKET)!;
      for (let j = i; j < Math.min(total, i + perCommit); j++) b.put(key(j), value);
    });
  }
  return db;
}

function lmdbPuts(path: string, total: number, perCommit: number): RootDatabase<Buffer, Buffer> {
  // overlappingSync off: transactionSync returns after the commit is flushed, like ours.
  const db = openLmdb<Buffer, Buffer>({
    path,
    encoding: "binary",
    keyEncoding: "binary",
    overlappingSync: false,
  });
  for (let i = 0; i < total; i += perCommit) {
    db.transactionSync(() => {
      for (let j = i; j < Math.min(total, i + perCommit); j++) db.putSync(key(j), Buffer.from(value));
    });
  }
  return db;
}

async function main(): Promise<void> {
  console.log(`storage bench in ${dir} (values ${VALUE_BYTES} B, fsync on every commit)`);
  for (const [perCommit, total] of [
    [1, 2000],
    [100, 100_000],
    [1000, 100_000],
  ] as const) {
    const p1 = join(dir, `ours-${perCommit}`);
    const p2 = join(dir, `lmdb-${perCommit}`);
    let ours!: DB;
    let lm!: RootDatabase<Buffer, Buffer>;
    const a = await time(async () => (ours = await oursPuts(p1, total, perCommit)));
    const b = await time(() => (lm = lmdbPuts(p2, total, perCommit)));
    rows.push({
      name: `put, ${perCommit}/commit (${total} puts)`,
      ours: total / a,
      lmdb: total / b,
      unit: "puts/s",
    });
    if (perCommit !== 1000) {
      await ours.close();
      await lm.close();
      continue;
    }
    // Random gets on the 100k-key files: ours in read transactions of 1000 gets.
    const gets = 300_000;
    const r1 = rng(1);
    const keys = Array.from({ length: gets }, () => key(Math.floor(r1() * total)));
    let found = 0;
    const oursGets = async () => {
      for (let i = 0; i < gets; i += 1000) {
        await ours.view((tx) => {
          const bucket = tx.bucket(BUCKET)!;
          for (let j = i; j < i + 1000; j++) if (bucket.get(keys[j]!)) found++;
        });
      }
    };
    const lmdbGets = () => {
      for (let j = 0; j < gets; j++) if (lm.getBinaryFast(keys[j]!)) found++;
    };
    // One warm-up pass each (JIT, page cache / mmap faults), then the measured pass.
    await oursGets();
    lmdbGets();
    found = 0;
    const g1 = await time(oursGets);
    const g2 = await time(lmdbGets);
    if (found !== 2 * gets) throw new Error(`gets: found ${found} of ${2 * gets}`);
    rows.push({ name: `random get (${gets})`, ours: gets / g1, lmdb: gets / g2, unit: "gets/s" });

    // Prefix scans: ~100 keys each.
    const scans = 2000;
    let seen = 0;
    const s1 = await time(() =>
      ours.view((tx) => {
        const c = tx.bucket(BUCKET)!.cursor();
        for (let s = 0; s < scans; s++) {
          const prefix = Buffer.from(`p${String(s % 1000).padStart(4, "0")}/`);
          for (
            let e = c.seek(prefix);
            e && Buffer.from(e.key.buffer, e.key.byteOffset, prefix.length).equals(prefix);
            e = c.next()
          )
            seen++;
        }
      }),
    );
    const s2 = await time(() => {
      for (let s = 0; s < scans; s++) {
        const prefix = Buffer.from(`p${String(s % 1000).padStart(4, "0")}/`);
        const end = Buffer.from(`p${String(s % 1000).padStart(4, "0")}0`);
        for (const _ of lm.getRange({ start: prefix, end })) seen++;
      }
    });
    if (seen !== 2 * scans * (total / 1000)) throw new Error(`scans: saw ${seen}`);
    rows.push({
      name: `prefix scan, ~100 keys (${scans})`,
      ours: scans / s1,
      lmdb: scans / s2,
      unit: "scans/s",
    });
    await ours.close();
    await lm.close();
  }

  // Open time of a 1M-key file (built without fsync, then reopened cold from this process).
  const big = join(dir, "ours-1m");
  const bigL = join(dir, "lmdb-1m");
  {
    const db = await DB.open(big, { fs, noSync: true });
    await db.update((tx) => void tx.createBucket(BUCKET));
    const small = new Uint8Array(32).fill(1);
    for (let i = 0; i < 1_000_000; i += 100_000) {
      await db.update((tx) => {
        const b = tx.bucket(BUCKET)!;
        for (let j = i; j < i + 100_000; j++) b.put(key(j), small);
      });
    }
    await db.close();
    const lm = openLmdb<Buffer, Buffer>({
      path: bigL,
      encoding: "binary",
      keyEncoding: "binary",
      noSync: true,
    });
    for (let i = 0; i < 1_000_000; i += 100_000) {
      lm.transactionSync(() => {
        for (let j = i; j < i + 100_000; j++) lm.putSync(key(j), Buffer.from(small));
      });
    }
    await lm.close();
  }
  let got = 0;
  const o1 = await time(async () => {
    const db = await DB.open(big, { fs });
    if (await db.view((tx) => tx.bucket(BUCKET)!.get(key(123_456)))) got++;
    await db.close();
  });
  const o2 = await time(async () => {
    const lm = openLmdb<Buffer, Buffer>({ path: bigL, encoding: "binary", keyEncoding: "binary" });
    if (lm.getBinary(key(123_456))) got++;
    await lm.close();
  });
  if (got !== 2) throw new Error("open: key not found");
  rows.push({
    name: "open 1M-key file + 1 get",
    ours: o1 * 1000,
    lmdb: o2 * 1000,
    unit: "ms (lower is better)",
  });

  console.log("");
  console.log(`${"workload".padEnd(36)} ${"regmesh".padStart(12)} ${"lmdb".padStart(12)}  ratio  unit`);
  for (const r of rows) {
    console.log(
      `${r.name.padEnd(36)} ${r.ours.toFixed(0).padStart(12)} ${r.lmdb.toFixed(0).padStart(12)}  ${(r.ours / r.lmdb).toFixed(2).padStart(5)}  ${r.unit}`,
    );
  }
  rmSync(dir, { recursive: true, force: true });
}

main().catch((err) => {
  console.error(err);
  rmSync(dir, { recursive: true, force: true });
  process.exit(1);
});
