import diagnostics from "node:diagnostics_channel";
import { type Cluster, registryKindFromEnv, startCluster } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EtcdClient } from "../../src/etcd/client.js";
import { history, sleep, until } from "./helpers.js";

let cluster: Cluster;
let c: EtcdClient | undefined;
let c2: EtcdClient | undefined;

beforeAll(async () => {
  cluster = await startCluster({ kind: registryKindFromEnv("etcd"), members: 3 });
});
afterAll(async () => {
  c?.close();
  c2?.close();
  await cluster?.stop({ remove: true });
});

describe("endpoint failover (3 members)", () => {
  it("keeps writing and watching when the member in use is killed", async () => {
    c = new EtcdClient({
      endpoints: cluster.endpoints,
      requestTimeoutMs: 2_000,
      watchProgressIntervalMs: 300,
      watchIdleTimeoutMs: 1_500,
    });
    const revs: bigint[] = [];
    c.watch(
      { key: "fo/", prefix: true },
      {
        events: (evs) => {
          for (const e of evs) revs.push(e.kv!.modRevision);
        },
      },
    );
    await sleep(200);
    const written: bigint[] = [];
    for (let i = 0; i < 10; i++) written.push((await c.put(`fo/${i}`, "v")).header!.revision);
    const used = cluster.members.find((m) => m.endpoint === c!.currentEndpoint)!;
    await used.kill9();
    for (let i = 10; i < 30; i++) written.push((await c.put(`fo/${i}`, "v")).header!.revision);
    expect(c.currentEndpoint).not.toBe(used.endpoint);
    const last = written[written.length - 1]!;
    await until(
      () => revs.length > 0 && revs[revs.length - 1]! >= last,
      15_000,
      () => `watch at ${last}`,
    );
    // A put retried after a leader change may have been applied twice: compare with the store's
    // own history, which must also contain every revision a put returned.
    expect(revs).toEqual(await history(c, "fo/", revs[0]!, last));
    for (const w of written) expect(revs).toContain(w);
    // The killed member comes back and catches up; reads work from any member.
    used.start();
    await used.waitHealthy();
    expect((await c.range("fo/", { prefix: true, countOnly: true })).count).toBe(30n);
  });

  it("hasleader: a watch on a member that lost its leader is ended with 'no leader' and resumes", async () => {
    const [a, b, d] = cluster.members as [
      (typeof cluster.members)[0],
      (typeof cluster.members)[0],
      (typeof cluster.members)[0],
    ];
    c2 = new EtcdClient({
      endpoints: [a.endpoint, b.endpoint, d.endpoint],
      requestTimeoutMs: 1_000,
      watchProgressIntervalMs: 300,
      watchIdleTimeoutMs: 10_000,
    });
    const reasons: string[] = [];
    const onReconnect = (m: unknown) => reasons.push((m as { reason: string }).reason);
    diagnostics.subscribe("sdk:watch:reconnect", onReconnect);
    try {
      const values: string[] = [];
      let connected = false;
      c2.watch(
        { key: "hl/", prefix: true },
        {
          events: (evs) => values.push(...evs.map((e) => e.kv!.value.toString())),
          connected: () => {
            connected = true;
          },
        },
      );
      // The watch starts at the revision current when the server creates it: a put sent
      // before that would not be seen, so wait for the watch to be in place first.
      await until(
        () => connected,
        5_000,
        () => "watch connected",
      );
      await c2.put("hl/k", "1");
      await until(
        () => values.length === 1,
        5_000,
        () => "first event",
      );
      await Promise.all([b.stop(), d.stop()]);
      await until(
        () => reasons.some((r) => r.includes("no leader")),
        15_000,
        () => `no leader (got ${reasons})`,
      );
      b.start();
      d.start();
      await Promise.all([b.waitHealthy(), d.waitHealthy()]);
      await c2.put("hl/k", "2");
      await until(
        () => values.length === 2,
        15_000,
        () => "event after the quorum is back",
      );
      expect(values[0]).toBe("1");
      expect(values.at(-1)).toBe("2");
    } finally {
      diagnostics.unsubscribe("sdk:watch:reconnect", onReconnect);
    }
  });
});
