// Sets a member up on Raft: its WAL and snapshot directories under the data directory
// (etcd's layout: <data-dir>/member/wal, <data-dir>/member/snap), the in-memory Raft log
// rebuilt from them, the peer transport on the peer URLs, and the driver.

import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { etcdserverpb } from "@regmesh/proto";
import type { Config } from "../config/config.js";
import { defaultFileSystem } from "../io/index.js";
import { MemoryStorage, SnapshotTemporarilyUnavailableError } from "../raft/storage.js";
import type { Message, Snapshot } from "../raft/types.js";
import {
  loadIntoStorage,
  RaftDiskStorage,
  type RestoredRaftLog,
  restoreRaftLog,
} from "../wal/raft-log-store.js";
import { Wal } from "../wal/wal.js";
import { raftIdOf } from "./ids.js";
import { type EtcdServer, type Identity, identityFromConfig, type Logger } from "./node.js";
import { RaftDriver } from "./raft-driver.js";
import { callUrl, type SnapshotFile, Transport } from "./transport.js";

function encodeMeta(member: bigint, cluster: bigint): Uint8Array {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(member, 0);
  b.writeBigUInt64BE(cluster, 8);
  return b;
}

/**
 * Raft's storage on the leader side: when a follower needs a snapshot (it joined, or fell
 * behind), the last stored one (the bootstrap at index 1) would not do: its configuration
 * may not even hold the follower, which Raft then rightly refuses. So a fresh one is made
 * on demand: the backend file, committed, at the applied index with the current
 * configuration. Raft asks again while it is being made (SnapshotTemporarilyUnavailable).
 */
export class ServingStorage extends MemoryStorage {
  private fresh: Snapshot | undefined;
  private preparing = false;
  make: (() => Promise<Snapshot>) | undefined;

  /** The last snapshot stored (for start-up), without making a fresh one. */
  stored(): Snapshot {
    return super.snapshot();
  }

  override snapshot(): Snapshot {
    const base = super.snapshot();
    const fresh = this.fresh;
    this.fresh = undefined; // one use: the next follower gets a newer one
    if (fresh !== undefined && fresh.metadata.index >= base.metadata.index) return fresh;
    if (this.make !== undefined && !this.preparing) {
      this.preparing = true;
      this.make().then(
        (s) => {
          this.fresh = s;
          this.preparing = false;
        },
        () => {
          this.preparing = false;
        },
      );
    }
    throw new SnapshotTemporarilyUnavailableError("making a snapshot of the backend");
  }
}

/**
 * The member's snapshot data files in its snap directory: backend copies made to send to a
 * follower (each used by one transfer, removed when it ends) and data received from the
 * leader (kept until installed). Leftovers of a crash are removed at start.
 */
export class SnapshotFiles {
  private readonly outgoing = new Map<number, { path: string; bytes: number; inUse: boolean }>();
  private readonly incoming = new Map<number, string>();
  private made = 0;

  constructor(readonly dir: string) {
    for (const name of readdirSync(dir)) {
      if (/^raft-snapshot-.*\.tmp$|^recv-.*\.snap\.tmp$|^[0-9a-f]{16}\.snap\.db$/.test(name))
        rmSync(join(dir, name), { force: true });
    }
  }

  /** A path for the next backend copy at `index`. */
  outgoingPath(index: number): string {
    return join(this.dir, `raft-snapshot-${process.pid}-${index}-${++this.made}.tmp`);
  }

  /** A copy ready to send; copies made earlier and never sent are dropped. */
  addOutgoing(index: number, path: string, bytes: number): void {
    for (const [i, f] of this.outgoing) {
      if (!f.inUse) {
        rmSync(f.path, { force: true });
        this.outgoing.delete(i);
      }
    }
    this.outgoing.set(index, { path, bytes, inUse: false });
  }

  /** The copy for a MsgSnap about to be sent, removed once the transfer ends. */
  forMessage(m: Message): SnapshotFile | undefined {
    const index = m.snapshot?.metadata.index ?? 0;
    const f = this.outgoing.get(index);
    if (f === undefined || f.inUse) return undefined;
    f.inUse = true;
    return {
      path: f.path,
      bytes: f.bytes,
      release: () => {
        rmSync(f.path, { force: true });
        if (this.outgoing.get(index) === f) this.outgoing.delete(index);
      },
    };
  }

  /** Data received for the snapshot at `index`; an older one not installed yet is dropped. */
  addIncoming(index: number, path: string): void {
    for (const [i, p] of this.incoming) {
      if (p !== path) rmSync(p, { force: true });
      this.incoming.delete(i);
    }
    this.incoming.set(index, path);
  }

  takeIncoming(index: number): string | undefined {
    const p = this.incoming.get(index);
    this.incoming.delete(index);
    return p;
  }

  clear(): void {
    for (const f of this.outgoing.values()) rmSync(f.path, { force: true });
    for (const p of this.incoming.values()) rmSync(p, { force: true });
    this.outgoing.clear();
    this.incoming.clear();
  }
}

export type PreparedRaft = { identity: Identity; restored: RestoredRaftLog; joining: boolean };

/**
 * Finds out who this member is before anything starts: from its WAL when it has one; for
 * a new cluster, from its flags; when joining a running cluster (--initial-cluster-state
 * existing), from the members the cluster already has (added with MemberAdd), asked of the
 * peers named in --initial-cluster.
 */
export async function prepareRaft(config: Config): Promise<PreparedRaft> {
  const fs = defaultFileSystem();
  const paths = raftPaths(config);
  fs.mkdir(paths.snapDir, { recursive: true });
  if (Wal.exists(fs, paths.walDir)) {
    const restored = restoreRaftLog(fs, paths);
    const meta = Buffer.from(restored.metadata);
    const identity = {
      ...identityFromConfig(config),
      memberId: meta.readBigUInt64BE(0),
      clusterId: meta.readBigUInt64BE(8),
    };
    return { identity, restored, joining: false };
  }
  const joining = config.initialClusterState === "existing";
  const identity = joining ? await fetchIdentity(config) : identityFromConfig(config);
  const restored = restoreRaftLog(fs, paths, encodeMeta(identity.memberId, identity.clusterId));
  return { identity, restored, joining };
}

function raftPaths(config: Config) {
  const memberDir = join(config.dataDir, "member");
  return {
    walDir: config.walDir !== "" ? config.walDir : join(memberDir, "wal"),
    snapDir: join(memberDir, "snap"),
  };
}

type MembersReply = {
  clusterId: string;
  members: { id: string; name: string; peerURLs: string[]; clientURLs: string[]; isLearner: boolean }[];
};

export function encodeMembersReply(clusterIdValue: bigint, members: Iterable<etcdserverpb.Member>): Buffer {
  const reply: MembersReply = {
    clusterId: clusterIdValue.toString(16),
    members: [...members].map((m) => ({
      id: m.ID.toString(16),
      name: m.name,
      peerURLs: m.peerURLs,
      clientURLs: m.clientURLs,
      isLearner: m.isLearner,
    })),
  };
  return Buffer.from(JSON.stringify(reply));
}

async function fetchIdentity(config: Config): Promise<Identity> {
  const own = config.initialAdvertisePeerUrls
    .map((u) => u.origin)
    .sort()
    .join(",");
  const errs: string[] = [];
  for (const [name, urls] of config.initialCluster) {
    if (name === config.name) continue;
    for (const url of urls) {
      try {
        const reply = JSON.parse(
          (await callUrl(url.origin, "/members", Buffer.alloc(0), 3000)).toString(),
        ) as MembersReply;
        const members = reply.members.map((m) => ({
          ID: BigInt(`0x${m.id}`),
          name: m.name,
          peerURLs: m.peerURLs,
          clientURLs: m.clientURLs,
          isLearner: m.isLearner,
        }));
        const me = members.find((m) => [...m.peerURLs].sort().join(",") === own);
        if (me === undefined) {
          throw new Error(
            `no member of the running cluster has peer URLs ${own}: add this member first (etcdctl member add ${config.name} --peer-urls=${own})`,
          );
        }
        return { memberId: me.ID, clusterId: BigInt(`0x${reply.clusterId}`), members };
      } catch (err) {
        errs.push(`${url.origin}: ${(err as Error).message}`);
      }
    }
  }
  throw new Error(
    `could not get the cluster's members from any peer in --initial-cluster (${errs.join("; ")})`,
  );
}

export async function startRaft(
  config: Config,
  server: EtcdServer,
  log: Logger,
  prepared: PreparedRaft,
): Promise<RaftDriver> {
  const { restored, joining } = prepared;
  const members = [...server.members.keys()];
  const disk = RaftDiskStorage.from(restored);
  const storage = new ServingStorage();
  if (restored.created && !joining) {
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
  const applied = Math.max(storage.stored().metadata.index, server.kv.consistentIndex);
  if (applied > storage.lastIndex()) {
    throw new Error(
      `the backend has applied entry ${applied} but the WAL ends at ${storage.lastIndex()}: the WAL and the data file do not belong together`,
    );
  }
  // A hard state that only advances the commit index is written without fsync (as etcd), while
  // the backend's consistent index is fsynced with the data: after a crash that lost unsynced
  // writes the WAL's commit can be behind what was applied. Whatever was applied was committed
  // by a quorum first, and its entries are in the WAL (checked above), so the commit index is
  // raised to it; otherwise raft refuses to start ("applied outside [1, commit]").
  const { hardState } = storage.initialState();
  if (hardState.commit < applied) {
    log.warn(
      { walCommit: hardState.commit, applied },
      "the WAL's commit index is behind the backend's (unsynced hard state lost in a crash); raised",
    );
    storage.setHardState({ ...hardState, commit: applied });
  }

  const raftToMember = (raftId: number) =>
    [...server.members.keys()].find((m) => raftIdOf(m) === raftId) ?? 0n;
  const id = raftIdOf(server.memberId);
  let driver: RaftDriver | undefined;
  const snapDir = raftPaths(config).snapDir;
  const files = new SnapshotFiles(snapDir);
  const transport = new Transport({
    localId: id,
    clusterId: server.clusterId,
    onMessage: (m) => driver?.step(m),
    snapshotDir: snapDir,
    snapshotData: (m) => files.forMessage(m),
    onSnapshot: (m, path) => {
      files.addIncoming(m.snapshot!.metadata.index, path);
      driver?.step(m);
    },
    onSnapshotSent: (peer, ok) => driver?.reportSnapshot(peer, ok),
    onUnreachable: (peer) => driver?.reportUnreachable(peer),
    isRemoved: (peer) => server.isRemovedRaftId(peer),
    onRemoved: () => {
      log.error({}, "a peer says this member was removed from the cluster; stopping");
      server.onRemoved?.();
    },
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
    onConfChange: (cc, index) => server.applyConfChange(cc, index),
    installSnapshot: (snap) => {
      const path = files.takeIncoming(snap.metadata.index);
      if (path !== undefined) return server.installSnapshot({ path });
      if (snap.data.length > 0) return server.installSnapshot(snap.data);
      throw new Error(`no data was received for the snapshot at index ${snap.metadata.index}`);
    },
    snapshotCount: config.snapshotCount,
    // etcd keeps 5,000 entries behind a snapshot; a small --snapshot-count keeps fewer.
    catchUpEntries: Math.min(5000, config.snapshotCount),
    flushStateMachine: () => server.backend.commit(),
    onLeaderChange: (lead, isLeader, term) =>
      server.onLeaderChange(lead === 0 ? 0n : raftToMember(lead), isLeader, term),
    log,
    seed: Number(server.memberId & 0xffffffffn),
  });
  server.driver = driver;
  const d = driver;
  // A follower that needs a snapshot gets a copy of the backend file, committed, at the
  // applied index; the transport streams it from that file (see transport.ts).
  storage.make = async () => {
    const index = d.applied;
    const term = storage.term(index);
    const confState = d.node.raft.trk.confState();
    await server.backend.commit();
    const path = files.outgoingPath(index);
    try {
      const { bytes } = await server.storage.snapshotTo!(path);
      files.addOutgoing(index, path, bytes);
    } catch (err) {
      rmSync(path, { force: true });
      throw err;
    }
    return { data: new Uint8Array(0), metadata: { index, term, confState } };
  };
  server.transport = transport;
  server.raftTerm = BigInt(storage.initialState().hardState.term);
  driver.start();
  const stop = driver.stop.bind(driver);
  driver.stop = async () => {
    await stop();
    await transport.close();
    await disk.close();
    files.clear();
  };
  return driver;
}
