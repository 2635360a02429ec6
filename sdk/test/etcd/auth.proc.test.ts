import { type Cluster, registryKindFromEnv, runEtcdctl, startCluster } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EtcdClient } from "../../src/etcd/client.js";
import { EtcdErrorCode } from "../../src/etcd/errors.js";
import { until } from "./helpers.js";

let cluster: Cluster;
const clients: EtcdClient[] = [];

beforeAll(async () => {
  cluster = await startCluster({ kind: registryKindFromEnv("etcd") });
  const ctl = (args: string[]) => runEtcdctl(args, { endpoints: cluster.endpoints });
  for (const args of [
    ["user", "add", "root:rootpw"],
    ["role", "add", "root"],
    ["user", "grant-role", "root", "root"],
    ["auth", "enable"],
  ]) {
    const r = await ctl(args);
    if (r.code !== 0) throw new Error(`etcdctl ${args.join(" ")}: ${r.stderr}`);
  }
});
afterAll(async () => {
  for (const c of clients) c.close();
  await cluster?.stop({ remove: true });
});

describe("auth", () => {
  it("authenticates, sends the token, and refreshes it after the server forgets it", async () => {
    const anon = new EtcdClient({ endpoints: cluster.endpoints });
    clients.push(anon);
    await expect(anon.put("a/k", "v")).rejects.toMatchObject({ code: EtcdErrorCode.AUTH_REQUIRED });

    const bad = new EtcdClient({
      endpoints: cluster.endpoints,
      auth: { username: "root", password: "nope" },
    });
    clients.push(bad);
    await expect(bad.get("a/k")).rejects.toMatchObject({ code: EtcdErrorCode.AUTH_FAILED });

    const c = new EtcdClient({
      endpoints: cluster.endpoints,
      auth: { username: "root", password: "rootpw" },
      watchProgressIntervalMs: 300,
      watchIdleTimeoutMs: 1_500,
    });
    clients.push(c);
    await c.put("a/k", "1");
    expect((await c.get("a/k"))?.value.toString()).toBe("1");
    const seen: string[] = [];
    c.watch(
      { key: "a/", prefix: true },
      { events: (evs) => seen.push(...evs.map((e) => e.kv!.value.toString())) },
    );
    await c.put("a/k", "2");
    await until(
      () => seen.length === 1,
      5_000,
      () => "first event",
    );

    // Simple tokens live in the member's memory: a restart invalidates them.
    await cluster.members[0]!.restart();
    // Written by someone else, so the watch has to re-open with a fresh token on its own.
    const w = await runEtcdctl(["--user=root:rootpw", "put", "a/k", "3"], { endpoints: cluster.endpoints });
    expect(w.code, w.stderr).toBe(0);
    await until(
      () => seen.length === 2,
      10_000,
      () => `event after restart (seen ${seen.length})`,
    );
    expect(seen).toEqual(["2", "3"]);
    await c.put("a/k", "4");
    expect((await c.get("a/k"))?.value.toString()).toBe("4");
  });
});
