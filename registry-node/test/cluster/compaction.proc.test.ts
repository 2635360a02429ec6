// Raft log compaction (--snapshot-count): with a small count, snapshots are taken as writes
// go on; a member that was down while the leader compacted past it is caught up with a
// snapshot of the leader's backend and ends with the same HashKV; after a full restart
// every key is there.

import { readdirSync } from "node:fs";
import { join } from "node:path";
import { type Cluster, runEtcdctl, startCluster } from "@regmesh/testkit";
import { afterAll, describe, expect, it } from "vitest";

let cluster: Cluster | undefined;
afterAll(async () => {
  await cluster?.stop({ remove: true });
});

async function countOf(endpoints: string[]): Promise<number> {
  const r = await runEtcdctl(["get", "cp/", "--prefix", "--keys-only", "-w", "json"], { endpoints });
  return (JSON.parse(r.stdout) as { kvs?: unknown[] }).kvs?.length ?? 0;
}

describe("log compaction", () => {
  it("snapshots every --snapshot-count entries; a lagging member catches up from a snapshot", async () => {
    cluster = await startCluster({ kind: "registry-node", members: 3, extraArgs: ["--snapshot-count=50"] });
    const c = cluster;
    const down = c.members[2]!;
    await down.stop();
    const live = c.members.slice(0, 2).map((m) => m.endpoint);
    // What is tested is compaction, not availability: a put that meets an election (this
    // machine is shared and slow at times) is tried again, as a client would.
    for (let i = 0; i < 150; i++) {
      let r = await runEtcdctl(["put", `cp/${i}`, `${i}`], { endpoints: live });
      for (let t = 0; t < 3 && r.code !== 0; t++)
        r = await runEtcdctl(["put", `cp/${i}`, `${i}`], { endpoints: live });
      expect(r.code, r.stderr).toBe(0);
    }
    const snaps = readdirSync(join(c.members[0]!.dataDir, "member", "snap")).filter((f) =>
      f.endsWith(".snap"),
    );
    expect(snaps.length).toBeGreaterThan(2);

    down.start();
    await down.waitHealthy();
    expect(await countOf([down.endpoint])).toBe(150);
    const hash = async (e: string) =>
      (await runEtcdctl(["endpoint", "hashkv"], { endpoints: [e] })).stdout.split(", ")[1];
    expect(await hash(down.endpoint)).toBe(await hash(live[0]!));
    // Maintenance.Hash over the whole backend agrees too (etcdctl endpoint hash).
    const whole = async (e: string) =>
      (await runEtcdctl(["endpoint", "hash"], { endpoints: [e] })).stdout.split(", ")[1];
    await runEtcdctl(["get", "cp/0"], { endpoints: [down.endpoint] });
    expect(await whole(down.endpoint)).toBe(await whole(live[0]!));

    for (const m of c.members) await m.stop();
    for (const m of c.members) m.start();
    await c.waitHealthy();
    expect(await countOf(c.endpoints)).toBe(150);
  });
});
