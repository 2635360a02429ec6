// The routing shell on a real registry (etcd, or registry-node with REGMESH_REGISTRY): policies
// read and applied live, canary split, header rule over split, invalid policy kept out,
// compare-and-set conflicts, breaker and ejection taking failing instances out, retries that
// avoid the instance that failed.
import diagnostics from "node:diagnostics_channel";
import { type Cluster, registryKindFromEnv, startCluster } from "@regmesh/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Policy } from "../../src/core/policy.js";
import { seededRand } from "../../src/core/random.js";
import { EtcdClient } from "../../src/etcd/client.js";
import { systemClock } from "../../src/etcd/clock.js";
import { EtcdErrorCode } from "../../src/etcd/errors.js";
import { silentLogger } from "../../src/etcd/logger.js";
import { Mesh, NoInstanceError } from "../../src/mesh/mesh.js";
import { PolicyStore } from "../../src/mesh/policies.js";
import { Discovery } from "../../src/registry/discovery.js";
import { Registrar } from "../../src/registry/registrar.js";
import { until } from "../etcd/helpers.js";

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

let prefixSeq = 0;
async function setup(opts: { instances?: { id: string; version?: string }[]; caller?: string } = {}) {
  const prefix = `/mesh${++prefixSeq}`;
  const client = new EtcdClient({ endpoints: cluster.endpoints, requestTimeoutMs: 1_000 });
  const registrar = new Registrar({ client, prefix, ttlS: 5 });
  const discovery = new Discovery({ client, prefix });
  const policies = new PolicyStore({ client, prefix });
  const mesh = new Mesh({
    discovery,
    policies,
    clock: systemClock,
    logger: silentLogger,
    caller: opts.caller,
    rand: seededRand(prefixSeq),
  });
  closers.push(
    () => client.close(),
    () => registrar.close(),
    () => discovery.close(),
    () => policies.close(),
    () => mesh.close(),
  );
  const instances = opts.instances ?? [
    { id: "a", version: "v1" },
    { id: "b", version: "v1" },
    { id: "c", version: "v2" },
  ];
  await registrar.registerMany(
    instances.map((i, n) => ({
      service: "orders",
      id: i.id,
      address: "127.0.0.1",
      port: 10_000 + n,
      version: i.version,
    })),
  );
  return { prefix, client, registrar, discovery, policies, mesh };
}

const GET = { method: "GET", path: "/", headers: {} };

function counts(mesh: Mesh, n: number, req = GET): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const p = mesh.pick("orders", req);
    if (!p.ok) throw new Error(p.message);
    p.attempt.end({ kind: "response", status: 200 });
    m.set(p.attempt.instance.id, (m.get(p.attempt.instance.id) ?? 0) + 1);
  }
  return m;
}

const canary = (v2Weight: number): Policy => ({
  schemaVersion: 1,
  service: "orders",
  subsets: [
    { name: "stable", version: "v1" },
    { name: "canary", version: "v2" },
  ],
  routes: [
    {
      name: "beta-users",
      match: { headers: [{ name: "x-beta", exact: "1" }] },
      split: [{ subset: "canary", weight: 1 }],
    },
    {
      split: [
        { subset: "stable", weight: 100 - v2Weight },
        { subset: "canary", weight: v2Weight },
      ],
    },
  ],
});

describe("mesh: routing shell on a real registry", () => {
  it("routes round-robin over all instances by default", async () => {
    const { mesh } = await setup();
    await mesh.ready("orders");
    const c = counts(mesh, 300);
    expect([...c.keys()].sort()).toEqual(["a", "b", "c"]);
    for (const n of c.values()) expect(n).toBe(100);
  });

  it("applies a canary policy live: a 10/90 split within tolerance, then a header rule wins", async () => {
    const { mesh, policies } = await setup();
    await mesh.ready("orders");
    const applied: unknown[] = [];
    const sub = (m: unknown) => applied.push(m);
    diagnostics.subscribe("sdk:policy:applied", sub);
    try {
      const rev = await policies.put("orders", canary(10), 0n);
      expect(rev).toBeGreaterThan(0n);
      const t0 = Date.now();
      await until(() => mesh.policy("orders").modRevision === rev, 1_000);
      expect(Date.now() - t0).toBeLessThan(1_000);
      const c = counts(mesh, 4_000);
      const canaryShare = (c.get("c") ?? 0) / 4_000;
      expect(canaryShare).toBeGreaterThan(0.08);
      expect(canaryShare).toBeLessThan(0.12);
      const beta = counts(mesh, 50, { method: "GET", path: "/", headers: { "X-Beta": "1" } });
      expect([...beta.keys()]).toEqual(["c"]);
      expect(mesh.explain("orders", { method: "GET", path: "/", headers: { "x-beta": "1" } })?.ruleName).toBe(
        "beta-users",
      );
      expect(applied.length).toBeGreaterThanOrEqual(1);
    } finally {
      diagnostics.unsubscribe("sdk:policy:applied", sub);
    }
  });

  it("rejects an invalid policy written behind its back and keeps the last good one", async () => {
    const { mesh, policies, client, prefix } = await setup();
    await mesh.ready("orders");
    const good = await policies.put("orders", canary(0), 0n);
    await until(() => mesh.policy("orders").modRevision === good, 2_000);
    await client.put(
      `${prefix}/policies/orders`,
      JSON.stringify({ schemaVersion: 1, service: "orders", retries: { attempts: -1 } }),
    );
    await until(() => mesh.policy("orders").rejected !== undefined, 2_000);
    const state = mesh.policy("orders");
    expect(state.modRevision).toBe(good);
    expect(state.rejected?.errors.map((e) => e.path).join(",")).toContain("retries");
    const c = counts(mesh, 30);
    expect([...c.keys()].sort()).toEqual(["a", "b"]); // still the 100/0 split of the good policy
  });

  it("a concurrent policy write loses its compare-and-set with a clear error", async () => {
    const { policies } = await setup();
    const r1 = await policies.put("orders", canary(10), 0n);
    await policies.put("orders", canary(20), r1);
    const err = await policies.put("orders", canary(30), r1).catch((e: unknown) => e);
    expect((err as { code: string }).code).toBe(EtcdErrorCode.CONFLICT);
    expect(String(err)).toMatch(/changed since revision \d+ \(now \d+\)/);
    const bad = await policies
      .put("orders", { schemaVersion: 1, service: "orders", timeoutMs: "x" }, 0n)
      .catch((e) => e);
    expect(String(bad)).toMatch(/invalid policy for orders: .*timeoutMs/);
  });

  it("ejects an instance after consecutive failures and routes around it", async () => {
    const { mesh, policies } = await setup();
    await policies.put(
      "orders",
      {
        schemaVersion: 1,
        service: "orders",
        outlierDetection: { consecutiveFailures: 3, baseEjectionTimeMs: 60_000 },
      },
      0n,
    );
    await mesh.ready("orders");
    await until(() => mesh.policy("orders").source === "registry", 2_000);
    for (let i = 0; i < 3; i++) mesh.report("orders", "b", { kind: "connect-failure" });
    expect(mesh.ejected("orders")).toEqual(["b"]);
    const c = counts(mesh, 60);
    expect(c.has("b")).toBe(false);
    const why = mesh.explain("orders", GET)?.skipped.find((s) => s.instanceId === "b")?.why;
    expect(why).toBe("ejected");
  });

  it("opens an instance's breaker at the error threshold and skips it", async () => {
    const { mesh, policies } = await setup();
    await policies.put(
      "orders",
      {
        schemaVersion: 1,
        service: "orders",
        breaker: { errorThresholdPercentage: 50, volumeThreshold: 5, resetTimeoutMs: 60_000 },
        outlierDetection: { consecutiveFailures: 0 },
      },
      0n,
    );
    await mesh.ready("orders");
    await until(() => mesh.policy("orders").source === "registry", 2_000);
    for (let i = 0; i < 6; i++) mesh.report("orders", "a", { kind: "response", status: 503 });
    await until(() => mesh.breakerStates().some((b) => b.instanceId === "a" && b.state === "open"), 2_000);
    const c = counts(mesh, 40);
    expect(c.has("a")).toBe(false);
    expect(mesh.explain("orders", GET)?.skipped.find((s) => s.instanceId === "a")?.why).toBe("breaker-open");
  });

  it("call() retries a connect failure on another instance and gives up with a reason", async () => {
    const { mesh, policies } = await setup();
    await policies.put("orders", { schemaVersion: 1, service: "orders", retries: { attempts: 2 } }, 0n);
    await mesh.ready("orders");
    await until(() => mesh.policy("orders").source === "registry", 2_000);
    const seen: string[] = [];
    const v = await mesh.call(
      "orders",
      GET,
      async (a) => {
        seen.push(a.instance.id);
        if (seen.length === 1) throw new Error("ECONNREFUSED");
        return a.instance.id;
      },
      (r) => (r.ok ? { kind: "response", status: 200 } : { kind: "connect-failure" }),
    );
    expect(seen.length).toBe(2);
    expect(seen[1]).not.toBe(seen[0]);
    expect(v).toBe(seen[1]);

    const none = await setup({ instances: [] });
    await none.mesh.ready("orders");
    const err = await none.mesh
      .call(
        "orders",
        GET,
        async () => 1,
        () => ({ kind: "response", status: 200 }),
      )
      .catch((e) => e);
    expect(err).toBeInstanceOf(NoInstanceError);
    expect((err as NoInstanceError).reason).toBe("no-instance");
  });

  it("enforces a caller allow-list", async () => {
    const { mesh, policies } = await setup({ caller: "billing" });
    await policies.put("orders", { schemaVersion: 1, service: "orders", allowedCallers: ["checkout"] }, 0n);
    await mesh.ready("orders");
    await until(() => mesh.policy("orders").source === "registry", 2_000);
    const p = mesh.pick("orders", GET);
    expect(p.ok).toBe(false);
    if (!p.ok) expect(p.reason).toBe("caller-not-allowed");
    expect(mesh.pick("orders", { ...GET, caller: "checkout" }).ok).toBe(true);
  });

  it("rate-limits calls per process with the policy's token bucket", async () => {
    const { mesh, policies } = await setup();
    await policies.put(
      "orders",
      { schemaVersion: 1, service: "orders", rateLimit: { requestsPerSecond: 1, burst: 5 } },
      0n,
    );
    await mesh.ready("orders");
    await until(() => mesh.policy("orders").source === "registry", 2_000);
    let ok = 0;
    let limited = 0;
    for (let i = 0; i < 20; i++) {
      const p = mesh.pick("orders", GET);
      if (p.ok) {
        ok++;
        p.attempt.end({ kind: "response", status: 200 });
      } else if (p.reason === "rate-limited") limited++;
    }
    expect(ok).toBeGreaterThanOrEqual(5);
    expect(ok).toBeLessThanOrEqual(6);
    expect(limited).toBe(20 - ok);
  });
});
