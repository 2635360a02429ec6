// Watch fragments and progress notifications, the same sequence against a real etcd 3.4 and
// against registry-node, both started with a small --max-request-bytes (64 KiB) and
// --experimental-watch-progress-notify-interval=500ms:
// - a txn whose events exceed the limit at which etcd's watch server splits responses
//   (--max-request-bytes + 512 KiB, its grpcOverheadBytes) reaches a `fragment` watch as
//   several responses that reassemble to the whole revision, and a watch without it whole;
// - a progress_notify watch gets empty responses carrying the current revision, including
//   after writes to other keys; a WatchProgressRequest is answered at once (watch id -1).
// Normalised (cluster and member ids differ per run), the records of both must be equal.

import { credentials } from "@grpc/grpc-js";
import { etcdserverpb } from "@regmesh/proto";
import { type Cluster, startCluster } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

type WatchResponse = etcdserverpb.WatchResponse;
const maxRequestBytes = 64 * 1024;
/** etcd splits a watch response when it is at least this large (watchServer.maxRequestBytes). */
const fragmentBytesMin = maxRequestBytes + 512 * 1024;
const progressIntervalMs = 500;
/** 700 values of 1000 bytes: deleted in one txn, their prev_kv events come to ~730 KB. */
const keyCount = 700;
const valueBytes = 1000;
const putsPerTxn = 50;

const clusters: Partial<Record<"etcd" | "registry-node", Cluster>> = {};
beforeAll(async () => {
  for (const kind of ["etcd", "registry-node"] as const) {
    clusters[kind] = await startCluster({
      kind,
      extraArgs: [
        `--max-request-bytes=${maxRequestBytes}`,
        `--experimental-watch-progress-notify-interval=${progressIntervalMs}ms`,
      ],
    });
  }
});
afterAll(async () => {
  for (const c of Object.values(clusters)) await c.stop({ remove: true });
});

/** One Watch stream, recording every response. */
function openStream(endpoint: string) {
  const client = new etcdserverpb.WatchClient(endpoint, credentials.createInsecure());
  const stream = client.watch();
  const got: WatchResponse[] = [];
  const waiters: { pred: () => boolean; resolve: () => void }[] = [];
  stream.on("data", (r: WatchResponse) => {
    got.push(r);
    for (const w of waiters.splice(0)) {
      if (w.pred()) w.resolve();
      else waiters.push(w);
    }
  });
  stream.on("error", () => {});
  return {
    got,
    write: (r: Partial<etcdserverpb.WatchRequest>) => stream.write(r),
    until(pred: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
      if (pred()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
        waiters.push({
          pred,
          resolve: () => {
            clearTimeout(t);
            resolve();
          },
        });
      });
    },
    close() {
      stream.cancel();
      client.close();
    },
  };
}

function kvClient(endpoint: string) {
  const kv = new etcdserverpb.KVClient(endpoint, credentials.createInsecure());
  const call =
    <Req, Res>(f: (req: Req, cb: (err: Error | null, r: Res) => void) => unknown) =>
    (req: Req) =>
      new Promise<Res>((resolve, reject) => f.call(kv, req, (err, r) => (err ? reject(err) : resolve(r))));
  return {
    put: call<etcdserverpb.PutRequest, etcdserverpb.PutResponse>(kv.put),
    txn: call<etcdserverpb.TxnRequest, etcdserverpb.TxnResponse>(kv.txn),
    close: () => kv.close(),
  };
}

const key = (i: number) => `f/${String(i).padStart(3, "0")}`;
const put = (k: string, v: string) =>
  etcdserverpb.PutRequest.create({ key: Buffer.from(k), value: Buffer.from(v) });

type SequenceRecord = {
  fragments: { fragment: boolean; revision: bigint }[];
  reassembled: string[];
  whole: { fragment: boolean; events: number; overLimit: boolean }[];
  progressWatchIds: bigint[];
  progressRevisions: { beforeWrite: bigint; afterWrite: bigint };
  progressRequest: { watchId: bigint; revision: bigint; events: number };
};

async function runSequence(endpoint: string): Promise<SequenceRecord> {
  const kv = kvClient(endpoint);
  const stream = openStream(endpoint);
  try {
    for (let i = 0; i < keyCount; i += putsPerTxn) {
      const success = Array.from({ length: putsPerTxn }, (_, j) => ({
        requestPut: put(key(i + j), "a".repeat(valueBytes)),
      }));
      await kv.txn(etcdserverpb.TxnRequest.create({ success }));
    }
    const prefix = { key: Buffer.from("f/"), rangeEnd: Buffer.from("f0"), prevKv: true };
    stream.write({ createRequest: etcdserverpb.WatchCreateRequest.create({ ...prefix, fragment: true }) });
    stream.write({ createRequest: etcdserverpb.WatchCreateRequest.create(prefix) });
    await stream.until(() => stream.got.filter((r) => r.created).length === 2, "two created responses");
    const [fragId, wholeId] = stream.got.filter((r) => r.created).map((r) => r.watchId);

    // One small txn whose events, with their previous values, are over the split limit.
    const txn = etcdserverpb.TxnRequest.create({
      success: [
        {
          requestDeleteRange: etcdserverpb.DeleteRangeRequest.create({
            key: prefix.key,
            rangeEnd: prefix.rangeEnd,
          }),
        },
      ],
    });
    const txnRev = (await kv.txn(txn)).header!.revision;
    const fragEvents = () => stream.got.filter((r) => r.watchId === fragId && !r.created);
    const wholeEvents = () => stream.got.filter((r) => r.watchId === wholeId && !r.created);
    await stream.until(
      () => fragEvents().some((r) => !r.fragment) && wholeEvents().length > 0,
      "the txn's revision on both watches",
    );
    for (const r of fragEvents()) {
      // Every fragment fits the limit (each holds more than one event here).
      expect(etcdserverpb.WatchResponse.encode(r).finish().length).toBeLessThan(fragmentBytesMin);
    }
    const record: Omit<SequenceRecord, "progressWatchIds" | "progressRevisions" | "progressRequest"> = {
      fragments: fragEvents().map((r) => ({ fragment: r.fragment, revision: r.header!.revision })),
      reassembled: fragEvents().flatMap((r) =>
        r.events.map(
          (e) => `${e.type} ${e.kv!.key} ${e.kv!.modRevision} ${e.kv!.value} prev=${e.prevKv?.value}`,
        ),
      ),
      whole: wholeEvents().map((r) => ({
        fragment: r.fragment,
        events: r.events.length,
        overLimit: etcdserverpb.WatchResponse.encode(r).finish().length >= fragmentBytesMin,
      })),
    };
    expect(record.fragments.every((f) => f.revision === txnRev)).toBe(true);

    // Progress notifications: a watch on a key nobody writes.
    const progress = openStream(endpoint);
    try {
      progress.write({
        createRequest: etcdserverpb.WatchCreateRequest.create({
          key: Buffer.from("p"),
          progressNotify: true,
        }),
      });
      const notes = () =>
        progress.got.filter((r) => !r.created && r.events.length === 0 && r.watchId !== -1n);
      await progress.until(() => notes().length >= 2, "two progress notifications");
      const beforeWrite = notes()[0]!.header!.revision;
      // A write to another key: later notifications carry the new revision.
      const newRev = (await kv.put(put("other", "x"))).header!.revision;
      await progress.until(
        () => notes().some((r) => r.header!.revision === newRev),
        "a progress notification at the new revision",
      );
      progress.write({ progressRequest: {} });
      const answers = () => progress.got.filter((r) => r.watchId === -1n);
      await progress.until(() => answers().length === 1, "the answer to a progress request", 5000);
      const a = answers()[0]!;
      return {
        ...record,
        progressWatchIds: [...new Set(notes().map((r) => r.watchId))],
        progressRevisions: { beforeWrite, afterWrite: newRev },
        progressRequest: { watchId: a.watchId, revision: a.header!.revision, events: a.events.length },
      };
    } finally {
      progress.close();
    }
  } finally {
    stream.close();
    kv.close();
  }
}

describe("watch fragments and progress notifications, etcd vs registry-node", () => {
  it("fragments reassemble to the revision; progress carries the current revision; both as etcd", async () => {
    const etcd = await runSequence(clusters.etcd!.endpoints[0]!);
    const ours = await runSequence(clusters["registry-node"]!.endpoints[0]!);

    // Revision 1 is the empty store; one revision per txn of puts; then the delete.
    const deleteRev = 1 + keyCount / putsPerTxn + 1;
    for (const r of [etcd, ours]) {
      expect(r.fragments.length).toBeGreaterThanOrEqual(2);
      expect(r.fragments.map((f) => f.fragment)).toEqual([...r.fragments.slice(1).map(() => true), false]);
      expect(r.reassembled).toEqual(
        Array.from(
          { length: keyCount },
          (_, i) => `1 ${key(i)} ${deleteRev}  prev=${"a".repeat(valueBytes)}`,
        ),
      );
      expect(r.whole).toEqual([{ fragment: false, events: keyCount, overLimit: true }]);
      expect(r.progressWatchIds).toEqual([0n]);
      expect(r.progressRevisions.beforeWrite).toBe(BigInt(deleteRev));
      expect(r.progressRequest).toEqual({ watchId: -1n, revision: BigInt(deleteRev + 1), events: 0 });
    }
    // Fragment boundaries depend on the header's size (member and cluster ids): compare counts.
    expect(ours.fragments.length).toBe(etcd.fragments.length);
    expect(ours).toEqual({ ...etcd, fragments: ours.fragments });
  });
});
