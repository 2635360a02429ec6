// The mock registry against a real etcd: one script of KV, Txn, Lease and Watch operations runs
// through the SDK's client on both, and every answer (revisions, versions, kvs, counts, Txn
// results, error codes, watch events) must be the same. Lease ids differ by nature and are
// compared through a renaming.

import type { etcdserverpb, mvccpb } from "@regmesh/proto";
import { type Cluster, startEtcd } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randInt, seededRand } from "../../src/core/random.js";
import { EtcdClient } from "../../src/etcd/client.js";
import { EtcdError } from "../../src/etcd/errors.js";
import { compare, op } from "../../src/etcd/txn.js";
import { MockRegistry } from "../../src/testing/mock-registry.js";
import { until } from "../etcd/helpers.js";

let etcd: Cluster;
let mock: MockRegistry;

beforeAll(async () => {
  etcd = await startEtcd();
  mock = await MockRegistry.start();
});
afterAll(async () => {
  await mock?.stop();
  await etcd?.stop({ remove: true });
});

/** Plain data for comparison: header reduced to its revision, lease ids renamed in order of appearance. */
function normalizer() {
  const leases = new Map<string, string>();
  const lease = (id: bigint) => {
    if (id === 0n) return "0";
    const k = id.toString();
    if (!leases.has(k)) leases.set(k, `L${leases.size + 1}`);
    return leases.get(k)!;
  };
  const norm = (v: unknown, key = ""): unknown => {
    if (typeof v === "bigint") return key === "lease" || key === "ID" ? lease(v) : v.toString();
    if (Buffer.isBuffer(v)) return v.toString("utf8");
    if (Array.isArray(v)) return v.map((x) => norm(x));
    if (v !== null && typeof v === "object") {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        if (x === undefined) continue;
        if (k === "header") out.revision = norm((x as etcdserverpb.ResponseHeader).revision);
        else out[k] = norm(x, k);
      }
      return out;
    }
    return v;
  };
  return norm;
}

async function script(c: EtcdClient): Promise<unknown[]> {
  const norm = normalizer();
  const out: unknown[] = [];
  const step = async (name: string, f: () => Promise<unknown>) => {
    try {
      out.push([name, norm(await f())]);
    } catch (err) {
      out.push([
        name,
        err instanceof EtcdError ? `error ${err.code} (grpc ${err.grpcCode}): ${err.details}` : String(err),
      ]);
    }
  };
  const events: mvccpb.Event[] = [];
  const first = (await c.put("d/a", "1")).header!.revision;
  const w = c.watch(
    { key: "d/", prefix: true, startRevision: first, prevKv: true },
    { events: (e) => events.push(...e) },
  );
  for (const k of ["d/b", "d/c", "d/d", "e/x"]) await step(`put ${k}`, () => c.put(k, k));
  await step("put prev_kv", () => c.put("d/a", "2", { prevKv: true }));
  await step("range prefix", () => c.range("d/", { prefix: true }));
  await step("range limit", () => c.range("d/", { prefix: true, limit: 2 }));
  await step("range count_only", () => c.range("d/", { prefix: true, countOnly: true }));
  await step("range keys_only", () => c.range("d/", { prefix: true, keysOnly: true }));
  await step("range [d/b, d/d)", () => c.range("d/b", { rangeEnd: "d/d" }));
  await step("range from d/c to the end", () => c.range("d/c", { rangeEnd: Buffer.from([0]) }));
  await step("range at first revision", () => c.range("d/", { prefix: true, revision: first }));
  await step("range future revision", () => c.range("d/a", { revision: 10_000n }));
  await step("range missing", () => c.range("nope"));
  await step("delete one", () => c.delete("d/d", { prevKv: true }));
  await step("delete nothing", () => c.delete("d/zzz"));
  await step("txn create-if-absent (fails)", () =>
    c
      .txn()
      .if(compare.version("d/a", "=", 0))
      .onSuccess(op.put("d/a", "x"))
      .onFailure(op.get("d/a"))
      .commit(),
  );
  await step("txn compares hold; reads see earlier writes", () =>
    c
      .txn()
      .if(
        compare.value("d/a", "=", "2"),
        compare.version("d/a", ">", 1),
        compare.createRevision("d/a", "=", first),
      )
      .onSuccess(op.put("d/t", "t"), op.get("d/", { prefix: true, countOnly: true }), op.delete("d/b"))
      .commit(),
  );
  await step("txn value compare on a missing key", () =>
    c
      .txn()
      .if(compare.value("d/missing", "=", ""))
      .onSuccess(op.put("d/m", "m"))
      .commit(),
  );
  await step("txn mod compare on a missing key", () =>
    c
      .txn()
      .if(compare.modRevision("d/missing", "=", 0))
      .onSuccess(op.put("d/m", "m"))
      .commit(),
  );
  await step("txn duplicate key", () => c.txn().onSuccess(op.put("d/q", "1"), op.put("d/q", "2")).commit());
  await step("txn put within a delete", () =>
    c
      .txn()
      .onSuccess(op.delete("d/", { prefix: true }), op.put("d/q", "2"))
      .commit(),
  );
  const lease = await c.grant(60);
  await step("put with lease", () => c.put("d/l", "l", { lease: lease.id }));
  await step("put with unknown lease", () => c.put("d/u", "u", { lease: 0x1234n }));
  await step("ignore_value on a missing key", () =>
    c.txnRequest({
      compare: [],
      success: [
        {
          requestPut: {
            key: Buffer.from("d/none"),
            value: Buffer.alloc(0),
            lease: 0n,
            prevKv: false,
            ignoreValue: true,
            ignoreLease: false,
          },
        },
      ],
      failure: [],
    }),
  );
  await step("time to live with keys", async () => {
    const t = await c.timeToLive(lease.id, true);
    return { ID: t.ID, grantedTTL: t.grantedTTL, keys: t.keys, ttlOk: t.TTL > 55n && t.TTL <= 60n };
  });
  await step("revoke", () => c.revoke(lease.id));
  await step("grant under the minimum TTL", async () => {
    const short = await c.grant(1);
    await c.revoke(short.id);
    return short.ttlS;
  });
  await step("leased key gone", () => c.range("d/l"));
  await step("time to live of a revoked lease", () => c.timeToLive(lease.id));
  await step("revoke again", () => c.revoke(lease.id));
  const head = (await c.put("d/z", "z")).header!.revision;
  await until(
    () => events.at(-1)?.kv?.modRevision === head,
    10_000,
    () => "watch caught up",
  );
  w.cancel();
  out.push(["watch events", norm(events)]);
  await step("compact", () => c.compact(head - 2n));
  await step("range at a compacted revision", () => c.range("d/a", { revision: head - 3n }));
  await step("range at the compaction revision", () => c.range("d/", { prefix: true, revision: head - 2n }));
  let compactedAt = -1n;
  c.watch(
    { key: "d/", prefix: true, startRevision: first },
    { events: () => {}, compacted: (r) => (compactedAt = r) },
  );
  await until(
    () => compactedAt >= 0n,
    10_000,
    () => "compacted watch",
  );
  out.push(["watch from a compacted revision", (compactedAt - head).toString()]);
  return out;
}

/** Brings both stores to the same revision, so revisions compare as they are. */
async function align(a: EtcdClient, b: EtcdClient): Promise<void> {
  const ra = (await a.put("align", "x")).header!.revision;
  let rb = (await b.put("align", "x")).header!.revision;
  while (rb < ra) rb = (await b.put("align", "x")).header!.revision;
  let r = ra;
  while (r < rb) r = (await a.put("align", "x")).header!.revision;
}

/**
 * Seeded random operations on a small keyspace (puts, deletes, ranges at past revisions, Txns on
 * compares), every answer recorded, and the watch's events over the whole run.
 */
async function randomOps(c: EtcdClient, seed: number, count: number): Promise<unknown[]> {
  const rand = seededRand(seed);
  const norm = normalizer();
  const out: unknown[] = [];
  const key = () => `r/${randInt(rand, 8)}`;
  const events: mvccpb.Event[] = [];
  const first = (await c.put("r/0", "start")).header!.revision;
  const w = c.watch(
    { key: "r/", prefix: true, startRevision: first, prevKv: true },
    { events: (e) => events.push(...e) },
  );
  let head = first;
  for (let i = 0; i < count; i++) {
    const kind = randInt(rand, 6);
    const k = key();
    let res: { header?: etcdserverpb.ResponseHeader } | undefined;
    try {
      if (kind === 0 || kind === 1) res = await c.put(k, `v${i}`, { prevKv: rand() < 0.5 });
      else if (kind === 2) res = await c.delete(k, rand() < 0.3 ? { rangeEnd: key() } : { prevKv: true });
      else if (kind === 3) {
        const revision = rand() < 0.5 ? 0n : first + BigInt(randInt(rand, Number(head - first) + 1));
        res = await c.range("r/", { prefix: true, revision, limit: randInt(rand, 4) });
      } else {
        const targets = [
          compare.version(k, "=", randInt(rand, 3)),
          compare.value(k, ">", `v${randInt(rand, count)}`),
          compare.modRevision(k, "<", head - BigInt(randInt(rand, 5))),
          compare.createRevision(k, "!=", 0),
        ];
        res = await c
          .txn()
          .if(targets[randInt(rand, targets.length)]!)
          .onSuccess(op.put(k, `t${i}`), op.get("r/", { prefix: true, countOnly: true }))
          .onFailure(op.delete(key()), op.get(k))
          .commit();
      }
      out.push([i, kind, norm(res)]);
    } catch (err) {
      out.push([i, kind, err instanceof EtcdError ? err.code : String(err)]);
    }
    if (res?.header !== undefined && res.header.revision > head) head = res.header.revision;
  }
  const last = (await c.put("r/end", "end")).header!.revision;
  await until(
    () => events.at(-1)?.kv?.modRevision === last,
    10_000,
    () => "watch caught up",
  );
  w.cancel();
  out.push(["events", norm(events)]);
  await c.delete("r/", { prefix: true });
  return out;
}

describe("mock registry against real etcd", () => {
  it("seeded random operations give the same answers and the same watch events", async () => {
    const seed = Number(process.env.REGMESH_SEED ?? 1 + Math.floor(Math.random() * 1e6));
    const onEtcd = new EtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 2_000 });
    const onMock = new EtcdClient({ endpoints: [mock.endpoint], requestTimeoutMs: 2_000 });
    try {
      await align(onEtcd, onMock);
      const want = await randomOps(onEtcd, seed, 200);
      const got = await randomOps(onMock, seed, 200);
      for (let i = 0; i < want.length; i++) {
        expect(got[i], `seed ${seed} (REGMESH_SEED=${seed} replays), step ${i}`).toEqual(want[i]);
      }
    } finally {
      onEtcd.close();
      onMock.close();
    }
  });

  it("the same script gives the same answers", async () => {
    const onEtcd = new EtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 2_000 });
    const onMock = new EtcdClient({ endpoints: [mock.endpoint], requestTimeoutMs: 2_000 });
    try {
      await align(onEtcd, onMock);
      const want = await script(onEtcd);
      const got = await script(onMock);
      // Step by step, so a difference names its step.
      for (let i = 0; i < want.length; i++)
        expect(got[i], JSON.stringify((want[i] as unknown[])[0])).toEqual(want[i]);
      expect(got.length).toBe(want.length);
    } finally {
      onEtcd.close();
      onMock.close();
    }
  });
});
