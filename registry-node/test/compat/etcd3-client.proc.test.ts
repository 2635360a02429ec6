// The `etcd3` npm client (written by others, not us) against registry-node: KV, watch,
// leases with keep-alive, and its Txn-based lock and election recipes.

import { type Cluster, startCluster } from "@regmesh/testkit";
import { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let cluster: Cluster;
let client: Etcd3;
const kind = (process.env.REGMESH_REGISTRY as "etcd" | "registry-node" | undefined) ?? "registry-node";

beforeAll(async () => {
  cluster = await startCluster({ kind });
  client = new Etcd3({ hosts: cluster.clientUrls });
});
afterAll(async () => {
  client?.close();
  await cluster?.stop({ remove: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe(`etcd3 npm client against ${kind}`, () => {
  it("kv: put, get, prefix, delete, txn (if/then/else)", async () => {
    await client.put("e3/a").value("1");
    await client.put("e3/b").value("2");
    expect(await client.get("e3/a").string()).toBe("1");
    expect(await client.getAll().prefix("e3/").strings()).toEqual({ "e3/a": "1", "e3/b": "2" });
    const r = await client
      .if("e3/a", "Value", "==", "1")
      .then(client.put("e3/c").value("3"))
      .else(client.delete().key("e3/a"))
      .commit();
    expect(r.succeeded).toBe(true);
    expect(await client.get("e3/c").string()).toBe("3");
    await client.delete().prefix("e3/");
    expect(await client.getAll().prefix("e3/").count()).toBe(0);
  });

  it("watch: events in order with prev values", async () => {
    const w = await client.watch().prefix("e3w/").withPreviousKV().create();
    const seen: string[] = [];
    w.on("put", (kv, prev) =>
      seen.push(`put ${kv.key.toString()}=${kv.value.toString()} prev=${prev?.value.toString() ?? "-"}`),
    );
    w.on("delete", (kv) => seen.push(`del ${kv.key.toString()}`));
    await client.put("e3w/x").value("1");
    await client.put("e3w/x").value("2");
    await client.delete().key("e3w/x");
    for (let i = 0; i < 50 && seen.length < 3; i++) await sleep(20);
    expect(seen).toEqual(["put e3w/x=1 prev=-", "put e3w/x=2 prev=1", "del e3w/x"]);
    await w.cancel();
  });

  it("lease: keep-alive holds a key past its TTL; revoke removes it", async () => {
    const lease = client.lease(2);
    await lease.put("e3l/k").value("v");
    await sleep(3500);
    expect(await client.get("e3l/k").string()).toBe("v");
    await lease.revoke();
    expect(await client.get("e3l/k").string()).toBeNull();
  });

  it("lock: a second holder waits until the first releases", async () => {
    const a = await client.lock("e3/lock").ttl(5).acquire();
    await expect(client.lock("e3/lock").ttl(5).acquire()).rejects.toThrow();
    await a.release();
    const b = await client.lock("e3/lock").ttl(5).acquire();
    await b.release();
  });

  it("election: the first campaigner leads; when it resigns the second does", async () => {
    const election = client.election("e3-election", 5);
    const c1 = election.campaign("one");
    await c1.wait();
    expect(await election.leader()).toBe("one");
    const c2 = election.campaign("two");
    await sleep(300);
    expect(await election.leader()).toBe("one");
    await c1.resign();
    await c2.wait();
    expect(await election.leader()).toBe("two");
    await c2.resign();
  });
});
