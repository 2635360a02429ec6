// Membership under load: a learner is added to a three-member cluster while writes go on,
// joins with --initial-cluster-state=existing (the leader sends it a snapshot: its backend
// file), catches up and is promoted; then the old leader is removed (its process stops).
// No acknowledged write is lost, and every remaining member reports the same HashKV.

import { join } from "node:path";
import { credentials, Metadata } from "@grpc/grpc-js";
import { etcdserverpb } from "@regmesh/proto";
import {
  type Cluster,
  freePort,
  ManagedProcess,
  registryNodeBin,
  runEtcdctl,
  startCluster,
  waitFor,
} from "@regmesh/testkit";
import { afterAll, describe, expect, it } from "vitest";

let cluster: Cluster | undefined;
let joined: ManagedProcess | undefined;
afterAll(async () => {
  await joined?.stop();
  await cluster?.stop({ remove: true });
});

/** The leader's endpoint and id, from `endpoint status` (endpoint, id in hex, ..., is leader, ...). */
async function leaderOf(endpoints: string[]): Promise<{ endpoint: string; id: string }> {
  for (let i = 0; i < 100; i++) {
    const r = await runEtcdctl(["endpoint", "status"], { endpoints });
    const row = r.stdout
      .trim()
      .split("\n")
      .map((l) => l.split(", "))
      .find((x) => x[4] === "true");
    if (row) return { endpoint: row[0]!, id: row[1]! };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("no leader");
}

describe("membership changes under load", () => {
  it("add a learner, start it, promote it, remove the old leader: no acknowledged write lost, equal HashKV", async () => {
    cluster = await startCluster({ kind: "registry-node", members: 3 });
    const c = cluster;
    const clients = c.endpoints.map((e) => new etcdserverpb.KVClient(e, credentials.createInsecure()));
    const acked: string[] = [];
    let stop = false;
    let n = 0;
    const writer = (async () => {
      const deadline = Date.now() + 60_000;
      while (!stop && Date.now() < deadline) {
        const key = `mb/${n++}`;
        const client = clients[n % clients.length]!;
        const ok = await new Promise<boolean>((resolve) =>
          client.put(
            etcdserverpb.PutRequest.create({ key: Buffer.from(key), value: Buffer.from("v") }),
            new Metadata(),
            { deadline: Date.now() + 3000 },
            (err) => resolve(err === null),
          ),
        );
        if (ok) acked.push(key);
      }
    })();
    await new Promise((r) => setTimeout(r, 500));

    const clientPort = await freePort();
    const peerUrl = `http://127.0.0.1:${await freePort()}`;
    const add = await runEtcdctl(["member", "add", "m4", `--peer-urls=${peerUrl}`, "--learner"], {
      endpoints: c.endpoints,
    });
    expect(add.code, add.stderr).toBe(0);
    const m4Id = /Member\s+([0-9a-f]+) added/.exec(add.stdout)![1]!;
    const initialCluster = [...c.members.map((m) => `${m.name}=${m.peerUrl}`), `m4=${peerUrl}`].join(",");
    joined = ManagedProcess.start({
      name: "m4",
      command: process.execPath,
      args: [
        registryNodeBin,
        "--name=m4",
        `--data-dir=${join(c.dataDir, "..", "m4.data")}`,
        `--listen-client-urls=http://127.0.0.1:${clientPort}`,
        `--advertise-client-urls=http://127.0.0.1:${clientPort}`,
        `--listen-peer-urls=${peerUrl}`,
        `--initial-advertise-peer-urls=${peerUrl}`,
        `--initial-cluster=${initialCluster}`,
        "--initial-cluster-state=existing",
      ],
      logPath: join(c.dataDir, "..", "logs", "m4.log"),
    });
    const m4 = `127.0.0.1:${clientPort}`;
    // A learner serves serializable reads; wait until it holds the first write.
    await waitFor(
      async () =>
        (await runEtcdctl(["get", "mb/0", "--consistency=s", "--print-value-only"], { endpoints: [m4] }))
          .stdout === "v\n",
      { timeoutMs: 30_000, describe: () => `learner m4 catching up: ${joined!.logTail(10)}` },
    );
    expect((await runEtcdctl(["get", "mb/0"], { endpoints: [m4] })).stderr).toContain(
      "etcdserver: rpc not supported for learner",
    );

    // Sent to a member that is not the leader: it asks the leader, as etcd does.
    const { endpoint: leaderNow } = await leaderOf(c.endpoints);
    const follower = c.endpoints.find((e) => e !== leaderNow)!;
    await waitFor(
      async () => (await runEtcdctl(["member", "promote", m4Id], { endpoints: [follower] })).code === 0,
      {
        timeoutMs: 30_000,
        describe: () => "promotion",
      },
    );
    expect((await runEtcdctl(["member", "list"], { endpoints: [m4] })).stdout).toContain(
      `${m4Id}, started, m4, ${peerUrl}, http://127.0.0.1:${clientPort}, false`,
    );

    const old = await leaderOf(c.endpoints);
    const others = [...c.endpoints.filter((e) => e !== old.endpoint), m4];
    expect((await runEtcdctl(["member", "remove", old.id], { endpoints: others })).code).toBe(0);
    await c.members.find((m) => m.endpoint === old.endpoint)!.proc!.exited;

    await new Promise((r) => setTimeout(r, 1500));
    stop = true;
    await writer;
    for (const cl of clients) cl.close();
    expect(acked.length).toBeGreaterThan(10);

    const got = await runEtcdctl(["get", "mb/", "--prefix", "--keys-only", "-w", "json"], {
      endpoints: others,
    });
    const keys = new Set(
      ((JSON.parse(got.stdout) as { kvs?: { key: string }[] }).kvs ?? []).map((kv) =>
        Buffer.from(kv.key, "base64").toString(),
      ),
    );
    expect(acked.filter((k) => !keys.has(k))).toEqual([]);
    const hashes = new Set<string>();
    for (const e of others) {
      await runEtcdctl(["get", "mb/0"], { endpoints: [e] }); // a linearizable read: caught up
      hashes.add(
        (await runEtcdctl(["endpoint", "hashkv"], { endpoints: [e] })).stdout.split(", ")[1]!.trim(),
      );
    }
    expect(hashes.size).toBe(1);
  });
});
