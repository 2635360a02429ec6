// One registry-node process crashes under write load, losing every write it had not
// fsynced (the fault file layer, REGMESH_FAULT_FS=1, fired by SIGUSR2, then SIGKILL). The
// backend (member/snap/db) commits in batches (every 100 ms by default, as etcd's), so at a
// crash the last acknowledged writes exist only in the WAL: an acknowledged write is durable
// because the WAL is fsynced before the answer, and on restart the WAL entries after the
// backend's meta/consistent_index are applied again. Here --backend-batch-interval is an
// hour, so no batch is committed during the run and the outcome does not depend on where
// the crash falls between two commits. Checked: the crashed backend file is behind the
// acknowledged writes, and after the restart none of them is missing.

import { join } from "node:path";
import { credentials, Metadata } from "@grpc/grpc-js";
import { etcdserverpb } from "@regmesh/proto";
import { type Cluster, startCluster } from "@regmesh/testkit";
import { afterAll, describe, expect, it } from "vitest";
import { buckets } from "../../src/mvcc/backend.js";
import { DB } from "../../src/storage/index.js";

let cluster: Cluster | undefined;
afterAll(async () => {
  await cluster?.stop({ remove: true });
});

/** Keys in the backend file's `key` bucket and its meta/consistent_index, read offline. */
async function readBackend(path: string): Promise<{ keys: number; consistentIndex: bigint }> {
  const db = await DB.open(path, { readOnly: true });
  try {
    const tx = db.begin();
    try {
      let keys = 0;
      const c = tx.bucket(Buffer.from(buckets.key))?.cursor();
      if (c) for (let e = c.first(); e !== null; e = c.next()) keys += 1;
      const ci = tx.bucket(Buffer.from(buckets.meta))?.get(Buffer.from("consistent_index"));
      return { keys, consistentIndex: ci ? Buffer.from(ci).readBigUInt64BE(0) : 0n };
    } finally {
      tx.rollback();
    }
  } finally {
    await db.close();
  }
}

describe("durability: one registry-node process", () => {
  it("an acknowledged write survives a crash that loses unsynced data (WAL replays into the batched backend)", async () => {
    cluster = await startCluster({
      kind: "registry-node",
      members: 1,
      env: { REGMESH_FAULT_FS: "1" },
      extraArgs: ["--backend-batch-interval=1h"],
    });
    const member = cluster.members[0]!;
    const kv = new etcdserverpb.KVClient(member.endpoint, credentials.createInsecure());
    const put = (key: string): Promise<boolean> =>
      new Promise((resolve) => {
        kv.put(
          etcdserverpb.PutRequest.create({ key: Buffer.from(key), value: Buffer.from("v") }),
          new Metadata(),
          { deadline: Date.now() + 2000 },
          (err) => resolve(err === null),
        );
      });
    const acked: string[] = [];
    const ackTimes: number[] = [];
    let crashed = false;
    let n = 0;
    // Writers run until the crash (their last calls fail), so writes are in flight at the crash.
    const writers = Array.from({ length: 8 }, async () => {
      while (!crashed && n < 50_000) {
        const key = `dur/${String(n++).padStart(6, "0")}`;
        if (await put(key)) {
          acked.push(key);
          ackTimes.push(Date.now());
        }
      }
    });
    await new Promise((r) => setTimeout(r, 1500));
    const crashAt = Date.now();
    member.proc!.killNow("SIGUSR2"); // drop unsynced writes, then SIGKILL (io/index.ts)
    const status = await member.proc!.exited;
    crashed = true;
    expect(status.signal).toBe("SIGKILL");
    await Promise.all(writers);
    kv.close();
    expect(acked.length).toBeGreaterThan(20);

    // The backend on disk (its last durable batch) is behind what was acknowledged.
    const backend = await readBackend(join(member.dataDir, "member", "snap", "db"));
    console.log(
      `durability: ${acked.length} writes acknowledged; the crashed backend held ${backend.keys} keys at consistent index ${backend.consistentIndex}; first ack ${ackTimes[0]! - crashAt} ms, last ack ${ackTimes[ackTimes.length - 1]! - crashAt} ms from the crash`,
    );
    expect(backend.keys).toBeLessThan(acked.length);

    member.start();
    await member.waitHealthy();
    const kv2 = new etcdserverpb.KVClient(member.endpoint, credentials.createInsecure());
    try {
      const got = await new Promise<etcdserverpb.RangeResponse>((resolve, reject) =>
        kv2.range(
          etcdserverpb.RangeRequest.create({
            key: Buffer.from("dur/"),
            rangeEnd: Buffer.from("dur0"),
            keysOnly: true,
          }),
          (err, r) => (err ? reject(err) : resolve(r!)),
        ),
      );
      const keys = new Set(got.kvs.map((k) => Buffer.from(k.key).toString()));
      const missing = acked.filter((k) => !keys.has(k));
      expect(missing).toEqual([]);
    } finally {
      kv2.close();
    }
  });
});
