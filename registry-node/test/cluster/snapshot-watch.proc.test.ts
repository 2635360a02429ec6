// Watchers on a member that installs a snapshot from the leader (three registry-node
// processes, --snapshot-count=20). A follower is stopped while the others write more than
// the leader keeps in its log, so on restart it can only catch up from a snapshot. It is
// restarted while the other two are paused (SIGSTOP), so the watchers reconnected to it
// from their last revision are created on its old state, before the snapshot arrives; then
// the others resume and the snapshot is installed under them. As etcd's watchable store:
// - a watcher whose revision the new state still has sees every event after it, no gap,
//   no duplicate;
// - a watcher whose revision the new state compacted away is canceled with compact_revision;
// - a watcher from a revision the old state had not reached yet gets its events too.

import { readFileSync } from "node:fs";
import { credentials, Metadata } from "@grpc/grpc-js";
import { etcdserverpb } from "@regmesh/proto";
import { type Cluster, type Member, runEtcdctl, startCluster } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

type WatchResponse = etcdserverpb.WatchResponse;
const snapshotCount = 20;

let cluster: Cluster;
beforeAll(async () => {
  cluster = await startCluster({
    kind: "registry-node",
    members: 3,
    extraArgs: [`--snapshot-count=${snapshotCount}`],
  });
});
afterAll(async () => {
  await cluster?.stop({ remove: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function followerOf(c: Cluster): Promise<Member> {
  for (let i = 0; i < 100; i++) {
    const r = await runEtcdctl(["endpoint", "status", "-w", "json"], { endpoints: c.endpoints });
    if (r.code === 0) {
      const list = JSON.parse(r.stdout) as {
        Endpoint: string;
        Status: { leader: unknown; header: { member_id: unknown } };
      }[];
      const f = list.find(
        (x) =>
          String(x.Status.leader) !== "0" && String(x.Status.leader) !== String(x.Status.header.member_id),
      );
      const m = c.members.find((m) => m.endpoint === f?.Endpoint);
      if (m) return m;
    }
    await sleep(100);
  }
  throw new Error("no follower found");
}

/** Puts through the given endpoints, retrying a put that meets an election (a shared, slow machine). */
async function putAll(endpoints: string[], keys: string[]): Promise<number> {
  const clients = endpoints.map((e) => new etcdserverpb.KVClient(e, credentials.createInsecure()));
  let rev = 0;
  try {
    for (const [i, k] of keys.entries()) {
      for (let attempt = 0; ; attempt++) {
        const kv = clients[(i + attempt) % clients.length]!;
        try {
          const r = await new Promise<etcdserverpb.PutResponse>((resolve, reject) =>
            kv.put(
              etcdserverpb.PutRequest.create({ key: Buffer.from(k), value: Buffer.from(`v${i}`) }),
              new Metadata(),
              { deadline: Date.now() + 10_000 },
              (err, res) => (err ? reject(err) : resolve(res)),
            ),
          );
          rev = Number(r.header!.revision);
          break;
        } catch (err) {
          if (attempt >= 5) throw err;
          await sleep(200);
        }
      }
    }
  } finally {
    for (const c of clients) c.close();
  }
  return rev;
}

/** A watch on one stream of its own, recording its responses. */
function watch(endpoint: string, create: Partial<etcdserverpb.WatchCreateRequest>) {
  const client = new etcdserverpb.WatchClient(endpoint, credentials.createInsecure());
  const stream = client.watch();
  const got: WatchResponse[] = [];
  let broken = false;
  stream.on("data", (r: WatchResponse) => got.push(r));
  stream.on("error", () => {
    broken = true;
  });
  stream.on("end", () => {
    broken = true;
  });
  stream.write({ createRequest: etcdserverpb.WatchCreateRequest.create(create) });
  const events = () =>
    got.flatMap((r) => r.events.map((e) => ({ key: String(e.kv!.key), rev: Number(e.kv!.modRevision) })));
  return {
    got,
    events,
    get broken() {
      return broken;
    },
    lastRev: () => events().at(-1)?.rev ?? 0,
    async until(pred: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!pred()) {
        if (Date.now() > deadline)
          throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(events().slice(-3))}`);
        await sleep(50);
      }
    },
    close() {
      stream.cancel();
      client.close();
    },
  };
}

/** Snapshot installs reported in the log of the member's current run (one log file per start). */
function installs(m: Member): number {
  return readFileSync(m.logPath, "utf8")
    .split("\n")
    .filter((l) => l.includes("installed a snapshot from the leader")).length;
}

/** Waits until the member's client port answers (it has no leader yet: /health would not do). */
async function waitServing(m: Member): Promise<void> {
  for (let i = 0; i < 300; i++) {
    try {
      const res = await fetch(`${m.clientUrl}/version`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {}
    await sleep(100);
  }
  throw new Error(`${m.name} does not serve`);
}

describe("watchers across a snapshot install", () => {
  it("reconnected watchers see every event after their revision, or a compacted cancel", async () => {
    const c = cluster;
    const f = await followerOf(c);
    const others = c.members.filter((m) => m !== f);
    const live = others.map((m) => m.endpoint);
    const prefix = { key: Buffer.from("w/"), rangeEnd: Buffer.from("w0") };
    const keys = (from: number, n: number) => Array.from({ length: n }, (_, i) => `w/${from + i}`);

    let rev = await putAll(live, keys(0, 10));
    const first = watch(f.endpoint, { ...prefix, startRevision: 2n });
    await first.until(() => first.lastRev() === rev, "the first events on the follower");
    const seen = first.events();

    // Phase 1: the follower misses four snapshots' worth of entries.
    await f.stop();
    await first.until(() => first.broken, "the stream to break");
    first.close();
    const oldRev = rev;
    rev = await putAll(live, keys(10, 4 * snapshotCount));
    for (const m of others) m.pause();
    let resumed = false;
    try {
      f.start();
      await waitServing(f);
      const again = watch(f.endpoint, { ...prefix, startRevision: BigInt(oldRev + 1) });
      await again.until(() => again.got.some((r) => r.created), "the reconnected watch to be created");
      // Created on the follower's old state: it has not heard from the others yet.
      expect(Number(again.got.find((r) => r.created)!.header!.revision)).toBe(oldRev);
      expect(installs(f)).toBe(0);
      for (const m of others) m.resume();
      resumed = true;
      await again.until(() => again.lastRev() >= rev, "the events written while the follower was down");
      expect(installs(f)).toBeGreaterThanOrEqual(1);
      seen.push(...again.events());
      again.close();
    } finally {
      if (!resumed) for (const m of others) m.resume();
    }
    // Every revision from 2 on, once, in order: one put each.
    expect(seen.map((e) => e.rev)).toEqual(Array.from({ length: rev - 1 }, (_, i) => i + 2));
    expect(seen.map((e) => e.key)).toEqual(keys(0, rev - 1));

    // Phase 2: the same, and the leader's store is compacted past where the watcher was.
    await f.waitHealthy();
    await f.stop();
    const lastSeen = rev;
    rev = await putAll(live, keys(rev - 1, 4 * snapshotCount));
    const compactRev = rev;
    const compacted = await runEtcdctl(["compact", String(compactRev), "--physical"], { endpoints: live });
    expect(compacted.code, compacted.stderr).toBe(0);
    for (const m of others) m.pause();
    resumed = false;
    try {
      f.start();
      await waitServing(f);
      // From where it stopped: compacted away on the leader's state.
      const stale = watch(f.endpoint, { ...prefix, startRevision: BigInt(lastSeen + 1) });
      // From the compaction revision: ahead of the follower's old state, kept on the new.
      const ahead = watch(f.endpoint, { ...prefix, startRevision: BigInt(compactRev) });
      for (const w of [stale, ahead]) await w.until(() => w.got.some((r) => r.created), "created");
      for (const w of [stale, ahead]) expect(Number(w.got[0]!.header!.revision)).toBe(lastSeen);
      expect(installs(f)).toBe(0);
      for (const m of others) m.resume();
      resumed = true;
      await stale.until(() => stale.got.some((r) => r.canceled), "the compacted cancel");
      const cancel = stale.got.find((r) => r.canceled)!;
      expect(Number(cancel.compactRevision)).toBe(compactRev);
      expect(stale.events()).toEqual([]);
      const later = await putAll(live, keys(rev - 1, 5));
      await ahead.until(() => ahead.lastRev() >= later, "the events from the compaction revision on");
      expect(ahead.events().map((e) => e.rev)).toEqual(
        Array.from({ length: later - compactRev + 1 }, (_, i) => compactRev + i),
      );
      expect(installs(f)).toBeGreaterThanOrEqual(1);
      stale.close();
      ahead.close();
    } finally {
      if (!resumed) for (const m of others) m.resume();
    }
    // Three processes, two restarts and two snapshot installs on a shared 2-core machine.
  }, 240_000);
});
