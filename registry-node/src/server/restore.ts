// `registry-node snapshot restore <file>`: a new member's data directory from a snapshot
// file, ours or one saved from a real etcd with `etcdctl snapshot save`, as
// `etcdctl snapshot restore` makes an etcd data directory. The file is checked against its
// SHA-256 trailer (etcd's: present when the size is 32 bytes past a multiple of 512),
// written as member/snap/db, and the Raft log starts from a snapshot at the backend's
// consistent index, so the log replays nothing the backend already holds.

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { defaultFileSystem } from "../io/index.js";
import { BufferedBackend, buckets } from "../mvcc/backend.js";
import { BboltStorage } from "../mvcc/bbolt-storage.js";
import { RaftDiskStorage, restoreRaftLog } from "../wal/raft-log-store.js";
import { clusterId, memberId, raftIdOf } from "./ids.js";

export type RestoreOptions = {
  file: string;
  dataDir: string;
  name: string;
  /** name -> peer URLs (origins). */
  initialCluster: Map<string, string[]>;
  initialClusterToken: string;
  skipHashCheck: boolean;
};

export async function restoreSnapshot(
  o: RestoreOptions,
): Promise<{ revisionIndex: number; members: number }> {
  if (existsSync(join(o.dataDir, "member"))) throw new Error(`data-dir "${o.dataDir}" exists`);
  if (!o.initialCluster.has(o.name)) {
    throw new Error(`couldn't find local name "${o.name}" in the initial cluster configuration`);
  }
  const raw = readFileSync(o.file);
  const hasHash = raw.length % 512 === 32;
  let db = raw;
  if (hasHash) {
    db = raw.subarray(0, raw.length - 32);
    const want = raw.subarray(raw.length - 32);
    const got = createHash("sha256").update(db).digest();
    if (!got.equals(want))
      throw new Error(`expected sha256 ${want.toString("hex")}, got ${got.toString("hex")}`);
  } else if (!o.skipHashCheck) {
    throw new Error("snapshot missing hash but --skip-hash-check=false");
  }
  const snapDir = join(o.dataDir, "member", "snap");
  mkdirSync(snapDir, { recursive: true });
  const dbPath = join(snapDir, "db");
  writeFileSync(dbPath, db);

  // The backend's consistent index: where the source cluster's log had got to.
  const storage = await BboltStorage.open(dbPath);
  const backend = new BufferedBackend(storage);
  const ci = backend.get(buckets.meta, Buffer.from("consistent_index"));
  const consistentIndex = ci === undefined ? 0 : Number(Buffer.from(ci).readBigUInt64BE(0));
  await storage.close();

  const ids = [...o.initialCluster.entries()].map(([, urls]) => memberId(urls, o.initialClusterToken));
  const me = memberId(o.initialCluster.get(o.name)!, o.initialClusterToken);
  const meta = Buffer.alloc(16);
  meta.writeBigUInt64BE(me, 0);
  meta.writeBigUInt64BE(clusterId(ids), 8);
  const fs = defaultFileSystem();
  const log = restoreRaftLog(fs, { walDir: join(o.dataDir, "member", "wal"), snapDir }, meta);
  const disk = RaftDiskStorage.from(log);
  const index = Math.max(1, consistentIndex);
  await disk.saveSnap({
    data: new Uint8Array(0),
    metadata: {
      index,
      term: 1,
      confState: { voters: ids.map(raftIdOf).sort((a, b) => a - b), learners: [] },
    },
  });
  await disk.save({ term: 1, vote: 0, commit: index }, []);
  await disk.close();
  return { revisionIndex: index, members: ids.length };
}
