// Cluster membership through etcdctl on a three-member registry-node cluster: add a
// learner (etcd's refusals for a duplicate peer URL and a second learner), promote refused
// while the learner has not caught up, remove it, and update a member's peer URLs.
// Then a follower is removed: its process stops (it learns it from its peers, 410 Gone)
// and the two others go on serving writes. (Joining under load: join.proc.test.ts.)

import { type Cluster, freePort, runEtcdctl, startCluster, waitFor } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let cluster: Cluster;
beforeAll(async () => {
  cluster = await startCluster({ kind: "registry-node", members: 3 });
});
afterAll(async () => {
  await cluster?.stop({ remove: true });
});

/** Leader and a follower, from `endpoint status` (simple format: endpoint, id in hex, ..., is leader, ...). */
async function roles(endpoints: string[]) {
  for (let i = 0; i < 100; i++) {
    const r = await runEtcdctl(["endpoint", "status"], { endpoints });
    const rows = r.stdout
      .trim()
      .split("\n")
      .map((l) => l.split(", "));
    const leader = rows.find((x) => x[4] === "true");
    const follower = rows.find((x) => x[4] === "false");
    if (leader && follower) return { leader: leader[0]!, follower: follower[0]!, followerId: follower[1]! };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("no leader");
}

describe("membership through etcdctl", () => {
  it("adds a learner, refuses as etcd does, removes it, updates a member, moves the leader, removes it", async () => {
    const ctl = (...args: string[]) => runEtcdctl(args, { endpoints: cluster.endpoints });
    const { leader, follower, followerId } = await roles(cluster.endpoints);
    const followerMember = cluster.members.find((m) => m.endpoint === follower)!;
    const peer4 = `http://127.0.0.1:${await freePort()}`;

    const add = await ctl("member", "add", "m4", `--peer-urls=${peer4}`, "--learner");
    expect(add.code, add.stderr).toBe(0);
    const id4 = /Member\s+([0-9a-f]+) added to cluster\s+([0-9a-f]+)/.exec(add.stdout)![1]!;
    expect(add.stdout).toContain(`ETCD_INITIAL_CLUSTER_STATE="existing"`);
    expect((await ctl("member", "list")).stdout).toContain(`${id4}, unstarted, , ${peer4}, , true`);

    expect((await ctl("member", "add", "m5", `--peer-urls=${peer4}`)).stderr).toContain(
      "etcdserver: Peer URLs already exists",
    );
    expect(
      (await ctl("member", "add", "m6", `--peer-urls=http://127.0.0.1:${await freePort()}`, "--learner"))
        .stderr,
    ).toContain("etcdserver: too many learner members in cluster");
    expect((await runEtcdctl(["member", "promote", id4], { endpoints: [leader] })).stderr).toContain(
      "etcdserver: can only promote a learner member which is in sync with leader",
    );
    expect((await ctl("member", "promote", followerId)).stderr).toContain(
      "etcdserver: can only promote a learner member",
    );
    expect((await ctl("member", "remove", id4)).code).toBe(0);
    expect((await ctl("member", "list")).stdout).not.toContain(id4);
    expect((await ctl("member", "remove", "1234")).stderr).toContain("etcdserver: member not found");

    // Update a follower's peer URLs to what they are (a no-op change through the log).
    const upd = await ctl("member", "update", followerId, `--peer-urls=${followerMember.peerUrl}`);
    // etcdctl prints ids with %16x: short ids are padded with spaces.
    expect(upd.stdout).toMatch(new RegExp(`Member\\s+${followerId} updated in cluster`));
    expect((await ctl("put", "after-update", "1")).code).toBe(0);

    // Move leadership to that follower (etcdctl finds the leader among the endpoints).
    const move = await ctl("move-leader", followerId);
    expect(move.stdout, move.stderr).toMatch(new RegExp(`Leadership transferred from \\w+ to ${followerId}`));
    expect((await roles(cluster.endpoints)).leader).toBe(follower);
    // etcdctl itself refuses when none of its endpoints leads (as it does against etcd).
    expect((await runEtcdctl(["move-leader", followerId], { endpoints: [leader] })).stderr).toContain(
      "no leader endpoint given at",
    );

    // Remove it, now the leader: its process stops, the two others go on.
    const others = cluster.endpoints.filter((e) => e !== follower);
    expect((await runEtcdctl(["member", "remove", followerId], { endpoints: others })).code).toBe(0);
    await followerMember.proc!.exited;
    // The two others elect a leader among themselves (an election timeout or two), then serve.
    await waitFor(
      async () => (await runEtcdctl(["put", "after-remove", "1"], { endpoints: others })).code === 0,
      {
        timeoutMs: 15_000,
        describe: () => "a write after removing the leader",
      },
    );
    const list = (await runEtcdctl(["member", "list"], { endpoints: others })).stdout.trim().split("\n");
    expect(list).toHaveLength(2);
  });
});
