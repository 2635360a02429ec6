import type { mvccpb } from "@regmesh/proto";
import { type Cluster, registryKindFromEnv, runEtcdctl, startCluster } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EtcdClient } from "../../src/etcd/client.js";
import { EtcdErrorCode } from "../../src/etcd/errors.js";
import { compare, op } from "../../src/etcd/txn.js";
import { history, sleep, until } from "./helpers.js";

let cluster: Cluster;
const clients: EtcdClient[] = [];
function client(opts: Partial<ConstructorParameters<typeof EtcdClient>[0]> = {}): EtcdClient {
  const c = new EtcdClient({
    endpoints: cluster.endpoints,
    watchProgressIntervalMs: 500,
    watchIdleTimeoutMs: 2_000,
    ...opts,
  });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  cluster = await startCluster({ kind: registryKindFromEnv("etcd") });
});
afterAll(async () => {
  for (const c of clients) c.close();
  await cluster?.stop({ remove: true });
});

describe("etcd client against a real registry", () => {
  it("KV: put, get, range with prefix and limit, delete", async () => {
    const c = client();
    await c.put("kv/a", "1");
    await c.put("kv/b", "2");
    await c.put("kv/c", "3");
    expect((await c.get("kv/b"))?.value.toString()).toBe("2");
    expect(await c.get("kv/zz")).toBeUndefined();
    const all = await c.range("kv/", { prefix: true });
    expect(all.kvs.map((kv) => kv.key.toString())).toEqual(["kv/a", "kv/b", "kv/c"]);
    const page = await c.range("kv/", { prefix: true, limit: 2 });
    expect(page.kvs.length).toBe(2);
    expect(page.more).toBe(true);
    expect(page.count).toBe(3n);
    const del = await c.delete("kv/", { prefix: true, prevKv: true });
    expect(del.deleted).toBe(3n);
    expect(del.prevKvs.map((kv) => kv.value.toString())).toEqual(["1", "2", "3"]);
  });

  it("Txn: compares pick the branch; responses carry each op's result", async () => {
    const c = client();
    const create = () =>
      c
        .txn()
        .if(compare.version("txn/k", "=", 0))
        .onSuccess(op.put("txn/k", "first"))
        .onFailure(op.get("txn/k"))
        .commit();
    const r1 = await create();
    expect(r1.succeeded).toBe(true);
    const r2 = await create();
    expect(r2.succeeded).toBe(false);
    expect(r2.responses[0]!.responseRange!.kvs[0]!.value.toString()).toBe("first");
    const cur = await c.get("txn/k");
    const cas = await c
      .txn()
      .if(compare.modRevision("txn/k", "=", cur!.modRevision), compare.value("txn/k", "=", "first"))
      .onSuccess(op.put("txn/k", "second"), op.delete("txn/other"))
      .commit();
    expect(cas.succeeded).toBe(true);
    expect((await c.get("txn/k"))?.value.toString()).toBe("second");
  });

  it("maps etcd's errors to stable codes", async () => {
    const c = client();
    await expect(c.range("x", { revision: 1_000_000n })).rejects.toMatchObject({
      code: EtcdErrorCode.FUTURE_REVISION,
    });
    const ops = Array.from({ length: 129 }, (_, i) => op.put(`many/${i}`, "v"));
    await expect(
      c
        .txn()
        .onSuccess(...ops)
        .commit(),
    ).rejects.toMatchObject({ code: EtcdErrorCode.TOO_MANY_OPS });
    await expect(c.timeToLive(0x1234n)).resolves.toMatchObject({ TTL: -1n });
    await expect(c.revoke(0x1234n)).rejects.toMatchObject({ code: EtcdErrorCode.LEASE_NOT_FOUND });
  });

  it("lease keep-alive holds a key alive past 3 x TTL", async () => {
    const c = client();
    const lease = await c.grant(2);
    const keeper = c.keepAlive(lease);
    let lost = false;
    keeper.on("lost", () => (lost = true));
    await c.put("lease/held", "x", { lease: lease.id });
    await sleep(6_500);
    expect(lost).toBe(false);
    expect((await c.get("lease/held"))?.lease).toBe(lease.id);
    expect((await c.timeToLive(lease.id)).TTL).toBeGreaterThan(0n);
    keeper.close();
    await c.revoke(lease.id);
    expect(await c.get("lease/held")).toBeUndefined();
  });

  it("lease revoked behind the keeper's back is reported lost", async () => {
    const c = client();
    const lease = await c.grant(5);
    const keeper = c.keepAlive(lease);
    let lostCode = "";
    keeper.on("lost", (e) => (lostCode = e.code));
    const r = await runEtcdctl(["lease", "revoke", lease.id.toString(16)], { endpoints: cluster.endpoints });
    expect(r.code, r.stderr).toBe(0);
    await until(
      () => lostCode !== "",
      3_000,
      () => "lease lost",
    );
    expect(lostCode).toBe(EtcdErrorCode.LEASE_LOST);
  });

  it.each([false, true])(
    "many watchers on one stream (client watch ids: %s), in order",
    async (clientIds) => {
      const c = client({ clientWatchIds: clientIds });
      const seen: Record<string, string[]> = { a: [], b: [], all: [] };
      const created: string[] = [];
      const mk = (name: string, key: string, prefix: boolean) =>
        c.watch(
          { key, prefix },
          {
            events: (evs) => {
              for (const e of evs) seen[name]!.push(e.kv!.key.toString());
            },
            connected: () => created.push(name),
          },
        );
      const ws = [
        mk("a", `mw${clientIds}/a`, false),
        mk("b", `mw${clientIds}/b`, false),
        mk("all", `mw${clientIds}/`, true),
      ];
      await until(
        () => created.length === 3,
        5_000,
        () => "3 watchers created",
      );
      for (const k of ["a", "b", "a", "c"]) await c.put(`mw${clientIds}/${k}`, "v");
      await until(
        () => seen.all!.length === 4,
        5_000,
        () => "4 events",
      );
      expect(seen.a!.length).toBe(2);
      expect(seen.b!.length).toBe(1);
      expect(seen.all).toEqual(["a", "b", "a", "c"].map((k) => `mw${clientIds}/${k}`));
      for (const w of ws) w.cancel();
    },
  );

  it("watch after compaction tells the watcher to re-list", async () => {
    const c = client();
    for (let i = 0; i < 5; i++) await c.put("cmp/k", `${i}`);
    const head = (await c.get("cmp/k"))!.modRevision;
    await c.compact(head);
    let compactedAt = 0n;
    c.watch(
      { key: "cmp/", prefix: true, startRevision: 2n },
      { events() {}, compacted: (r) => (compactedAt = r) },
    );
    await until(
      () => compactedAt > 0n,
      5_000,
      () => "compacted",
    );
    expect(compactedAt).toBe(head);
    await expect(c.range("cmp/k", { revision: 2n })).rejects.toMatchObject({ code: EtcdErrorCode.COMPACTED });
  });

  it("watch resumes after the member restarts: no gap, no duplicate", async () => {
    const c = client();
    const revs: bigint[] = [];
    let disconnects = 0;
    c.watch(
      { key: "rs/", prefix: true },
      {
        events: (evs: mvccpb.Event[]) => {
          for (const e of evs) revs.push(e.kv!.modRevision);
        },
        disconnected: () => disconnects++,
      },
    );
    await sleep(200);
    let written = 0n;
    const write = async (n: number, from: number) => {
      for (let i = from; i < from + n; i++) written = (await c.put(`rs/${i % 7}`, `${i}`)).header!.revision;
    };
    await write(20, 0);
    const restart = cluster.members[0]!.restart();
    const during = write(20, 20); // retried through the restart by the client's failover
    await restart;
    await during;
    await write(20, 40);
    await until(
      () => revs.length > 0 && revs[revs.length - 1]! >= written,
      20_000,
      () => `rev ${written}`,
    );
    expect(disconnects).toBeGreaterThanOrEqual(1);
    // A put that timed out during the restart and was retried may still commit later (as in
    // etcd, a timed-out proposal can apply): compare with the store's history up to what arrived.
    await sleep(300);
    const truth = await history(client(), "rs/", revs[0]!, revs[revs.length - 1]!);
    expect(revs).toEqual(truth);
    expect(new Set(revs).size).toBe(revs.length);
  });
});
