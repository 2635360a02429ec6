import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BboltStorage,
  BufferedBackend,
  KVStore,
  MemStorage,
  MvccError,
  type Storage,
} from "../../src/mvcc/index.js";

const runs = process.env.REGMESH_LONG === "1" ? 1000 : 100;
const enc = (s: string) => Buffer.from(s);
const dec = (b: Uint8Array) => Buffer.from(b).toString();

function newStore(storage: Storage = new MemStorage()) {
  const backend = new BufferedBackend(storage);
  return { storage, backend, store: new KVStore(backend) };
}

describe("KV store: revisions and versions as etcd reports them", () => {
  it("starts at revision 1; each changing txn adds one; sub-changes share it", () => {
    const { store } = newStore();
    expect(store.rev).toBe(1);
    const t = store.write();
    const kv1 = t.put(enc("a"), enc("1"), 0n);
    const kv2 = t.put(enc("a"), enc("2"), 0n);
    expect(t.end().length).toBe(2);
    expect(store.rev).toBe(2);
    expect([kv1.createRevision, kv1.modRevision, kv1.version]).toEqual([2n, 2n, 1n]);
    expect([kv2.createRevision, kv2.modRevision, kv2.version]).toEqual([2n, 2n, 2n]);

    const r = store.read().range(enc("a"), undefined);
    expect(r.kvs.map((kv) => dec(kv.value))).toEqual(["2"]);

    const t2 = store.write();
    expect(t2.deleteRange(enc("a"), undefined)).toBe(1);
    const events = t2.end();
    expect(events[0]!.type).toBe(1); // DELETE
    expect(events[0]!.kv.modRevision).toBe(3n);
    expect(store.read().range(enc("a"), undefined).kvs).toEqual([]);

    // Recreated: a new generation, version 1, created at the new revision.
    const t3 = store.write();
    const kv3 = t3.put(enc("a"), enc("3"), 0n);
    t3.end();
    expect([kv3.createRevision, kv3.modRevision, kv3.version]).toEqual([4n, 4n, 1n]);

    // A transaction that changes nothing does not move the revision.
    const t4 = store.write();
    expect(t4.deleteRange(enc("zzz"), undefined)).toBe(0);
    t4.end();
    expect(store.rev).toBe(4);
  });

  it("range_end '\\0' reads from the key on; limit keeps the count of all", () => {
    const { store } = newStore();
    const t = store.write();
    for (const k of ["a", "b", "c", "d"]) t.put(enc(k), enc(k), 0n);
    t.end();
    const all = store.read().range(enc("b"), new Uint8Array([0]));
    expect(all.kvs.map((kv) => dec(kv.key))).toEqual(["b", "c", "d"]);
    const lim = store.read().range(enc("a"), enc("d"), { limit: 2 });
    expect(lim.kvs.map((kv) => dec(kv.key))).toEqual(["a", "b"]);
    expect(lim.count).toBe(3);
    expect(store.read().range(enc("a"), enc("z"), { count: true })).toMatchObject({ kvs: [], count: 4 });
  });

  it("refuses compacted and future revisions with etcd's messages", () => {
    const { store } = newStore();
    for (let i = 0; i < 5; i++) {
      const t = store.write();
      t.put(enc("k"), enc(`${i}`), 0n);
      t.end();
    }
    expect(() => store.read().range(enc("k"), undefined, { rev: 7 })).toThrow(
      "mvcc: required revision is a future revision",
    );
    const c = store.compact(4);
    while (!c.step()) {}
    expect(() => store.read().range(enc("k"), undefined, { rev: 3 })).toThrow(MvccError);
    expect(() => store.read().range(enc("k"), undefined, { rev: 3 })).toThrow(
      "mvcc: required revision has been compacted",
    );
    expect(dec(store.read().range(enc("k"), undefined, { rev: 4 }).kvs[0]!.value)).toBe("2");
    expect(() => store.compact(4)).toThrow("mvcc: required revision has been compacted");
    expect(() => store.compact(99)).toThrow("mvcc: required revision is a future revision");
  });
});

// Model: per revision, the full map of live keys -> {value, create, mod, version}.
type Live = Map<string, { value: string; create: number; mod: number; version: number }>;

// The same model test over both storages: the in-memory one, and the bbolt-format engine
// in a temp file (reopened for the restart part, as a restarted member does).
const storages: [
  string,
  () => Promise<{ storage: Storage; reopen: () => Promise<Storage>; done: () => Promise<void> }>,
][] = [
  [
    "memory",
    async () => {
      const storage = new MemStorage();
      return { storage, reopen: async () => storage, done: async () => {} };
    },
  ],
  [
    "bbolt file",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "regmesh-kv-"));
      const path = join(dir, "db");
      let storage: Storage = await BboltStorage.open(path, { noSync: true });
      return {
        storage,
        reopen: async () => {
          await storage.close();
          storage = await BboltStorage.open(path, { noSync: true });
          return storage;
        },
        done: async () => {
          await storage.close();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  ],
];

describe.each(storages)("KV store against a snapshot-per-revision model (%s)", (_name, makeStorage) => {
  it("reads at every uncompacted revision, after compaction and after restart, match the model", async () => {
    const key = fc.constantFrom("a", "b", "c", "d", "e");
    const op = fc.oneof(
      fc.record({ kind: fc.constant("put" as const), key, value: fc.string({ maxLength: 4 }) }),
      fc.record({ kind: fc.constant("del" as const), key, end: fc.option(key, { nil: undefined }) }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(op, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 25 }),
        fc.nat(),
        fc.boolean(),
        async (txns, compactSeed, commitBeforeRestart) => {
          const env = await makeStorage();
          const { backend, store } = newStore(env.storage);
          const history = new Map<number, Live>([[1, new Map()]]);
          let live: Live = new Map();
          for (const ops of txns) {
            const t = store.write();
            const next: Live = new Map(live);
            const rev = store.rev + 1;
            let changed = false;
            for (const o of ops) {
              if (o.kind === "put") {
                t.put(enc(o.key), enc(o.value), 0n);
                const prev = next.get(o.key);
                next.set(o.key, {
                  value: o.value,
                  create: prev?.create ?? rev,
                  mod: rev,
                  version: (prev?.version ?? 0) + 1,
                });
                changed = true;
              } else {
                const lo = o.key;
                const hi = o.end;
                const n = t.deleteRange(enc(lo), hi === undefined ? undefined : enc(hi));
                const gone = [...next.keys()].filter((k) =>
                  hi === undefined ? k === lo : k >= lo && k < hi,
                );
                expect(n).toBe(gone.length);
                for (const k of gone) next.delete(k);
                if (gone.length > 0) changed = true;
              }
            }
            t.end();
            if (changed) {
              live = next;
              history.set(rev, live);
            }
            expect(store.rev).toBe(changed ? rev : rev - 1);
          }
          const check = (s: KVStore, fromRev: number) => {
            for (let r = fromRev; r <= s.rev; r++) {
              const want = [...history.get(r)!.entries()].sort(([x], [y]) => (x < y ? -1 : 1));
              const got = s.read().range(enc("a"), new Uint8Array([0]), { rev: r });
              expect(
                got.kvs.map((kv) => [
                  dec(kv.key),
                  dec(kv.value),
                  kv.createRevision,
                  kv.modRevision,
                  kv.version,
                ]),
              ).toEqual(
                want.map(([k, v]) => [k, v.value, BigInt(v.create), BigInt(v.mod), BigInt(v.version)]),
              );
            }
          };
          check(store, 1);
          const compactAt = 1 + (compactSeed % store.rev);
          if (compactAt > 1) {
            const c = store.compact(compactAt);
            while (!c.step()) {}
          }
          check(store, Math.max(1, compactAt));
          // Restart: a new store over the same storage sees the same state.
          if (commitBeforeRestart) {
            await backend.commit();
            const reopened = new KVStore(new BufferedBackend(await env.reopen()));
            reopened.restore();
            expect(reopened.rev).toBe(store.rev);
            check(reopened, Math.max(1, compactAt));
          }
          await env.done();
        },
      ),
      { numRuns: runs },
    );
  });
});
