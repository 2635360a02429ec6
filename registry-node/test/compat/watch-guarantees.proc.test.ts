// Watch guarantees (ordered, unique, atomic, reliable, resumable, prev_kv) over a seeded
// random run on three registry-node processes, with a member killed (-9) and another
// restarted while writes go on. Watchers resume from their last revision on another
// member after any break; at the end their records are checked against the store's own
// history, read with one watch from revision 1.
// 300 operations in the default suite, 3,000 under REGMESH_LONG=1; REGMESH_SEED replays
// the operations (fault timing is real, so a replay is close, not exact).

import { type ClientDuplexStream, credentials } from "@grpc/grpc-js";
import { etcdserverpb } from "@regmesh/proto";
import {
  type Cluster,
  checkWatch,
  type RecordedEvent,
  type RecordedResponse,
  startCluster,
  type WatchRecord,
} from "@regmesh/testkit";
import { afterAll, describe, expect, it } from "vitest";

const long = process.env.REGMESH_LONG === "1";
const seed = Number(process.env.REGMESH_SEED ?? Date.now() % 1_000_000);
const ops = long ? 3000 : 300;
let cluster: Cluster | undefined;
afterAll(async () => {
  await cluster?.stop({ remove: true });
});

function rng(s: number) {
  let x = s >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

const toEvent = (e: {
  type: number;
  kv?: { key: Buffer; value: Buffer; modRevision: bigint };
  prevKv?: { value: Buffer };
}): RecordedEvent => ({
  type: e.type === 1 ? "DELETE" : "PUT",
  key: e.kv!.key.toString(),
  value: e.type === 1 ? "" : e.kv!.value.toString(),
  modRevision: Number(e.kv!.modRevision),
  prevValue: e.prevKv?.value.toString(),
});

/** A watcher that resumes from its last revision on the next member after any break. */
function resumingWatcher(endpoints: string[], first: number, key: string, end: string | undefined) {
  const record: WatchRecord = { key, end, startRevision: 0, lastRevision: 0, responses: [], prevKv: true };
  let at = first;
  let closed = false;
  let stream: ClientDuplexStream<etcdserverpb.WatchRequest, etcdserverpb.WatchResponse> | undefined;
  let client: etcdserverpb.WatchClient | undefined;
  const open = () => {
    if (closed) return;
    client?.close();
    client = new etcdserverpb.WatchClient(endpoints[at++ % endpoints.length]!, credentials.createInsecure());
    const s = client.watch();
    stream = s;
    s.on("data", (r: etcdserverpb.WatchResponse) => {
      // Only the current stream counts: a replaced one may still deliver a late response.
      if (stream !== s) return;
      if (r.events.length > 0) {
        record.responses.push({ events: r.events.map(toEvent) } satisfies RecordedResponse);
        record.lastRevision = Math.max(record.lastRevision, Number(r.header!.revision));
      }
    });
    // 'error' and 'end' can both fire for one broken stream: reopen once.
    let retried = false;
    const retry = () => {
      if (retried || stream !== s) return;
      retried = true;
      setTimeout(open, 100);
    };
    s.on("error", retry);
    s.on("end", retry);
    s.write({
      createRequest: etcdserverpb.WatchCreateRequest.create({
        key: Buffer.from(key),
        rangeEnd: end === undefined ? Buffer.alloc(0) : end === "" ? Buffer.from([0]) : Buffer.from(end),
        startRevision: BigInt(record.lastRevision + 1),
        prevKv: true,
      }),
    });
  };
  return {
    record,
    start(fromRevision: number) {
      record.startRevision = fromRevision;
      record.lastRevision = fromRevision - 1;
      open();
    },
    close() {
      closed = true;
      stream?.cancel();
      client?.close();
    },
  };
}

async function history(endpoint: string, untilRev: number): Promise<RecordedEvent[]> {
  const client = new etcdserverpb.WatchClient(endpoint, credentials.createInsecure());
  const out: RecordedEvent[] = [];
  await new Promise<void>((resolve, reject) => {
    const s = client.watch();
    const timer = setTimeout(() => reject(new Error("history watch timed out")), 20_000);
    s.on("data", (r: etcdserverpb.WatchResponse) => {
      out.push(...r.events.map(toEvent));
      if (out.length > 0 && out[out.length - 1]!.modRevision >= untilRev) {
        clearTimeout(timer);
        s.cancel();
        resolve();
      }
    });
    s.on("error", () => {});
    s.write({
      createRequest: etcdserverpb.WatchCreateRequest.create({
        key: Buffer.from("w/"),
        rangeEnd: Buffer.from("w0"),
        startRevision: 1n,
        prevKv: true,
      }),
    });
  });
  client.close();
  return out;
}

describe("watch guarantees through member crashes and restarts", () => {
  it(`hold for every watcher (seed ${seed}, ${ops} operations; replay with REGMESH_SEED=${seed})`, async () => {
    cluster = await startCluster({ kind: "registry-node", members: 3 });
    const c = cluster;
    const rand = rng(seed);
    const kvs = c.endpoints.map((e) => new etcdserverpb.KVClient(e, credentials.createInsecure()));
    const call = <T>(f: (k: etcdserverpb.KVClient, cb: (err: unknown, r: T) => void) => void) =>
      new Promise<T | undefined>((resolve) =>
        f(kvs[rand(kvs.length)]!, (err, r) => resolve(err ? undefined : r)),
      );
    const first = await call<etcdserverpb.PutResponse>((k, cb) =>
      k.put(etcdserverpb.PutRequest.create({ key: Buffer.from("w/start"), value: Buffer.from("0") }), cb),
    );
    const from = Number(first!.header!.revision) + 1;
    const watchers = [
      resumingWatcher(c.endpoints, 0, "w/", "w0"),
      resumingWatcher(c.endpoints, 1, "w/k1", undefined),
      resumingWatcher(c.endpoints, 2, "w/k4", ""),
    ];
    for (const w of watchers) w.start(from);
    await new Promise((r) => setTimeout(r, 300));

    const key = () => `w/k${rand(8)}`;
    for (let i = 0; i < ops; i++) {
      if (i === Math.floor(ops / 3)) await c.members[1]!.kill9().then(() => c.members[1]!.start());
      if (i === Math.floor((2 * ops) / 3)) await c.members[0]!.restart();
      const kind = rand(10);
      if (kind < 6) {
        await call((k, cb) =>
          k.put(etcdserverpb.PutRequest.create({ key: Buffer.from(key()), value: Buffer.from(`${i}`) }), cb),
        );
      } else if (kind < 8) {
        await call((k, cb) =>
          k.deleteRange(etcdserverpb.DeleteRangeRequest.create({ key: Buffer.from(key()) }), cb),
        );
      } else {
        // A transaction writing distinct keys: its events share one revision (atomic).
        const keys = [...new Set([key(), key(), key()])];
        await call((k, cb) =>
          k.txn(
            etcdserverpb.TxnRequest.create({
              success: keys.map((kk, j) =>
                j === 2
                  ? { requestDeleteRange: etcdserverpb.DeleteRangeRequest.create({ key: Buffer.from(kk) }) }
                  : {
                      requestPut: etcdserverpb.PutRequest.create({
                        key: Buffer.from(kk),
                        value: Buffer.from(`t${i}`),
                      }),
                    },
              ),
            }),
            cb,
          ),
        );
      }
    }
    await c.members[0]!.waitHealthy();
    await c.members[1]!.waitHealthy();
    const last = await call<etcdserverpb.RangeResponse>((k, cb) =>
      k.range(etcdserverpb.RangeRequest.create({ key: Buffer.from("w/") }), cb),
    );
    const finalRev = Number(last!.header!.revision);
    await new Promise((r) => setTimeout(r, 2500));
    for (const w of watchers) w.close();
    for (const k of kvs) k.close();

    const truth = await history(c.endpoints[2]!, finalRev);
    for (const w of watchers) {
      w.record.lastRevision = finalRev;
      expect(checkWatch(w.record, truth), `watch on ${w.record.key} (seed ${seed})`).toEqual([]);
    }
    expect(watchers[0]!.record.responses.length).toBeGreaterThan(10);
    // The check can fail: the same record missing its first response is caught.
    const broken = { ...watchers[0]!.record, responses: watchers[0]!.record.responses.slice(1) };
    expect(checkWatch(broken, truth).map((v) => v.guarantee)).toContain("reliable");
  });
});
