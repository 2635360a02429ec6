// Sets a member up on Raft: its WAL and snapshot directories under the data directory
// (etcd's layout: <data-dir>/member/wal, <data-dir>/member/snap), the in-memory Raft log
// rebuilt from them, the peer transport on the peer URLs, and the driver.

import { join } from "node:path";
import type { Config } from "../config/config.js";
import { defaultFileSystem } from "../io/index.js";
import { MemoryStorage } from "../raft/storage.js";
import type { Snapshot } from "../raft/types.js";
import { loadIntoStorage, RaftDiskStorage, restoreRaftLog } from "../wal/raft-log-store.js";
import { raftIdOf } from "./ids.js";
import type { EtcdServer, Logger } from "./node.js";
import { RaftDriver } from "./raft-driver.js";
import { Transport } from "./transport.js";

export { raftIdOf };

function encodeMeta(member: bigint, cluster: bigint): Uint8Array {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(member, 0);
  b.writeBigUInt64BE(cluster, 8);
  return b;
}

export async function startRaft(config: Config, server: EtcdServer, log: Logger): Promise<RaftDriver> {
  if (config.initialClusterState === "existing") {
    throw new Error("--initial-cluster-state=existing (joining a running cluster) is not supported yet");
  }
  const fs = defaultFileSystem();
  const memberDir = join(config.dataDir, "member");
  fs.mkdir(memberDir, { recursive: true });
  const paths = {
    walDir: config.walDir !== "" ? config.walDir : join(memberDir, "wal"),
    snapDir: join(memberDir, "snap"),
  };
  fs.mkdir(paths.snapDir, { recursive: true });

  const members = [...server.members.keys()];
  const restored = restoreRaftLog(fs, paths, encodeMeta(server.memberId, server.clusterId));
  const meta = Buffer.from(restored.metadata);
  if (meta.readBigUInt64BE(0) !== server.memberId || meta.readBigUInt64BE(8) !== server.clusterId) {
    throw new Error(
      `the data directory belongs to member ${meta.readBigUInt64BE(0).toString(16)} of cluster ${meta.readBigUInt64BE(8).toString(16)}, not ${server.memberId.toString(16)} of ${server.clusterId.toString(16)}`,
    );
  }
  const disk = RaftDiskStorage.from(restored);
  const storage = new MemoryStorage();
  if (restored.created) {
    // A new cluster starts from a snapshot at index 1 naming every initial member a voter,
    // so all members begin with the same configuration and no bootstrap entries.
    const boot: Snapshot = {
      data: new Uint8Array(0),
      metadata: {
        index: 1,
        term: 1,
        confState: { voters: members.map(raftIdOf).sort((a, b) => a - b), learners: [] },
      },
    };
    await disk.saveSnap(boot);
    storage.applySnapshot(boot);
    // As etcd's bootstrap, members start as followers in term 1, so the first leader is
    // elected in term 2, as etcd reports it.
    const hs = { term: 1, vote: 0, commit: 1 };
    await disk.save(hs, []);
    storage.setHardState(hs);
  } else {
    loadIntoStorage(storage, restored);
    if (restored.repair) log.warn({ repair: restored.repair }, "repaired a torn WAL tail");
  }
  // The backend remembers the last entry it applied (meta/consistent_index, committed with
  // the data it produced): the log replays only what came after it.
  const applied = Math.max(storage.snapshot().metadata.index, server.kv.consistentIndex);
  if (applied > storage.lastIndex()) {
    throw new Error(
      `the backend has applied entry ${applied} but the WAL ends at ${storage.lastIndex()}: the WAL and the data file do not belong together`,
    );
  }

  const raftToMember = new Map(members.map((m) => [raftIdOf(m), m]));
  const id = raftIdOf(server.memberId);
  let driver: RaftDriver | undefined;
  const transport = new Transport({
    localId: id,
    clusterId: server.clusterId,
    onMessage: (m) => driver?.step(m),
    onUnreachable: (peer) => driver?.reportUnreachable(peer),
    log,
  });
  for (const m of members) transport.addPeer(raftIdOf(m), server.members.get(m)!.peerURLs);
  const peerUrl = config.listenPeerUrls[0]!;
  const host = peerUrl.hostname.replace(/^\[|\]$/g, "");
  await transport.listen(host === "localhost" ? "127.0.0.1" : host, Number(peerUrl.port || 2380));

  driver = new RaftDriver({
    id,
    storage,
    disk,
    transport,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    electionTimeoutMs: config.electionTimeoutMs,
    applied,
    apply: (e) => server.applyEntry(e.index, e.data),
    onConfChange: () => {},
    onLeaderChange: (lead, isLeader, term) =>
      server.onLeaderChange(raftToMember.get(lead) ?? 0n, isLeader, term),
    log,
    seed: Number(server.memberId & 0xffffffffn),
  });
  server.driver = driver;
  server.transport = transport;
  server.raftTerm = BigInt(storage.initialState().hardState.term);
  driver.start();
  const stop = driver.stop.bind(driver);
  driver.stop = async () => {
    await stop();
    await transport.close();
    await disk.close();
  };
  return driver;
}
