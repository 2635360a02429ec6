// Three registry-node processes on loopback. Under write load the leader crashes, losing
// every write it had not fsynced (the fault file layer, switched on by REGMESH_FAULT_FS
// and fired by SIGUSR2, then SIGKILL): a new leader must commit within 3 s at default
// timings, and after everyone restarts, every acknowledged write must be there.

import { credentials, Metadata } from "@grpc/grpc-js";
import { etcdserverpb } from "@regmesh/proto";
import { type Cluster, type Member, runEtcdctl, startCluster } from "@regmesh/testkit";
import { afterAll, describe, expect, it } from "vitest";

let cluster: Cluster | undefined;
afterAll(async () => {
  await cluster?.stop({ remove: true });
});

type Status = {
  Endpoint: string;
  Status: { leader: number | string; header: { member_id: number | string } };
};

async function leaderOf(c: Cluster): Promise<Member> {
  for (let i = 0; i < 100; i++) {
    const r = await runEtcdctl(["endpoint", "status", "-w", "json"], { endpoints: c.endpoints });
    if (r.code === 0) {
      const list = JSON.parse(r.stdout) as Status[];
      const s = list.find((x) => String(x.Status.leader) === String(x.Status.header.member_id));
      if (s) return c.members.find((m) => m.endpoint === s.Endpoint)!;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("no leader found");
}

function putter(endpoints: string[]) {
  const clients = endpoints.map((e) => new etcdserverpb.KVClient(e, credentials.createInsecure()));
  let next = 0;
  const put = (key: string): Promise<boolean> =>
    new Promise((resolve) => {
      const c = clients[next++ % clients.length]!;
      c.put(
        etcdserverpb.PutRequest.create({ key: Buffer.from(key), value: Buffer.from("v") }),
        new Metadata(),
        { deadline: Date.now() + 2000 },
        (err) => resolve(err === null),
      );
    });
  return {
    put,
    close: () => {
      for (const c of clients) c.close();
    },
  };
}

describe("failover: three registry-node processes", () => {
  it("a crashed leader (unsynced writes lost) is replaced within 3 s; no acknowledged write is lost", async () => {
    cluster = await startCluster({ kind: "registry-node", members: 3, env: { REGMESH_FAULT_FS: "1" } });
    const c = cluster;
    const p = putter(c.endpoints);
    const acked: string[] = [];
    const ackTimes: number[] = [];
    let stop = false;
    let n = 0;
    const writers = Array.from({ length: 4 }, async (_, w) => {
      const deadline = Date.now() + 20_000;
      while (!stop && Date.now() < deadline && n < 20_000) {
        const key = `fo/${w}/${n++}`;
        if (await p.put(key)) {
          acked.push(key);
          ackTimes.push(Date.now());
        }
      }
    });
    await new Promise((r) => setTimeout(r, 1500));
    const leader = await leaderOf(c);
    const killedAt = Date.now();
    leader.proc!.killNow("SIGUSR2"); // drop unsynced writes, then SIGKILL (io/index.ts)
    await leader.proc!.exited;
    await new Promise((r) => setTimeout(r, 4000));
    stop = true;
    await Promise.all(writers);
    p.close();

    const firstAfter = ackTimes.find((t) => t > killedAt + 50);
    expect(firstAfter, "a write was acknowledged after the crash").toBeDefined();
    console.log(
      `failover: first write acknowledged ${firstAfter! - killedAt} ms after the crash; ${acked.length} writes acknowledged`,
    );
    expect(firstAfter! - killedAt).toBeLessThan(3000);
    expect(acked.length).toBeGreaterThan(20);

    // Everyone restarts (the crashed one first), then every acknowledged write must be there.
    leader.start();
    await leader.waitHealthy();
    for (const m of c.members) await m.restart();
    await c.waitHealthy();
    const got = await runEtcdctl(["get", "fo/", "--prefix", "--keys-only", "-w", "json"], {
      endpoints: c.endpoints,
    });
    const keys = new Set(
      ((JSON.parse(got.stdout) as { kvs?: { key: string }[] }).kvs ?? []).map((kv) =>
        Buffer.from(kv.key, "base64").toString(),
      ),
    );
    const missing = acked.filter((k) => !keys.has(k));
    expect(missing).toEqual([]);
  });
});
