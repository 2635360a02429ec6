// Crash tests on the fault file layer: a commit is cut at a seeded point (any write, any
// fsync, exactly between the page fsync and the meta write, or with a torn meta page);
// reopening gives exactly the last committed state (or, when the meta write had been
// issued, the new one), and check() passes.
// Replay a failure: REGMESH_SEED=<seed> npx vitest run --project unit registry-node/test/storage/crash.test.ts
import { describe, expect, it } from "vitest";
import {
  type CrashMode,
  FaultFileSystem,
  MemFileSystem,
  Rng,
  SimulatedCrashError,
} from "../../src/io/index.js";
import { DB, type Tx } from "../../src/storage/index.js";
import {
  cloneModel,
  dumpTx,
  hex,
  isBucket,
  LONG,
  type MBucket,
  modelToJson,
  newBucket,
  unhex,
} from "./helpers.js";

const quiet = () => {};

/** Random changes to the model and the transaction alike. */
function mutate(tx: Tx, model: MBucket, rng: Rng): void {
  const names = ["alpha", "beta", "gamma"].map((n) => hex(new TextEncoder().encode(n)));
  const ops = 1 + rng.int(60);
  for (let i = 0; i < ops; i++) {
    const name = names[rng.int(names.length)]!;
    let m = model.entries.get(name) as MBucket | undefined;
    if (!m) {
      tx.createBucket(unhex(name));
      model.entries.set(name, (m = newBucket()));
    }
    const b = tx.bucket(unhex(name))!;
    const r = rng.int(100);
    if (r < 60) {
      const k = hex(new TextEncoder().encode(`k${rng.int(800)}`));
      if (m.entries.has(k) && isBucket(m.entries.get(k)!)) continue;
      const v = new Uint8Array(rng.int(10) === 0 ? 3000 + rng.int(6000) : rng.int(200)).fill(rng.int(256));
      b.put(unhex(k), v);
      m.entries.set(k, v);
    } else if (r < 90) {
      const keys = [...m.entries.keys()].filter((k) => !isBucket(m!.entries.get(k)!));
      if (keys.length === 0) continue;
      const k = keys[rng.int(keys.length)]!;
      b.delete(unhex(k));
      m.entries.delete(k);
    } else if (r < 95) {
      const sub = hex(new TextEncoder().encode(`sub${rng.int(3)}`));
      if (m.entries.has(sub)) {
        if (!isBucket(m.entries.get(sub)!)) continue;
        b.deleteBucket(unhex(sub));
        m.entries.delete(sub);
      } else {
        const child = b.createBucket(unhex(sub));
        const cm = newBucket();
        for (let j = 0; j < rng.int(40); j++) {
          const k = hex(new TextEncoder().encode(`n${j}`));
          const v = new Uint8Array(rng.int(100)).fill(j);
          child.put(unhex(k), v);
          cm.entries.set(k, v);
        }
        m.entries.set(sub, cm);
      }
    } else {
      m.sequence += 1n;
      b.nextSequence();
    }
  }
}

type Kind = "random" | "before-meta" | "torn-meta";

async function crashRound(seed: number): Promise<number> {
  const rng = new Rng(seed);
  const mem = new MemFileSystem();
  const fs = new FaultFileSystem(mem, { seed });
  const pageSize = rng.int(2) === 0 ? 1024 : 4096;
  let db = await DB.open("/db", { fs, pageSize, log: quiet });
  let committed = newBucket();
  let crashes = 0;
  const rounds = 3;
  for (let round = 0; round < rounds; round++) {
    // A few clean commits, then one that crashes.
    for (let c = rng.int(4); c > 0; c--) {
      const next = cloneModel(committed);
      await db.update((tx) => mutate(tx, next, rng));
      committed = next;
    }
    const next = cloneModel(committed);
    const kind: Kind = (["random", "random", "before-meta", "torn-meta"] as const)[rng.int(4)]!;
    const mode: CrashMode = kind === "torn-meta" ? "tear" : rng.int(2) === 0 ? "drop" : "tear";
    let metaSeen = false;
    const isMetaWrite = (op: string) =>
      op === `write /db@0+${pageSize}` || op === `write /db@${pageSize}+${pageSize}`;
    // Commits here write 1-15 pages: a countdown below 16 lands anywhere in most of them.
    if (kind === "random") fs.crashAfter(rng.int(16), mode);
    else if (kind === "before-meta") fs.crashWhen(isMetaWrite, mode);
    else {
      // The first fsync after the meta write, with unsynced sectors torn.
      fs.crashWhen((op) => {
        if (isMetaWrite(op)) metaSeen = true;
        else if (metaSeen && op.startsWith("datasync")) return true;
        return false;
      }, mode);
    }
    let completed = false;
    try {
      await db.update((tx) => mutate(tx, next, rng));
      completed = true;
    } catch (err) {
      if (!(err instanceof SimulatedCrashError)) throw err;
    }
    const at = fs.crashedAt;
    if (!fs.crashed) fs.crash(mode); // the commit finished first: power loss right after it
    crashes++;
    await db.close().catch(() => {});
    fs.restart(seed + round);
    db = await DB.open("/db", { fs, log: quiet });
    const got = await db.view((tx) => JSON.stringify(dumpTx(tx)));
    const oldState = JSON.stringify(modelToJson(committed));
    const newState = JSON.stringify(modelToJson(next));
    // The new state is allowed only once its meta write was issued: a crash on the final fsync.
    const mayBeNew = completed || at?.startsWith("datasync");
    const ok = got === oldState || (mayBeNew && got === newState);
    if (!ok) {
      throw new Error(
        `seed ${seed} round ${round}: state after crash (${kind}, ${mode}, at ${at}) is neither the committed one` +
          `${mayBeNew ? " nor the new one" : ""}\nreplay: REGMESH_SEED=${seed} npx vitest run --project unit registry-node/test/storage/crash.test.ts`,
      );
    }
    if (completed) expect(got).toBe(newState);
    if (kind === "before-meta" && !completed) expect(got).toBe(oldState);
    committed = got === newState ? next : committed;
    if (process.env.DEBUG_CRASH) console.log(kind, mode, at, completed, got === newState);
    const check = await db.check();
    if (check.errors.length > 0) {
      throw new Error(
        `seed ${seed} round ${round}: check failed after crash (${kind}, ${mode}, at ${at}): ${check.errors.slice(0, 5).join("; ")}\n` +
          `replay: REGMESH_SEED=${seed} npx vitest run --project unit registry-node/test/storage/crash.test.ts`,
      );
    }
  }
  await db.close();
  return crashes;
}

describe("crash recovery on the fault file layer", () => {
  it(`reopen after a crash gives the last committed state and check passes (${LONG ? "thousands of" : "hundreds of"} crash points)`, async () => {
    const only = process.env.REGMESH_SEED;
    const seeds = only ? [Number(only)] : Array.from({ length: LONG ? 1200 : 100 }, (_, i) => 1000 + i);
    let crashes = 0;
    for (const seed of seeds) crashes += await crashRound(seed);
    expect(crashes).toBeGreaterThanOrEqual(seeds.length * 3);
  });

  it("a torn meta page falls back to the previous meta", async () => {
    const mem = new MemFileSystem();
    const fs = new FaultFileSystem(mem, { seed: 3 });
    const db = await DB.open("/db", { fs, log: quiet });
    await db.update((tx) =>
      tx.createBucket(new TextEncoder().encode("a")).put(new Uint8Array([1]), new Uint8Array([1])),
    );
    const txid = db.currentMeta().txid;
    await db.close();
    // Corrupt the newest meta's checksummed bytes on disk: open must choose the other one.
    const h = mem.open("/db");
    const b = new Uint8Array(1);
    const off = (txid % 2) * 4096 + 16 + 20;
    h.read(b, off);
    h.write(new Uint8Array([b[0]! ^ 0xff]), off);
    h.close();
    const again = await DB.open("/db", { fs, log: quiet });
    expect(again.currentMeta().txid).toBe(txid - 1);
    expect(await again.view((tx) => tx.bucket(new TextEncoder().encode("a")))).toBeNull();
    expect((await again.check()).errors).toEqual([]);
    await again.close();
  });
});
