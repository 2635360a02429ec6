// Leases on a three-member cluster: only the leader keeps deadlines, so keep-alives and
// TimeToLive sent to a follower are forwarded to it, as etcd does; a lease kept alive only
// through a follower outlives its TTL, and one that is not expires on time.

import { type Cluster, runEtcdctl, startCluster } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let cluster: Cluster;
beforeAll(async () => {
  cluster = await startCluster({ kind: "registry-node", members: 3 });
});
afterAll(async () => {
  await cluster?.stop({ remove: true });
});

async function follower(): Promise<string> {
  for (let i = 0; i < 50; i++) {
    const r = await runEtcdctl(["endpoint", "status", "-w", "json"], { endpoints: cluster.endpoints });
    if (r.code === 0) {
      const list = JSON.parse(r.stdout) as {
        Endpoint: string;
        Status: { leader: unknown; header: { member_id: unknown } };
      }[];
      const f = list.find(
        (x) =>
          String(x.Status.leader) !== "0" && String(x.Status.leader) !== String(x.Status.header.member_id),
      );
      if (f) return f.Endpoint;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("no follower found");
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("leases through a follower", () => {
  it("keep-alive and TimeToLive sent to a follower reach the leader's lessor", async () => {
    const f = await follower();
    const ctl = (...args: string[]) => runEtcdctl(args, { endpoints: [f] });
    const id = /lease ([0-9a-f]+) granted/.exec((await ctl("lease", "grant", "3")).stdout)![1]!;
    expect((await ctl("put", "fl/k", "v", "--lease", id)).code).toBe(0);
    for (let i = 0; i < 4; i++) {
      await sleep(1000);
      expect((await ctl("lease", "keep-alive", "--once", id)).stdout).toContain(
        `lease ${id} keepalived with TTL(3)`,
      );
    }
    // 4 s after the grant, past its 3 s TTL: alive only because the follower forwarded the renewals.
    expect((await ctl("get", "fl/k", "--print-value-only")).stdout).toBe("v\n");
    await sleep(1200);
    const ttl = (await ctl("lease", "timetolive", id)).stdout;
    expect(ttl).toMatch(/remaining\((1|0)s\)/);
    await sleep(3000);
    expect((await ctl("get", "fl/k")).stdout).toBe("");
    expect((await ctl("lease", "timetolive", id)).stdout).toContain("already expired");
  });
});
