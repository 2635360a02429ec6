// etcd refuses proposals with "etcdserver: too many requests" (ResourceExhausted) while the
// applied index trails the committed index by more than 5000 entries
// (maxGapBetweenApplyAndCommitIndex, etcdserver/v3_server.go). The gap is driven here the
// way it happens in practice: a member restarts with a backend that has applied nothing,
// and its WAL holds more than 5000 committed entries, which it replays a slice per turn of
// the event loop while clients keep proposing.

import { etcdserverpb } from "@regmesh/proto";
import { afterEach, describe, expect, it } from "vitest";
import { configFromFlags, parseFlags } from "../../src/config/index.js";
import { MemFileSystem } from "../../src/io/index.js";
import { MemStorage } from "../../src/mvcc/index.js";
import { MemoryStorage } from "../../src/raft/storage.js";
import type { Entry, Snapshot } from "../../src/raft/types.js";
import { Code, EtcdError } from "../../src/server/errors.js";
import { raftIdOf } from "../../src/server/ids.js";
import { EtcdServer, type Identity, serverLimits } from "../../src/server/node.js";
import { RaftDriver } from "../../src/server/raft-driver.js";
import type { Transport } from "../../src/server/transport.js";
import { loadIntoStorage, RaftDiskStorage, restoreRaftLog } from "../../src/wal/raft-log-store.js";

const quiet = { info() {}, warn() {}, error() {} };
const identity: Identity = {
  memberId: 0x1234n,
  clusterId: 0x99n,
  members: [{ ID: 0x1234n, name: "m1", peerURLs: ["http://127.0.0.1:1"], clientURLs: [], isLearner: false }],
};
const paths = { walDir: "/d/member/wal", snapDir: "/d/member/snap" };
/** A transport for a one-member cluster: there is nobody to send to. */
const noPeers = { send() {} } as unknown as Transport;

const put = (k: string) =>
  ({
    kind: "put",
    req: etcdserverpb.PutRequest.create({ key: Buffer.from(k), value: Buffer.from("v") }),
  }) as const;

type Member = { server: EtcdServer; driver: RaftDriver };
const running: Member[] = [];

afterEach(async () => {
  for (const m of running.splice(0)) {
    await m.driver.stop();
    await m.server.stop();
  }
});

/**
 * Starts a one-member cluster on `fs` as startRaft does (a boot snapshot at index 1 the
 * first time, the WAL after that), with `apply` wrapping the server's apply.
 */
async function startMember(fs: MemFileSystem, onApply: (e: Entry) => void = () => {}): Promise<Member> {
  const config = configFromFlags(parseFlags(["--election-timeout", "100", "--heartbeat-interval", "20"]));
  const server = new EtcdServer(config, new MemStorage(), quiet, undefined, identity);
  server.restore();
  fs.mkdir(paths.snapDir, { recursive: true });
  const restored = restoreRaftLog(fs, paths, new Uint8Array(16));
  const disk = RaftDiskStorage.from(restored);
  const storage = new MemoryStorage();
  if (restored.created) {
    const boot: Snapshot = {
      data: new Uint8Array(0),
      metadata: { index: 1, term: 1, confState: { voters: [raftIdOf(identity.memberId)], learners: [] } },
    };
    await disk.saveSnap(boot);
    storage.applySnapshot(boot);
    await disk.save({ term: 1, vote: 0, commit: 1 }, []);
    storage.setHardState({ term: 1, vote: 0, commit: 1 });
  } else {
    loadIntoStorage(storage, restored);
  }
  const driver = new RaftDriver({
    id: raftIdOf(identity.memberId),
    storage,
    disk,
    transport: noPeers,
    heartbeatIntervalMs: 20,
    electionTimeoutMs: 100,
    applied: Math.max(1, server.kv.consistentIndex),
    apply: (e) => {
      onApply(e);
      server.applyEntry(e.index, e.data);
    },
    onConfChange: (cc, index) => server.applyConfChange(cc, index),
    onLeaderChange: (lead, isLeader, term) =>
      server.onLeaderChange(lead === 0 ? 0n : identity.memberId, isLeader, term),
    snapshotCount: 100_000,
    catchUpEntries: 5000,
    flushStateMachine: () => server.backend.commit(),
    installSnapshot: (snap) => server.installSnapshot(snap.data),
    log: quiet,
    seed: 1,
  });
  server.driver = driver;
  driver.start();
  server.start();
  const m = { server, driver };
  running.push(m);
  return m;
}

async function waitFor(cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("too many requests (etcd's maxGapBetweenApplyAndCommitIndex)", () => {
  it("is etcd's error: ResourceExhausted, 'etcdserver: too many requests', a gap of 5000", () => {
    expect(serverLimits.maxGapBetweenApplyAndCommitIndex).toBe(5000);
  });

  it("refuses proposals while the applied index trails the committed one by more than 5000, then accepts", async () => {
    const fs = new MemFileSystem();
    const total = serverLimits.maxGapBetweenApplyAndCommitIndex + 1500;
    {
      const first = await startMember(fs);
      await waitFor(() => first.server.leaderId !== 0n);
      // In batches, each well within the request timeout on a busy machine.
      for (let i = 0; i < total; i += 250) {
        const n = Math.min(250, total - i);
        await Promise.all(Array.from({ length: n }, (_, j) => first.server.propose(put(`k${i + j}`))));
      }
      expect(first.server.rev).toBe(total + 1);
      await first.driver.stop();
      running.splice(0);
    }

    // Restart over the same WAL with an empty backend: every entry is committed and must
    // be applied again, a slice per turn of the event loop.
    const gaps: number[] = [];
    const outcomes: Promise<unknown>[] = [];
    let member: Member | undefined;
    let applied = 0;
    member = await startMember(fs, () => {
      applied += 1;
      if (applied === 1 && member !== undefined) {
        const { server, driver } = member;
        // A client's write arriving while the replay is under way.
        setImmediate(() => {
          gaps.push(driver.committed - driver.applied);
          outcomes.push(
            server.propose(put("during-replay")).then(
              () => "accepted",
              (err: unknown) => err,
            ),
          );
        });
      }
    });
    const { server, driver } = member;
    await waitFor(() => driver.applied >= total + 1 && outcomes.length === 1);
    expect(gaps[0]).toBeGreaterThan(serverLimits.maxGapBetweenApplyAndCommitIndex);
    const refused = await outcomes[0];
    expect(refused).toBeInstanceOf(EtcdError);
    expect((refused as EtcdError).message).toBe("etcdserver: too many requests");
    expect((refused as EtcdError).grpcCode).toBe(Code.ResourceExhausted);

    // Caught up: the same write is accepted and applied after everything replayed.
    await waitFor(() => server.leaderId !== 0n && driver.committed === driver.applied);
    await server.propose(put("after-replay"));
    expect(server.rev).toBe(total + 2);
    const r = server.applier.range(etcdserverpb.RangeRequest.create({ key: Buffer.from("after-replay") }));
    expect(r.kvs[0]!.modRevision).toBe(BigInt(total + 2));
    expect(
      server.applier.range(etcdserverpb.RangeRequest.create({ key: Buffer.from("during-replay") })).kvs,
    ).toEqual([]);
  });
});
