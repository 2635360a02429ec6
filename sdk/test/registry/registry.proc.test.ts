import diagnostics from "node:diagnostics_channel";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type Cluster,
  type FaultProxy,
  registryKindFromEnv,
  runEtcdctl,
  startCluster,
  startFaultProxy,
} from "@regmesh/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadSnapshot } from "../../src/cache/disk-cache.js";
import { EtcdClient, type EtcdClientOptions } from "../../src/etcd/client.js";
import { Discovery, type ServiceSnapshot } from "../../src/registry/discovery.js";
import { Registrar } from "../../src/registry/registrar.js";
import { sleep, until } from "../etcd/helpers.js";

let cluster: Cluster;
const closers: (() => unknown)[] = [];

beforeAll(async () => {
  cluster = await startCluster({ kind: registryKindFromEnv("etcd") });
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});
afterAll(async () => {
  await cluster?.stop({ remove: true });
});

function client(opts: Partial<EtcdClientOptions> = {}): EtcdClient {
  const c = new EtcdClient({
    endpoints: cluster.endpoints,
    requestTimeoutMs: 1_000,
    watchProgressIntervalMs: 300,
    watchIdleTimeoutMs: 1_200,
    ...opts,
  });
  closers.push(() => c.close());
  return c;
}
function registrar(c: EtcdClient, prefix: string, ttlS = 5): Registrar {
  const r = new Registrar({ client: c, prefix, ttlS });
  closers.push(() => r.close());
  return r;
}
function discovery(
  c: EtcdClient,
  prefix: string,
  opts: Partial<ConstructorParameters<typeof Discovery>[0]> = {},
) {
  const d = new Discovery({ client: c, prefix, ...opts });
  closers.push(() => d.close());
  return d;
}
const etcdctl = (args: string[]) => runEtcdctl(args, { endpoints: cluster.endpoints });

describe("registration and discovery against a real registry", () => {
  it("an instance registered by the SDK reads back with etcdctl as a valid naming record", async () => {
    const r = registrar(client(), "/nr");
    await r.register({
      service: "orders",
      id: "o-1",
      address: "10.1.2.3",
      port: 8080,
      zone: "eu-1a",
      version: "1.2.0",
      tags: ["canary"],
      metadata: { team: "pay" },
    });
    const out = await etcdctl(["get", "--prefix", "/nr/services/", "-w", "json"]);
    expect(out.code, out.stderr).toBe(0);
    const kvs = JSON.parse(out.stdout).kvs as { key: string; value: string }[];
    expect(kvs.length).toBe(1);
    expect(Buffer.from(kvs[0]!.key, "base64").toString()).toBe("/nr/services/orders/o-1");
    const record = JSON.parse(Buffer.from(kvs[0]!.value, "base64").toString());
    expect(record.Op).toBe(0);
    expect(record.Addr).toBe("10.1.2.3:8080");
    expect(record.Metadata).toMatchObject({ zone: "eu-1a", version: "1.2.0", tags: ["canary"] });
    // JSON numbers lose a 64-bit lease id's low bits: read it from the text.
    expect(BigInt(/"lease":(\d+)/.exec(out.stdout)![1]!)).toBe(r.leaseId);
  });

  it("one lease for all instances; update is live; deregister and close remove keys and revoke", async () => {
    const c = client();
    const r = registrar(c, "/life");
    const d = discovery(client(), "/life");
    await r.register({ service: "api", id: "a", address: "127.0.0.1", port: 1001 });
    await r.register({ service: "api", id: "b", address: "127.0.0.1", port: 1002 });
    await r.register({ service: "web", id: "w", address: "127.0.0.1", port: 1003 });
    const ttl = await c.timeToLive(r.leaseId!, true);
    expect(ttl.keys.length).toBe(3);
    const snaps: ServiceSnapshot[] = [];
    d.watch("api", (s) => snaps.push(s));
    expect((await d.resolve("api")).instances.map((i) => i.port)).toEqual([1001, 1002]);
    await r.update("api", "a", { weight: 7, health: "unhealthy" });
    await until(
      () => snaps.at(-1)?.instances[0]?.weight === 7,
      5_000,
      () => "update seen",
    );
    expect(snaps.at(-1)!.instances[0]!.health).toBe("unhealthy");
    await r.deregister("api", "b");
    await until(
      () => snaps.at(-1)?.instances.length === 1,
      5_000,
      () => "deregister seen",
    );
    const lease = r.leaseId!;
    await r.close();
    await until(
      () => snaps.at(-1)?.instances.length === 0,
      5_000,
      () => "close seen",
    );
    expect((await c.range("/life/", { prefix: true, countOnly: true })).count).toBe(0n);
    expect((await c.timeToLive(lease)).TTL).toBe(-1n);
  });

  it("lease revoked behind the SDK's back → re-registration under a new lease", async () => {
    const c = client();
    const r = registrar(c, "/rv");
    await r.register({ service: "s", id: "1", address: "127.0.0.1", port: 1 });
    await r.register({ service: "s", id: "2", address: "127.0.0.1", port: 2 });
    const old = r.leaseId!;
    const rereg = new Promise<bigint>((res) => r.once("reregistered", (e) => res(e.leaseId)));
    const out = await etcdctl(["lease", "revoke", old.toString(16)]);
    expect(out.code, out.stderr).toBe(0);
    // Registering right away, before the keeper has heard: the put finds the lease gone.
    await r.register({ service: "s", id: "3", address: "127.0.0.1", port: 3 });
    const fresh = await rereg;
    expect(fresh).not.toBe(old);
    expect(r.leaseId).toBe(fresh);
    const kvs = (await c.range("/rv/services/s/", { prefix: true })).kvs;
    expect(kvs.map((kv) => kv.lease)).toEqual([fresh, fresh, fresh]);
  });

  it("a listing over 4 MiB (3,000 instances, 2 KiB metadata each) loads completely", async () => {
    const c = client({ requestTimeoutMs: 10_000 });
    const r = registrar(c, "/big", 30);
    const blob = "x".repeat(2048);
    const inputs = Array.from({ length: 3000 }, (_, i) => ({
      service: "big",
      id: `i-${String(i).padStart(5, "0")}`,
      address: "10.0.0.1",
      port: 10_000 + (i % 50_000),
      metadata: { blob },
    }));
    await r.registerMany(inputs);
    const d = discovery(client(), "/big", { resolveTimeoutMs: 30_000 });
    const snap = await d.resolve("big");
    expect(snap.instances.length).toBe(3000);
    expect(snap.instances[2999]!.id).toBe("i-02999");
    const bytes = snap.instances.reduce((n, i) => n + JSON.stringify(i).length, 0);
    expect(bytes).toBeGreaterThan(4 * 1024 * 1024);
  });

  it("anti-entropy: no drift when consistent; drift is reported and repaired", async () => {
    const c = client();
    const r = registrar(c, "/ae");
    await r.register({ service: "s", id: "1", address: "127.0.0.1", port: 1 });
    const d = discovery(client(), "/ae", { antiEntropyIntervalMs: 0 });
    await d.resolve("s");
    expect(await d.reconcile("s")).toMatchObject({ added: [], removed: [], changed: [] });
    // Simulate a lost event: drop the instance from the cache behind discovery's back.
    const entry = (d as unknown as { lru: { get(s: string): { instances: Map<string, unknown> } } }).lru.get(
      "s",
    );
    entry.instances.delete("1");
    const drift = await d.reconcile("s");
    expect(drift.added).toEqual(["1"]);
    await until(
      () => d.peek("s")?.instances.length === 1,
      5_000,
      () => "repaired",
    );
  });

  it("the cache is an LRU over services; services with listeners are kept", async () => {
    const r = registrar(client(), "/lru");
    for (const s of ["s1", "s2", "s3", "s4"])
      await r.register({ service: s, id: "1", address: "127.0.0.1", port: 1 });
    const d = discovery(client(), "/lru", { maxServices: 2 });
    const stop = d.watch("s1", () => {});
    for (const s of ["s2", "s3", "s4"]) expect((await d.resolve(s)).instances.length).toBe(1);
    expect(d.peek("s1")).toBeDefined(); // pinned by its listener
    expect(d.peek("s2")).toBeUndefined(); // evicted: least recently used of the unpinned
    expect(d.peek("s4")).toBeDefined();
    stop();
    expect((await d.resolve("s2")).instances.length).toBe(1); // comes back on demand
  });

  it("discovery saves its sets to disk; a later process with the registry down resolves from them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sdk-disc-"));
    closers.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, "discovery.cache");
    const r = registrar(client(), "/disk");
    await r.register({ service: "s", id: "1", address: "127.0.0.1", port: 1 });
    const d = discovery(client(), "/disk", { cacheFile: file, cacheDebounceMs: 10 });
    const live = await d.resolve("s");
    await d.flush();
    const onDisk = await loadSnapshot(file);
    expect(onDisk?.ok && onDisk.value.services.s?.instances.map((i) => i.id)).toEqual(["1"]);

    const down = client({ endpoints: ["127.0.0.1:1"], retryDeadlineMs: 200 });
    const later = discovery(down, "/disk", { cacheFile: file, resolveTimeoutMs: 300 });
    const snap = await later.resolve("s");
    expect(snap).toMatchObject({ source: "disk", stale: true, revision: live.revision });
    expect(snap.instances).toEqual(live.instances);
  });

  describe("through a fault proxy", () => {
    let proxy: FaultProxy;
    beforeAll(async () => {
      const [host, port] = cluster.endpoints[0]!.split(":");
      proxy = await startFaultProxy({ target: { host: host!, port: Number(port) } });
    });
    afterAll(async () => {
      await proxy?.close();
    });

    it("partition: discovery keeps serving the cached set marked stale, then converges after heal (with compaction)", async () => {
      const direct = client();
      const r = registrar(direct, "/pt", 30);
      for (const id of ["a", "b", "c"])
        await r.register({ service: "s", id, address: "127.0.0.1", port: 9000 });
      const viaProxy = client({ endpoints: [proxy.endpoint] });
      const d = discovery(viaProxy, "/pt");
      const snaps: ServiceSnapshot[] = [];
      d.watch("s", (s) => snaps.push(s));
      expect((await d.resolve("s")).instances.length).toBe(3);

      proxy.partition();
      await until(
        () => d.peek("s")!.stale,
        5_000,
        () => "stale",
      );
      // The registry changes while discovery cannot see it; then history is compacted away.
      await r.deregister("s", "a");
      await r.register({ service: "s", id: "d", address: "127.0.0.1", port: 9001 });
      const head = (await direct.status()).header!.revision;
      await direct.compact(head);
      await sleep(500);
      const during = await d.resolve("s");
      expect(during.stale).toBe(true);
      expect(during.staleForMs).toBeGreaterThan(0);
      expect(during.instances.map((i) => i.id)).toEqual(["a", "b", "c"]);

      const compacted: unknown[] = [];
      const onCompacted = (m: unknown) => compacted.push(m);
      diagnostics.subscribe("sdk:watch:compacted", onCompacted);
      closers.push(() => diagnostics.unsubscribe("sdk:watch:compacted", onCompacted));
      proxy.heal();
      proxy.resetAll();
      await until(
        () => {
          const s = d.peek("s")!;
          return !s.stale && s.instances.map((i) => i.id).join() === "b,c,d";
        },
        10_000,
        () => `converged (now ${JSON.stringify(d.peek("s")?.instances.map((i) => i.id))})`,
      );
      // The resume revision had been compacted: discovery re-listed rather than missing events.
      expect(compacted.length).toBeGreaterThanOrEqual(1);
      // Never an empty set on the way.
      expect(snaps.every((s) => s.instances.length > 0)).toBe(true);
    });
  });

  it("registry paused (SIGSTOP): lease reported lost within TTL + 200 ms; after SIGCONT the SDK re-registers", async () => {
    const ttlS = 2;
    const c = client({ requestTimeoutMs: 500 });
    const r = registrar(c, "/stop", ttlS);
    await r.register({ service: "s", id: "1", address: "127.0.0.1", port: 1 });
    const old = r.leaseId!;
    await sleep(1_000); // a few keep-alives in
    let lostAt = 0;
    r.once("lost", () => (lostAt = performance.now()));
    const rereg = new Promise<bigint>((res) => r.once("reregistered", (e) => res(e.leaseId)));
    const member = cluster.members[0]!;
    const pausedAt = performance.now();
    member.pause();
    try {
      await until(
        () => lostAt > 0,
        ttlS * 1000 + 2_000,
        () => "lease lost",
      );
      console.log(`lease lost ${Math.round(lostAt - pausedAt)} ms after SIGSTOP (TTL ${ttlS * 1000} ms)`);
      expect(lostAt - pausedAt).toBeLessThanOrEqual(ttlS * 1000 + 200);
      await sleep(500);
    } finally {
      member.resume();
    }
    const fresh = await rereg;
    expect(fresh).not.toBe(old);
    await until(
      async () => (await c.get("/stop/services/s/1"))?.lease === fresh,
      10_000,
      () => "key under the new lease",
    );
    const out = await etcdctl(["get", "--prefix", "/stop/services/", "--print-value-only"]);
    expect(JSON.parse(out.stdout.trim()).Addr).toBe("127.0.0.1:1");
  });

  it.runIf(process.env.REGMESH_LONG === "1")(
    "long outage (REGMESH_LONG): registry paused 30 s; discovery serves stale, then everything recovers",
    async () => {
      const c = client({ requestTimeoutMs: 1_000 });
      const r = registrar(c, "/long", 3);
      for (const id of ["a", "b"]) await r.register({ service: "s", id, address: "127.0.0.1", port: 7000 });
      const d = discovery(client(), "/long");
      expect((await d.resolve("s")).instances.length).toBe(2);
      const member = cluster.members[0]!;
      let rereg = 0;
      r.on("reregistered", () => rereg++);
      member.pause();
      try {
        await sleep(30_000);
        const during = await d.resolve("s");
        expect(during.stale).toBe(true);
        expect(during.staleForMs).toBeGreaterThan(25_000);
        expect(during.instances.length).toBe(2);
      } finally {
        member.resume();
      }
      await until(
        () => rereg > 0,
        20_000,
        () => "re-registered",
      );
      await until(
        () => {
          const s = d.peek("s")!;
          return !s.stale && s.instances.length === 2;
        },
        20_000,
        () => "fresh again",
      );
    },
  );
});
