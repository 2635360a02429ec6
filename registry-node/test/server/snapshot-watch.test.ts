// A member that installs a snapshot from the leader replaces its backend and rebuilds its
// state machine; the watch streams open on it must go on over the new state (etcd's
// watchableStore.Restore): every event after a watcher's revision arrives, or, when the
// new store is compacted past it, the watch is canceled with compact_revision.
// In process: two servers without a log ("leader" and "follower", each on a bbolt file),
// the leader's file installed on the follower as Raft would hand it over.

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { etcdserverpb } from "@regmesh/proto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { BidiStream } from "../../src/api/grpc.js";
import { serveWatch } from "../../src/api/watch.js";
import { configFromFlags, parseFlags } from "../../src/config/index.js";
import { BboltStorage } from "../../src/mvcc/index.js";
import { EtcdServer } from "../../src/server/node.js";

type WatchResponse = etcdserverpb.WatchResponse;
const quiet = { info() {}, warn() {}, error() {} };

let dir = "";
const servers: EtcdServer[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "regmesh-snapshot-watch-"));
});
afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function server(name: string): Promise<EtcdServer> {
  const s = new EtcdServer(configFromFlags(parseFlags([])), await BboltStorage.open(join(dir, name)), quiet);
  s.restore();
  servers.push(s);
  return s;
}

const put = (s: EtcdServer, k: string, v: string) =>
  s.propose({
    kind: "put",
    req: etcdserverpb.PutRequest.create({ key: Buffer.from(k), value: Buffer.from(v) }),
  });

/** The leader's backend file, as the follower receives it in a Raft snapshot. */
async function snapshotOf(s: EtcdServer): Promise<Uint8Array> {
  await s.backend.commit();
  const path = join(dir, `snap-${Date.now()}`);
  await s.storage.snapshotTo!(path);
  return new Uint8Array(readFileSync(path));
}

function watchStream(s: EtcdServer, create: Partial<etcdserverpb.WatchCreateRequest>) {
  const got: WatchResponse[] = [];
  let onMessage: (r: etcdserverpb.WatchRequest) => void = () => {};
  let onEnd: () => void = () => {};
  const stream: BidiStream<etcdserverpb.WatchRequest, WatchResponse> = {
    ctx: { headers: {}, deadlineMs: undefined, signal: new AbortController().signal, peer: "test" },
    onMessage: (f) => {
      onMessage = f;
    },
    onEnd: (f) => {
      onEnd = f;
    },
    onHalfClose: () => {},
    onDrain: () => {},
    write: (r) => {
      got.push(r);
      return true;
    },
    end: () => {},
  };
  serveWatch(s, stream, { maxRequestBytes: 1 << 20, progressIntervalMs: 600_000, leaderlessLimitMs: 2000 });
  onMessage({ createRequest: etcdserverpb.WatchCreateRequest.create(create) } as etcdserverpb.WatchRequest);
  return {
    got,
    events: () =>
      got.flatMap((r) => r.events.map((e) => `${e.kv!.key} ${e.kv!.value} @${e.kv!.modRevision}`)),
    close: () => onEnd(),
  };
}

describe("watch streams across a snapshot install", () => {
  it("a watcher on the follower sees every event after its revision, from the new store", async () => {
    const leader = await server("leader.db");
    const follower = await server("follower.db");
    for (const s of [leader, follower]) for (let i = 0; i < 3; i++) await put(s, `a/${i}`, "old");
    const fromStart = watchStream(follower, { key: Buffer.from("a/"), rangeEnd: Buffer.from("a0") });
    const fromRev2 = watchStream(follower, { key: Buffer.from("a/1"), startRevision: 2n, prevKv: true });
    follower.syncWatchers();
    // Revision 2 put a/0; a/1's put is revision 3.
    expect(fromRev2.events()).toEqual(["a/1 old @3"]);
    expect(fromStart.events()).toEqual([]);

    // The follower misses revisions 5..14; the leader's backend is installed instead.
    for (let i = 0; i < 10; i++) await put(leader, `a/${i % 4}`, `new${i}`);
    const before = follower.watchable;
    const ci = await follower.installSnapshot(await snapshotOf(leader));
    expect(ci).toBe(leader.kv.consistentIndex);
    expect(follower.rev).toBe(14);
    expect(follower.watchable).toBe(before);
    follower.syncWatchers();

    const want = Array.from({ length: 10 }, (_, i) => `a/${i % 4} new${i} @${5 + i}`);
    expect(fromStart.events()).toEqual(want);
    // Nothing of the old store is sent twice, and nothing of the new one is missed.
    expect(fromRev2.events()).toEqual(["a/1 old @3", "a/1 new1 @6", "a/1 new5 @10", "a/1 new9 @14"]);
    expect(
      fromRev2.got
        .filter((r) => !r.created)
        .at(-1)!
        .events.at(-1)!
        .prevKv!.value.toString(),
    ).toBe("new5");

    // Writes applied on the follower after the install reach the same watchers, live.
    await put(follower, "a/9", "after");
    expect(fromStart.events().at(-1)).toBe("a/9 after @15");
    fromStart.close();
    fromRev2.close();
  });

  it("a watcher whose next revision the new store compacted away is canceled with compact_revision", async () => {
    const leader = await server("leader.db");
    const follower = await server("follower.db");
    for (const s of [leader, follower]) await put(s, "k", "0");
    const w = watchStream(follower, { key: Buffer.from("k") });
    const id = w.got[0]!.watchId;
    for (let i = 1; i <= 6; i++) await put(leader, "k", `${i}`);
    await leader.propose({
      kind: "compaction",
      req: etcdserverpb.CompactionRequest.create({ revision: 6n, physical: true }),
    });
    await follower.installSnapshot(await snapshotOf(leader));
    follower.syncWatchers();
    const last = w.got.at(-1)!;
    expect(last).toMatchObject({ watchId: id, canceled: true, compactRevision: 6n, events: [] });
    w.close();
  });
});
