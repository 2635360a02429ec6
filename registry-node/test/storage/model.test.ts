// Model test (bbolt's simulation test, after STYLE.md §5): random puts, deletes, nested
// bucket creates and deletes, sequences, cursor scans, commits, rollbacks and reopens,
// checked against a Map model; check() passes after every commit.
// Replay a failure: REGMESH_SEED=<seed> npx vitest run --project unit registry-node/test/storage/model.test.ts
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MemFileSystem } from "../../src/io/index.js";
import { type Bucket, DB, type Tx } from "../../src/storage/index.js";
import {
  cloneModel,
  dumpTx,
  hex,
  isBucket,
  LONG,
  type MBucket,
  modelToJson,
  newBucket,
  seedFrom,
  unhex,
} from "./helpers.js";

type Cmd = { op: number; a: number; b: number; c: number; size: number };

const cmdArb: fc.Arbitrary<Cmd> = fc.record({
  op: fc.integer({ min: 0, max: 99 }),
  a: fc.nat(1000),
  b: fc.nat(400),
  c: fc.nat(1000),
  size: fc.nat(1000),
});

function keyBytes(b: number, c: number): Uint8Array {
  // Mostly short keys that collide; sometimes long ones that force splits.
  const base = `k${String(b % 3000).padStart(4, "0")}`;
  if (c % 50 === 0) return new TextEncoder().encode(base + "x".repeat(500 + (c % 700)));
  return new TextEncoder().encode(base);
}

function valueBytes(size: number, c: number): Uint8Array {
  const len = size % 97 === 0 ? 5000 + size : size % 300;
  const v = new Uint8Array(len);
  for (let i = 0; i < len; i++) v[i] = (c + i * 31) & 255;
  return v;
}

/** A key a little above `k`: its last byte plus 40 (wrapping to a longer key). */
function keyBytesAfter(k: Uint8Array): Uint8Array {
  const out = k.slice();
  const last = out[out.length - 1]!;
  if (last < 215) out[out.length - 1] = last + 40;
  else return Uint8Array.from([...out, 1]);
  return out;
}

function bucketPaths(m: MBucket, prefix: string[] = []): string[][] {
  const out: string[][] = [];
  for (const [k, v] of m.entries) {
    if (isBucket(v)) {
      out.push([...prefix, k]);
      out.push(...bucketPaths(v, [...prefix, k]));
    }
  }
  return out.sort((x, y) => (x.join("/") < y.join("/") ? -1 : 1));
}

function modelAt(m: MBucket, path: string[]): MBucket {
  let b = m;
  for (const k of path) b = b.entries.get(k) as MBucket;
  return b;
}

function dbAt(tx: Tx, path: string[]): Bucket {
  let b = tx.root;
  for (const k of path) b = b.bucket(unhex(k))!;
  return b;
}

function checkScans(b: Bucket, m: MBucket, seekKey: Uint8Array): void {
  const keys = [...m.entries.keys()].sort();
  const c = b.cursor();
  const fwd: string[] = [];
  for (let e = c.first(); e; e = c.next()) fwd.push(hex(e.key));
  expect(fwd).toEqual(keys);
  const back: string[] = [];
  for (let e = c.last(); e; e = c.prev()) back.push(hex(e.key));
  expect(back).toEqual([...keys].reverse());
  const s = hex(seekKey);
  const want = keys.find((k) => k >= s) ?? null;
  const got = c.seek(seekKey);
  expect(got ? hex(got.key) : null).toBe(want);
  // Range and prefix helpers against the sorted model keys (hex order is byte order).
  const lo = hex(seekKey);
  const hi = hex(keyBytesAfter(seekKey));
  expect([...b.range(seekKey, keyBytesAfter(seekKey))].map((e) => hex(e.key))).toEqual(
    keys.filter((k) => k >= lo && k < hi),
  );
  const pre = seekKey.subarray(0, 3);
  expect([...b.prefix(pre)].map((e) => hex(e.key))).toEqual(keys.filter((k) => k.startsWith(hex(pre))));
  for (const k of keys.slice(0, 5)) {
    const v = m.entries.get(k)!;
    const got = b.get(unhex(k));
    if (isBucket(v)) expect(got).toBeNull();
    else expect(got ? hex(got) : null).toBe(hex(v));
  }
}

async function run(cmds: Cmd[], pageSize: number): Promise<void> {
  const fs = new MemFileSystem();
  let db = await DB.open("/db", { fs, pageSize, verify: true });
  let committed = newBucket();
  let model = newBucket();
  let tx: Tx | null = null;
  const writer = async () => {
    if (!tx) tx = await db.beginWrite();
    return tx;
  };
  try {
    for (const cmd of cmds) {
      const op = cmd.op;
      if (op < 50) {
        // put
        const t = await writer();
        const paths = bucketPaths(model);
        if (paths.length === 0) {
          const name = hex(keyBytes(cmd.b, 1));
          t.createBucket(unhex(name));
          model.entries.set(name, newBucket());
          continue;
        }
        const path = paths[cmd.a % paths.length]!;
        const mb = modelAt(model, path);
        const bucket = dbAt(t, path);
        // A run of keys, so trees grow several levels deep.
        for (let i = 0; i <= cmd.size % 40; i++) {
          const k = keyBytes(cmd.b * 7 + i, cmd.c + i);
          const existing = mb.entries.get(hex(k));
          if (existing && isBucket(existing)) {
            expect(() => bucket.put(k, new Uint8Array(1))).toThrow(
              expect.objectContaining({ code: "STORAGE_ERR_INCOMPATIBLE_VALUE" }),
            );
            continue;
          }
          const v = valueBytes(cmd.size + i, cmd.c);
          bucket.put(k, v);
          mb.entries.set(hex(k), v);
        }
      } else if (op < 64) {
        // delete a key (an existing one most of the time)
        const t = await writer();
        const paths = bucketPaths(model);
        if (paths.length === 0) continue;
        const path = paths[cmd.a % paths.length]!;
        const mb = modelAt(model, path);
        const plain = [...mb.entries].filter(([, v]) => !isBucket(v)).map(([k]) => k);
        if (cmd.size % 5 === 0 && plain.length > 0) {
          // Delete a run through a cursor (Cursor.delete while iterating forward).
          const sorted = [...mb.entries.keys()].sort();
          const from = plain[cmd.b % plain.length]!;
          const n = 1 + (cmd.c % 25);
          const c = dbAt(t, path).cursor();
          let done = 0;
          for (let e = c.seek(unhex(from)); e && done < n; e = c.next()) {
            if (e.value === null) continue;
            expect(hex(e.key)).toBe(sorted.find((k) => k >= hex(e.key)));
            c.delete();
            mb.entries.delete(hex(e.key));
            done++;
          }
          continue;
        }
        // A run of deletes from a random point, so pages empty out and merge.
        const start = cmd.b % Math.max(1, plain.length);
        for (let i = 0; i <= cmd.size % 30; i++) {
          const k =
            plain.length > 0 && cmd.c % 4 !== 0
              ? plain[(start + i) % plain.length]!
              : hex(keyBytes(cmd.b + i, 1));
          if (mb.entries.has(k) && isBucket(mb.entries.get(k)!)) continue;
          dbAt(t, path).delete(unhex(k));
          mb.entries.delete(k);
        }
      } else if (op < 69) {
        // create a bucket, at the root or nested
        const t = await writer();
        const paths = [[] as string[], ...bucketPaths(model)];
        const path = paths[cmd.a % paths.length]!;
        const name = hex(new TextEncoder().encode(`b${cmd.b % 20}`));
        const mb = modelAt(model, path);
        if (mb.entries.has(name)) continue;
        dbAt(t, path).createBucket(unhex(name));
        mb.entries.set(name, newBucket());
      } else if (op < 70) {
        // delete a bucket
        const t = await writer();
        const paths = bucketPaths(model);
        if (paths.length === 0) continue;
        const path = paths[cmd.a % paths.length]!;
        const parent = path.slice(0, -1);
        dbAt(t, parent).deleteBucket(unhex(path[path.length - 1]!));
        modelAt(model, parent).entries.delete(path[path.length - 1]!);
      } else if (op < 73) {
        // sequences
        const t = await writer();
        const paths = bucketPaths(model);
        if (paths.length === 0) continue;
        const path = paths[cmd.a % paths.length]!;
        const mb = modelAt(model, path);
        if (cmd.c % 2 === 0) {
          mb.sequence = BigInt(cmd.size);
          dbAt(t, path).setSequence(mb.sequence);
        } else {
          mb.sequence += 1n;
          expect(dbAt(t, path).nextSequence()).toBe(mb.sequence);
        }
      } else if (op < 81) {
        // scans, inside the writer when there is one, else in a reader
        const paths = bucketPaths(model);
        if (paths.length === 0) continue;
        const path = paths[cmd.a % paths.length]!;
        const seekKey = keyBytes(cmd.b, 1);
        if (tx) checkScans(dbAt(tx, path), modelAt(model, path), seekKey);
        else await db.view((r) => checkScans(dbAt(r, path), modelAt(committed, path), seekKey));
      } else if (op < 94) {
        // commit (verify mode runs check() before the meta is written)
        if (tx) await (tx as Tx).commit();
        tx = null;
        committed = cloneModel(model);
        await db.view((r) => expect(dumpTx(r)).toEqual(modelToJson(committed)));
      } else if (op < 97) {
        if (tx) (tx as Tx).rollback();
        tx = null;
        model = cloneModel(committed);
      } else {
        if (tx) (tx as Tx).rollback();
        tx = null;
        model = cloneModel(committed);
        await db.close();
        db = await DB.open("/db", { fs, verify: true });
        await db.view((r) => expect(dumpTx(r)).toEqual(modelToJson(committed)));
        expect((await db.check()).errors).toEqual([]);
      }
    }
    if (tx) await (tx as Tx).commit();
    tx = null;
    committed = cloneModel(model);
    await db.view((r) => expect(dumpTx(r)).toEqual(modelToJson(committed)));
    const result = await db.check();
    expect(result.errors).toEqual([]);
    if (process.env.DEBUG_MODEL) console.log(cmds.length, JSON.stringify(result.stats), db.stats().txid);
  } finally {
    if (tx) (tx as Tx).rollback();
    await db.close();
  }
}

describe("model: random operations against a Map", () => {
  for (const pageSize of [1024, 4096]) {
    it(
      `page size ${pageSize}`,
      async () => {
        const seed = seedFrom(pageSize === 1024 ? 4242 : 777);
        try {
          await fc.assert(
            fc.asyncProperty(fc.array(cmdArb, { minLength: 150, maxLength: LONG ? 1000 : 400 }), (cmds) =>
              run(cmds, pageSize),
            ),
            { seed, numRuns: LONG ? 100 : 12 },
          );
        } catch (err) {
          throw new Error(
            `replay: REGMESH_SEED=${seed} npx vitest run --project unit registry-node/test/storage/model.test.ts\n${(err as Error).message}`,
          );
        }
      },
      LONG ? 1_800_000 : 60_000,
    );
  }
});
