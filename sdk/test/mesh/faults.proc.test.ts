// Registry faults under a steady stream of calls routed by the SDK (Mesh) to live instances:
// the registry down and restarted, its leader killed, every lease gone at once. No call may fail
// that a healthy instance could serve; registrations come back; the cache converges to the
// registry's state. Outages last 3 s here and 30 s under `npm run test:long`.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { type Cluster, registryKindFromEnv, runEtcdctl, startCluster } from "@regmesh/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EtcdClient } from "../../src/etcd/client.js";
import { systemClock } from "../../src/etcd/clock.js";
import { silentLogger } from "../../src/etcd/logger.js";
import { Mesh } from "../../src/mesh/mesh.js";
import { PolicyStore } from "../../src/mesh/policies.js";
import { Discovery } from "../../src/registry/discovery.js";
import { listPrefix } from "../../src/registry/list.js";
import { Registrar } from "../../src/registry/registrar.js";
import { sleep, until } from "../etcd/helpers.js";

const OUTAGE_MS = process.env.REGMESH_LONG === "1" ? 30_000 : 3_000;

let cluster: Cluster;
const closers: (() => unknown)[] = [];
let seq = 0;

beforeAll(async () => {
  cluster = await startCluster({ kind: registryKindFromEnv("etcd"), members: 3 });
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});
afterAll(async () => {
  await cluster?.stop({ remove: true });
});

function client(): EtcdClient {
  const c = new EtcdClient({
    endpoints: cluster.endpoints,
    requestTimeoutMs: 1_000,
    watchProgressIntervalMs: 300,
    watchIdleTimeoutMs: 1_500,
  });
  closers.push(() => c.close());
  return c;
}

/** `n` live HTTP instances of "orders", each registered by its own process-like Registrar. */
async function instances(prefix: string, n: number): Promise<Registrar[]> {
  const regs: Registrar[] = [];
  for (let i = 0; i < n; i++) {
    const server = http.createServer((_req, res) => res.end(`i${i}`));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    closers.push(() => new Promise((r) => server.close(r)));
    server.keepAliveTimeout = 60_000;
    const reg = new Registrar({ client: client(), prefix, ttlS: 2 });
    closers.push(() => reg.close().catch(() => {}));
    await reg.register({
      service: "orders",
      id: `i${i}`,
      address: "127.0.0.1",
      port: (server.address() as AddressInfo).port,
    });
    regs.push(reg);
  }
  return regs;
}

const agent = new http.Agent({ keepAlive: true });
function get(host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: "/", agent, timeout: 2_000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
  });
}

async function caller(prefix: string) {
  const c = client();
  const discovery = new Discovery({ client: c, prefix, antiEntropyIntervalMs: 1_000 });
  const policies = new PolicyStore({ client: c, prefix });
  const mesh = new Mesh({ discovery, policies, clock: systemClock, logger: silentLogger });
  closers.push(
    () => mesh.close(),
    () => policies.close(),
    () => discovery.close(),
  );
  await mesh.ready("orders");
  return { mesh, discovery, client: c };
}

/** Calls every 20 ms until stopped; returns the failures with why. */
function steadyCalls(mesh: Mesh): { stop(): Promise<{ ok: number; failed: string[] }> } {
  let running = true;
  const failed: string[] = [];
  let ok = 0;
  const loop = (async () => {
    while (running) {
      try {
        const status = await mesh.call(
          "orders",
          { method: "GET", path: "/", headers: {} },
          (a) => get(a.instance.address, a.instance.port),
          (r) => (r.ok ? { kind: "response", status: r.value } : { kind: "connect-failure" }),
        );
        if (status === 200) ok++;
        else failed.push(`status ${status}`);
      } catch (err) {
        failed.push((err as Error).message);
      }
      await sleep(20);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { ok, failed };
    },
  };
}

/** The registry's listing and the caller's routed set agree. */
async function converged(prefix: string, mesh: Mesh, c: EtcdClient, want: number): Promise<void> {
  await until(async () => {
    const listed = (await listPrefix(c, `${prefix}/services/orders/`)).kvs.length;
    const snap = mesh.snapshot("orders");
    return (
      listed === want && snap?.instances.length === want && !snap.stale && mesh.held("orders").length === 0
    );
  }, 20_000);
}

async function leaderIndex(): Promise<number> {
  for (let i = 0; i < cluster.members.length; i++) {
    const m = cluster.members[i]!;
    if (!m.proc?.running) continue;
    const c = new EtcdClient({ endpoints: [m.endpoint], requestTimeoutMs: 1_000 });
    try {
      const s = await c.status();
      if (s.leader !== 0n && s.leader === s.header?.memberId) return i;
    } catch {
      // down
    } finally {
      c.close();
    }
  }
  return -1;
}

describe(`registry faults under calls (outage ${OUTAGE_MS} ms)`, () => {
  it("registry down, then restarted: no failed call; registrations come back; the cache converges", async () => {
    const prefix = `/faults${++seq}`;
    await instances(prefix, 3);
    const { mesh, client: c } = await caller(prefix);
    const calls = steadyCalls(mesh);
    await sleep(300);
    for (const m of cluster.members) await m.stop();
    await sleep(OUTAGE_MS);
    for (const m of cluster.members) await m.start();
    await cluster.waitHealthy();
    await converged(prefix, mesh, c, 3);
    const r = await calls.stop();
    expect(r.failed).toEqual([]);
    expect(r.ok).toBeGreaterThan(OUTAGE_MS / 100);
  });

  it("leader killed: no failed call; registrations stay", async () => {
    const prefix = `/faults${++seq}`;
    await instances(prefix, 3);
    const { mesh, client: c } = await caller(prefix);
    const calls = steadyCalls(mesh);
    await sleep(300);
    const li = await leaderIndex();
    expect(li).toBeGreaterThanOrEqual(0);
    await cluster.members[li]!.kill9();
    await until(async () => (await leaderIndex()) >= 0, 15_000);
    await sleep(Math.min(OUTAGE_MS, 5_000));
    await cluster.members[li]!.start();
    await cluster.waitHealthy();
    await converged(prefix, mesh, c, 3);
    const r = await calls.stop();
    expect(r.failed).toEqual([]);
  });

  it("every lease gone at once: the protect threshold keeps routing until the instances register again", async () => {
    const prefix = `/faults${++seq}`;
    const regs = await instances(prefix, 4);
    const { mesh, client: c } = await caller(prefix);
    const calls = steadyCalls(mesh);
    await sleep(300);
    const held: number[] = [];
    const watchHeld = setInterval(() => held.push(mesh.held("orders").length), 10);
    const ids = regs.map((r) => r.leaseId!.toString(16));
    const out = await runEtcdctl(["lease", "revoke", ...ids.slice(0, 1)], { endpoints: cluster.endpoints });
    expect(out.code, out.stderr).toBe(0);
    // Revoke the rest together, as a mass expiry would.
    await Promise.all(
      ids.slice(1).map((id) => runEtcdctl(["lease", "revoke", id], { endpoints: cluster.endpoints })),
    );
    await converged(prefix, mesh, c, 4);
    clearInterval(watchHeld);
    const r = await calls.stop();
    expect(r.failed).toEqual([]);
    expect(Math.max(...held)).toBeGreaterThanOrEqual(2);
  });
});
