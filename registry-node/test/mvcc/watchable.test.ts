import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BufferedBackend,
  type Change,
  KVStore,
  MemStorage,
  WatchableStore,
  type WatchDelivery,
  type Watcher,
} from "../../src/mvcc/index.js";

const runs = process.env.REGMESH_LONG === "1" ? 500 : 60;
const enc = (s: string) => Buffer.from(s);
const keys = ["a", "b", "c", "d"];

type Received = { rev: number; key: string; type: number }[];

describe("watchable store against the write history", () => {
  it("every watcher gets exactly its range's changes from its start revision: ordered, no gaps, no duplicates", async () => {
    const action = fc.oneof(
      {
        weight: 5,
        arbitrary: fc.record({ t: fc.constant("put" as const), key: fc.constantFrom(...keys), n: fc.nat(3) }),
      },
      { weight: 2, arbitrary: fc.record({ t: fc.constant("del" as const), key: fc.constantFrom(...keys) }) },
      {
        weight: 2,
        arbitrary: fc.record({
          t: fc.constant("watch" as const),
          key: fc.constantFrom(...keys),
          prefix: fc.boolean(),
          back: fc.nat(6),
          congestEvery: fc.nat(4),
        }),
      },
      { weight: 2, arbitrary: fc.record({ t: fc.constant("sync" as const) }) },
      { weight: 1, arbitrary: fc.record({ t: fc.constant("resume" as const) }) },
      // A snapshot installed from the leader: the watched store is replaced by one rebuilt
      // from the same history, `ahead` more writes further on (etcd's watchableStore.Restore).
      {
        weight: 1,
        arbitrary: fc.record({
          t: fc.constant("restore" as const),
          ahead: fc.array(fc.constantFrom(...keys), { maxLength: 4 }),
        }),
      },
    );
    await fc.assert(
      fc.asyncProperty(fc.array(action, { minLength: 1, maxLength: 60 }), async (actions) => {
        let kv = new KVStore(new BufferedBackend(new MemStorage()));
        const ws = new WatchableStore(kv);
        // What every revision changed, for the model.
        const history = new Map<number, { key: string; type: number }[]>();
        // Every write, to rebuild a store from for "restore".
        const writes: { t: "put" | "del"; key: string; n: number }[] = [];
        const write = (store: KVStore, a: { t: "put" | "del"; key: string; n: number }) => {
          const txn = store.write();
          if (a.t === "put") for (let i = 0; i <= a.n; i++) txn.put(enc(a.key), enc(`${i}`), 0n);
          else txn.deleteRange(enc(a.key), undefined);
          const rev = txn.beginRev + 1;
          const changes = txn.end();
          if (changes.length > 0)
            history.set(
              rev,
              changes.map((c) => ({ key: c.kv.key.toString(), type: c.type })),
            );
        };
        const watchers: { w: Watcher; got: Received; start: number; match: (k: string) => boolean }[] = [];
        for (const a of actions) {
          if (a.t === "put" || a.t === "del") {
            const w = { t: a.t, key: a.key, n: a.t === "put" ? a.n : 0 };
            writes.push(w);
            write(kv, w);
          } else if (a.t === "restore") {
            const next = new KVStore(new BufferedBackend(new MemStorage()));
            for (const w of writes) {
              const txn = next.write();
              if (w.t === "put") for (let i = 0; i <= w.n; i++) txn.put(enc(w.key), enc(`${i}`), 0n);
              else txn.deleteRange(enc(w.key), undefined);
              txn.end();
            }
            expect(next.rev).toBe(kv.rev);
            for (const key of a.ahead) {
              const w = { t: "put" as const, key, n: 0 };
              writes.push(w);
              write(next, w);
            }
            ws.restore(next);
            kv = next;
          } else if (a.t === "watch") {
            const start = Math.max(2, kv.rev + 1 - a.back);
            const got: Received = [];
            let sends = 0;
            const end = a.prefix ? `${a.key}\u00ff` : undefined;
            const w = ws.watch({
              key: a.key,
              end,
              startRev: start,
              filters: [],
              send: (d: WatchDelivery) => {
                expect(d.kind).toBe("events");
                if (d.kind === "events") {
                  for (const e of d.events) {
                    const rev = Number(e.kv.modRevision);
                    got.push({ rev, key: e.kv.key.toString(), type: e.type });
                  }
                }
                sends += 1;
                return a.congestEvery === 0 || sends % a.congestEvery !== 0;
              },
            });
            const match = (k: string) => (end === undefined ? k === a.key : k >= a.key && k < end);
            watchers.push({ w, got, start, match });
          } else if (a.t === "sync") {
            ws.syncWatchers();
          } else {
            for (const { w } of watchers) ws.resume(w);
          }
        }
        // Drain: resume everyone and sync until all are current.
        for (let i = 0; i < 1000; i++) {
          for (const { w } of watchers) ws.resume(w);
          if (!ws.syncWatchers() && watchers.every(({ w }) => !w.blocked)) break;
        }
        for (const { got, start, match } of watchers) {
          const want: Received = [];
          for (let rev = start; rev <= kv.rev; rev++) {
            for (const c of history.get(rev) ?? []) if (match(c.key)) want.push({ rev, ...c });
          }
          expect(got).toEqual(want);
        }
      }),
      { numRuns: runs },
    );
  });

  it("after a restore onto a store compacted past a watcher's next revision, the watcher gets a compaction notice", () => {
    const fill = (kv: KVStore, n: number) => {
      for (let i = 0; i < n; i++) {
        const t = kv.write();
        t.put(enc("k"), enc(`${i}`), 0n);
        t.end();
      }
    };
    const old = new KVStore(new BufferedBackend(new MemStorage()));
    fill(old, 3);
    const ws = new WatchableStore(old);
    const got: WatchDelivery[] = [];
    const w = ws.watch({
      key: "k",
      end: undefined,
      startRev: 0,
      filters: [],
      send: (d) => {
        got.push(d);
        return true;
      },
    });
    expect(ws.isSynced(w)).toBe(true);
    // The leader's store went on to revision 9 and was compacted at 8.
    const leader = new KVStore(new BufferedBackend(new MemStorage()));
    fill(leader, 8);
    const task = leader.compact(8);
    while (!task.step()) {}
    ws.restore(leader);
    expect(ws.isSynced(w)).toBe(false);
    // Writes on the old store no longer reach anyone; the new store's do, once caught up.
    fill(old, 1);
    expect(got).toEqual([]);
    ws.syncWatchers();
    expect(got).toEqual([{ kind: "compacted", compactRev: 8, rev: 0 }]);
    expect(w.canceled).toBe(true);
  });

  it("a watcher that starts before the compacted revision gets a compaction notice", () => {
    const kv = new KVStore(new BufferedBackend(new MemStorage()));
    const ws = new WatchableStore(kv);
    for (let i = 0; i < 5; i++) {
      const t = kv.write();
      t.put(enc("k"), enc(`${i}`), 0n);
      t.end();
    }
    const task = kv.compact(5);
    while (!task.step()) {}
    const got: WatchDelivery[] = [];
    const w = ws.watch({
      key: "k",
      end: undefined,
      startRev: 3,
      filters: [],
      send: (d) => {
        got.push(d);
        return true;
      },
    });
    ws.syncWatchers();
    expect(got).toEqual([{ kind: "compacted", compactRev: 5, rev: 0 }]);
    expect(w.canceled).toBe(true);
  });

  it("filters drop puts or deletes", () => {
    const kv = new KVStore(new BufferedBackend(new MemStorage()));
    const ws = new WatchableStore(kv);
    const got: Change[] = [];
    ws.watch({
      key: "k",
      end: undefined,
      startRev: 0,
      filters: ["noPut"],
      send: (d) => {
        if (d.kind === "events") got.push(...d.events);
        return true;
      },
    });
    const t = kv.write();
    t.put(enc("k"), enc("v"), 0n);
    t.end();
    const t2 = kv.write();
    t2.deleteRange(enc("k"), undefined);
    t2.end();
    expect(got.map((c) => c.type)).toEqual([1]);
  });
});
