// Server benchmark: registry-node against a real etcd 3.4 (the peer), both one-member
// clusters on loopback started by the test kit in the same run, same client, same workload:
//   puts of 256-byte values over 10,000 keys with 1, 64 and 256 requests in flight on one
//   connection (as clientv3 uses one), each run bounded by a count and a time;
//   linearizable and serializable single-key ranges with 1 and 64 in flight.
// Reported: requests per second and p50/p99 latency, and ours/etcd ratios (throughput: >1
// is better for us; latency: <1 is better for us). The servers are measured one at a time
// (the machine may have few cores), each workload in `rounds` alternating slices (etcd,
// ours, ours, etcd, ...) so that a change of load on a shared machine falls on both alike;
// each server's connection is warmed up first.
// Run: npx tsc -b registry-node bench && node bench/dist/registry.js
//   REGMESH_BENCH_SCALE=0.2 shortens every bound (counts and times) for a quick look.
//
// @grpc/grpc-js is the client library of @regmesh/proto's generated clients (its dependency).

import { credentials } from "@grpc/grpc-js";
import { etcdserverpb } from "@regmesh/proto";
import { type Cluster, startEtcd, startRegistryNode } from "@regmesh/testkit";

const scale = Number(process.env.REGMESH_BENCH_SCALE ?? 1);
const VALUE_BYTES = 256;
const KEYS = 10_000;
const value = Buffer.alloc(VALUE_BYTES, 0x61);
const keyOf = (i: number) => Buffer.from(`bench/k${String(i % KEYS).padStart(5, "0")}`);

type Workload = {
  name: string;
  inFlight: number;
  /** Upper bounds of one run: whichever comes first. */
  opsMax: number;
  secondsMax: number;
  op: (kv: etcdserverpb.KVClient, i: number) => Promise<unknown>;
};

const call = <Res>(f: (cb: (err: Error | null, r: Res) => void) => unknown): Promise<Res> =>
  new Promise((resolve, reject) => {
    f((err, r) => (err ? reject(err) : resolve(r)));
  });

const put = (kv: etcdserverpb.KVClient, i: number) =>
  call<etcdserverpb.PutResponse>((cb) =>
    kv.put(etcdserverpb.PutRequest.create({ key: keyOf(i), value }), cb),
  );
const range = (serializable: boolean) => (kv: etcdserverpb.KVClient, i: number) =>
  call<etcdserverpb.RangeResponse>((cb) =>
    kv.range(etcdserverpb.RangeRequest.create({ key: keyOf(i), serializable }), cb),
  );

const workloads: Workload[] = [
  { name: "put, 1 in flight", inFlight: 1, opsMax: 3_000, secondsMax: 15, op: put },
  { name: "put, 64 in flight", inFlight: 64, opsMax: 30_000, secondsMax: 15, op: put },
  { name: "put, 256 in flight", inFlight: 256, opsMax: 40_000, secondsMax: 15, op: put },
  { name: "range (linearizable), 1 in flight", inFlight: 1, opsMax: 5_000, secondsMax: 10, op: range(false) },
  {
    name: "range (linearizable), 64 in flight",
    inFlight: 64,
    opsMax: 40_000,
    secondsMax: 10,
    op: range(false),
  },
  { name: "range (serializable), 1 in flight", inFlight: 1, opsMax: 5_000, secondsMax: 10, op: range(true) },
  {
    name: "range (serializable), 64 in flight",
    inFlight: 64,
    opsMax: 40_000,
    secondsMax: 10,
    op: range(true),
  },
];

type Result = { ops: number; perSecond: number; p50Ms: number; p99Ms: number; errors: number };

/** Slices each workload is split into, alternating between the servers. */
const rounds = 4;

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** One server's side of a workload: its client and what its slices measured so far. */
type Side = { kv: etcdserverpb.KVClient; latencies: number[]; seconds: number; errors: number };

async function open(endpoint: string, w: Workload): Promise<Side> {
  const kv = new etcdserverpb.KVClient(endpoint, credentials.createInsecure());
  // Warm-up: connection, JIT, and the server's first writes.
  const warm = Math.min(500, Math.ceil(w.opsMax / 10));
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(w.inFlight, warm) }, async () => {
      while (next < warm) await w.op(kv, next++);
    }),
  );
  return { kv, latencies: [], seconds: 0, errors: 0 };
}

/** One slice: `inFlight` loops, each issuing its next request when the last is answered. */
async function slice(side: Side, w: Workload, round: number): Promise<void> {
  const opsMax = Math.max(1, Math.round((w.opsMax * scale) / rounds));
  const deadline = performance.now() + (w.secondsMax * scale * 1000) / rounds;
  let started = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: w.inFlight }, async () => {
      while (started < opsMax && performance.now() < deadline) {
        const i = round * opsMax + started++;
        const s = performance.now();
        try {
          await w.op(side.kv, i);
          side.latencies.push(performance.now() - s);
        } catch {
          side.errors++;
        }
      }
    }),
  );
  side.seconds += (performance.now() - t0) / 1000;
}

function result(side: Side): Result {
  const sorted = Float64Array.from(side.latencies).sort();
  return {
    ops: sorted.length,
    perSecond: sorted.length / side.seconds,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    errors: side.errors,
  };
}

/** A workload against both servers, in alternating slices. */
async function run(
  endpoints: { etcd: string; ours: string },
  w: Workload,
): Promise<{ e: Result; o: Result }> {
  const e = await open(endpoints.etcd, w);
  const o = await open(endpoints.ours, w);
  try {
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? [e, o] : [o, e];
      for (const side of order) await slice(side, w, r);
    }
    return { e: result(e), o: result(o) };
  } finally {
    e.kv.close();
    o.kv.close();
  }
}

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "-");

async function main(): Promise<void> {
  let etcd: Cluster | undefined;
  let ours: Cluster | undefined;
  try {
    etcd = await startEtcd();
    ours = await startRegistryNode();
    const targets = { etcd: etcd.endpoints[0]!, ours: ours.endpoints[0]! };
    console.log(`registry-node vs etcd 3.4, one member each; ${VALUE_BYTES}-byte values; scale ${scale}`);
    console.log(
      [
        "workload".padEnd(38),
        "etcd req/s".padStart(11),
        "ours req/s".padStart(11),
        "ratio".padStart(6),
        "etcd p50/p99 ms".padStart(16),
        "ours p50/p99 ms".padStart(16),
        "p50 ratio".padStart(10),
        "p99 ratio".padStart(10),
      ].join(" "),
    );
    for (const w of workloads) {
      const { e, o } = await run(targets, w);
      console.log(
        [
          w.name.padEnd(38),
          fmt(e.perSecond, 0).padStart(11),
          fmt(o.perSecond, 0).padStart(11),
          fmt(o.perSecond / e.perSecond, 2).padStart(6),
          `${fmt(e.p50Ms, 2)}/${fmt(e.p99Ms, 2)}`.padStart(16),
          `${fmt(o.p50Ms, 2)}/${fmt(o.p99Ms, 2)}`.padStart(16),
          fmt(o.p50Ms / e.p50Ms, 2).padStart(10),
          fmt(o.p99Ms / e.p99Ms, 2).padStart(10),
        ].join(" ") +
          (e.errors + o.errors > 0 ? `  (errors: etcd ${e.errors}, ours ${o.errors})` : "") +
          `  [${e.ops} / ${o.ops} ops]`,
      );
    }
  } finally {
    await etcd?.stop({ remove: true });
    await ours?.stop({ remove: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
