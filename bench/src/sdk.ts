// SDK benchmark (issue "Node SDK"), not a timed test:
//   1. pick cost per balancer at 10, 1,000 and 100,000 instances (the routing core alone);
//   2. registration -> all of 100 watching SDK clients see it (p50/p99), beside 100 `etcd3` npm
//      clients watching the same prefix, in the same run, against a real etcd (and registry-node
//      with REGMESH_REGISTRY=registry-node);
//   3. memory per 100,000 cached instances (one service resolved by Discovery).
// Run: npx tsc -b && node --expose-gc bench/dist/sdk.js
import {
  BALANCER_KINDS,
  createRouterState,
  Discovery,
  EtcdClient,
  encodeInstance,
  type Instance,
  instanceKey,
  op,
  type Policy,
  Registrar,
  route,
  seededRand,
} from "@regmesh/sdk";
import { registryKindFromEnv, startCluster } from "@regmesh/testkit";
import { Etcd3 } from "etcd3";

function instances(n: number): Instance[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `i${String(i).padStart(6, "0")}`,
    service: "bench",
    address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    port: 8080,
    protocol: "http",
    weight: 1 + (i % 5),
    zone: `z${i % 3}`,
    tags: [],
    metadata: {},
  }));
}

function pickCost(): void {
  console.log("\n1. pick cost (routing core: policy route + balancer), ns per pick");
  const header = ["balancer", "10", "1,000", "100,000"];
  console.log(header.map((h) => h.padEnd(16)).join(""));
  for (const kind of BALANCER_KINDS) {
    const cells: string[] = [kind];
    for (const n of [10, 1_000, 100_000]) {
      const set = instances(n);
      const policy: Policy = {
        schemaVersion: 1,
        service: "bench",
        loadBalancer:
          kind === "ring-hash" || kind === "maglev" ? { kind, hashKey: { header: "x-user" } } : { kind },
      };
      const state = createRouterState();
      const rand = seededRand(1);
      const req = (i: number) => ({ method: "GET", path: "/", headers: { "x-user": `u${i}` } });
      route(policy, req(0), set, state, 0, rand, { explain: false }); // prepare (memoised)
      const budgetMs = 400;
      let picks = 0;
      const t0 = performance.now();
      while (performance.now() - t0 < budgetMs) {
        for (let i = 0; i < 1_000; i++) route(policy, req(i), set, state, picks, rand, { explain: false });
        picks += 1_000;
      }
      const ns = ((performance.now() - t0) * 1e6) / picks;
      cells.push(`${ns.toFixed(0)}`);
    }
    console.log(cells.map((c) => c.padEnd(16)).join(""));
  }
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
}

async function fanOut(endpoints: string[]): Promise<void> {
  const WATCHERS = 100;
  const REGISTRATIONS = 50;
  const prefix = `/bench${Date.now()}`;
  console.log(`\n2. registration -> seen by all of ${WATCHERS} watchers (${REGISTRATIONS} registrations)`);
  const sdkSeen = new Map<string, number>();
  const etcd3Seen = new Map<string, number>();
  const clients: EtcdClient[] = [];
  const discoveries: Discovery[] = [];
  for (let i = 0; i < WATCHERS; i++) {
    const c = new EtcdClient({ endpoints });
    const d = new Discovery({ client: c, prefix });
    clients.push(c);
    discoveries.push(d);
    await d.resolve("bench");
    const known = new Set<string>();
    d.watch("bench", (snap) => {
      const now = performance.now();
      for (const inst of snap.instances) {
        if (known.has(inst.id)) continue;
        known.add(inst.id);
        sdkSeen.set(inst.id, Math.max(sdkSeen.get(`${inst.id}`) ?? 0, now));
        sdkSeen.set(`${inst.id}#n`, (sdkSeen.get(`${inst.id}#n`) ?? 0) + 1);
      }
    });
  }
  const etcd3s: Etcd3[] = [];
  for (let i = 0; i < WATCHERS; i++) {
    const e = new Etcd3({ hosts: endpoints.map((h) => `http://${h}`) });
    etcd3s.push(e);
    const w = await e.watch().prefix(`${prefix}/services/bench/`).create();
    w.on("put", (kv) => {
      const id = kv.key.toString().split("/").pop()!;
      etcd3Seen.set(id, Math.max(etcd3Seen.get(id) ?? 0, performance.now()));
      etcd3Seen.set(`${id}#n`, (etcd3Seen.get(`${id}#n`) ?? 0) + 1);
    });
  }
  const regClient = new EtcdClient({ endpoints });
  const registrar = new Registrar({ client: regClient, prefix });
  const sdkLat: number[] = [];
  const etcd3Lat: number[] = [];
  for (let i = 0; i < REGISTRATIONS; i++) {
    const id = `r${i}`;
    const t0 = performance.now();
    await registrar.register({ service: "bench", id, address: "127.0.0.1", port: 9000 + i });
    const deadline = performance.now() + 5_000;
    while (
      ((sdkSeen.get(`${id}#n`) ?? 0) < WATCHERS || (etcd3Seen.get(`${id}#n`) ?? 0) < WATCHERS) &&
      performance.now() < deadline
    ) {
      await new Promise((r) => setTimeout(r, 1));
    }
    sdkLat.push((sdkSeen.get(id) ?? Number.NaN) - t0);
    etcd3Lat.push((etcd3Seen.get(id) ?? Number.NaN) - t0);
    await new Promise((r) => setTimeout(r, 20));
  }
  const row = (name: string, xs: number[]) =>
    console.log(
      `${name.padEnd(22)} p50 ${percentile(xs, 50).toFixed(1).padStart(7)} ms   p99 ${percentile(xs, 99).toFixed(1).padStart(7)} ms`,
    );
  row("SDK Discovery", sdkLat);
  row("etcd3 npm watch", etcd3Lat);
  console.log(
    `ratio p99 SDK/etcd3: ${(percentile(sdkLat, 99) / percentile(etcd3Lat, 99)).toFixed(2)}x (target: SDK p99 < 100 ms)`,
  );
  await registrar.close();
  regClient.close();
  for (const d of discoveries) await d.close();
  for (const c of clients) c.close();
  for (const e of etcd3s) e.close();
}

async function memory(endpoints: string[]): Promise<void> {
  const N = 100_000;
  const prefix = `/benchmem${Date.now()}`;
  console.log(`\n3. memory of ${N.toLocaleString()} cached instances (one service)`);
  const c = new EtcdClient({ endpoints, requestTimeoutMs: 10_000 });
  const set = instances(N);
  for (let i = 0; i < N; i += 128) {
    const ops = set
      .slice(i, i + 128)
      .map((inst) => op.put(instanceKey(prefix, "bench", inst.id), encodeInstance(inst)));
    await c
      .txn()
      .onSuccess(...ops)
      .commit();
  }
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const before = process.memoryUsage().heapUsed;
  const d = new Discovery({ client: c, prefix, resolveTimeoutMs: 120_000 });
  const t0 = performance.now();
  const snap = await d.resolve("bench");
  const listMs = performance.now() - t0;
  gc?.();
  const after = process.memoryUsage().heapUsed;
  console.log(
    `listed ${snap.instances.length.toLocaleString()} in ${listMs.toFixed(0)} ms (paged); heap +${((after - before) / 1024 / 1024).toFixed(1)} MiB = ${((after - before) / snap.instances.length).toFixed(0)} bytes per instance${gc === undefined ? " (run with --expose-gc for exact figures)" : ""}`,
  );
  await d.close();
  c.close();
}

pickCost();
const cluster = await startCluster({ kind: registryKindFromEnv("etcd") });
try {
  console.log(`\nregistry: ${registryKindFromEnv("etcd")} at ${cluster.endpoints.join(",")}`);
  await fanOut(cluster.endpoints);
  await memory(cluster.endpoints);
} finally {
  await cluster.stop({ remove: true });
}
// etcd3's clients keep timers of their own after close(); a benchmark script just ends.
process.exit(0);
