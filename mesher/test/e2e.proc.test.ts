// The mesher end to end with real processes on loopback: apps, their meshers, a caller's
// mesher and a real registry (etcd by default; REGMESH_REGISTRY=registry-node for ours).

import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EtcdClient, PolicyStore, validatePolicy } from "@regmesh/sdk";
import { type Cluster, registryKindFromEnv, startCluster } from "@regmesh/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { call, type Reply, startApp, startMesher, until, World, workDir } from "./helpers.js";

let cluster: Cluster;
let dir: { path: string; remove(): void };
let w: World;

beforeAll(async () => {
  cluster = await startCluster({ kind: registryKindFromEnv("etcd") });
  dir = workDir();
  w = new World(cluster, dir.path);
});
afterEach(async () => {
  await w.cleanup();
});
afterAll(async () => {
  await cluster?.stop({ remove: true });
});

/** How long the registry stays down under load: short here, 30 s under `npm run test:long`. */
const REGISTRY_OUTAGE_MS = process.env.REGMESH_LONG === "1" ? 30_000 : 2_000;

/** A fixed-rate load: `rate` requests per second for `ms`, at most `concurrency` in flight. */
async function load(
  send: () => Promise<Reply>,
  opts: { rate: number; ms: number; concurrency: number; onTick?: (sent: number, inFlight: number) => void },
): Promise<{ replies: Reply[]; errors: unknown[] }> {
  const replies: Reply[] = [];
  const errors: unknown[] = [];
  const pending = new Set<Promise<void>>();
  const start = Date.now();
  const total = Math.floor((opts.rate * opts.ms) / 1000);
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / opts.rate;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    while (pending.size >= opts.concurrency) await Promise.race(pending);
    opts.onTick?.(i, pending.size);
    const p: Promise<void> = send().then(
      (r) => void replies.push(r),
      (e) => void errors.push(e),
    );
    const tracked = p.finally(() => pending.delete(tracked));
    pending.add(tracked);
  }
  await Promise.all(pending);
  return { replies, errors };
}

describe("mesher end to end", () => {
  it("registers, discovers and proxies HTTP/1.1 by Host, HTTP_PROXY form and path prefix, with trace context", async () => {
    const prefix = w.prefix();
    await w.instance(prefix, "greeter", "g1");
    await w.instance(prefix, "greeter", "g2");
    const callerApp = await startApp("caller-app", dir.path);
    w.cleanups.push(() => callerApp.proc.stop());
    const caller = await w.caller(prefix, [
      `--service=caller`,
      `--app-port=${callerApp.port}`,
      "--health-check=none",
    ]);
    await w.seesAll(caller, "greeter", ["g1", "g2"]);

    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const r = await call(caller.ports.outbound, {
      host: "greeter",
      headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, "x-request-id": "req-1" },
    });
    expect(r.status).toBe(200);
    expect(r.json?.headers?.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
    expect(r.json?.headers?.traceparent).not.toContain("00f067aa0ba902b7");
    expect(r.json?.headers?.["x-request-id"]).toBe("req-1");
    expect(r.json?.headers?.["x-mesher-caller"]).toBe("caller");
    expect(r.headers["x-request-id"]).toBe("req-1");

    const viaProxyForm = await call(caller.ports.outbound, { path: "http://greeter/hello?x=1" });
    expect(viaProxyForm.status).toBe(200);
    expect(viaProxyForm.json?.headers?.host).toBe("greeter");
    const viaPath = await call(caller.ports.outbound, { path: "/greeter/hello?x=2" });
    expect(viaPath.status).toBe(200);
    expect((viaPath.json as { url?: string }).url).toBe("/hello?x=2");
    const created = await call(caller.ports.outbound, { host: "greeter" });
    expect(created.json?.headers?.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(created.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);

    const none = await call(caller.ports.outbound, { host: "nosuch" });
    expect(none.status).toBe(503);
    expect(none.json?.error?.reason).toBe("no-instance");
    expect(none.json?.error?.traceId).toMatch(/^[0-9a-f]{32}$/);

    const endpoints = (await caller.admin("/v1/endpoints")) as {
      service: string;
      instances: { id: string }[];
    }[];
    expect(
      endpoints
        .find((e) => e.service === "greeter")
        ?.instances.map((i) => i.id)
        .sort(),
    ).toEqual(["g1", "g2"]);
    const calls = (await caller.admin(`/v1/calls?trace=${traceId}`)) as { callee: string; status: number }[];
    expect(calls.length).toBe(1);
    expect(calls[0]).toMatchObject({ callee: "greeter", status: 200 });
    const topology = (await caller.admin("/v1/topology")) as {
      caller: string;
      callee: string;
      requests: number;
    }[];
    expect(topology.find((e) => e.callee === "greeter")?.caller).toBe("caller");
    const metrics = (await caller.admin("/metrics")) as string;
    expect(metrics).toMatch(/mesher_requests_total\{.*callee="greeter".*\} \d+/);
    expect(metrics).toContain("mesher_request_duration_seconds_bucket");
    expect(metrics).toContain("mesher_process_resident_memory_bytes");
    const explain = (await caller.admin("/v1/explain?service=greeter")) as { decision: { reason: string } };
    expect(explain.decision.reason).toBe("picked");
    expect(await caller.admin("/healthz")).toBe("ok\n");
    expect(((await caller.admin("/readyz")) as { ready: boolean }).ready).toBe(true);
  });

  it("kill -9 of an instance under a fixed rate of GETs: no non-2xx, and no try on it 100 ms after the first failure", async () => {
    const prefix = w.prefix();
    await w.instance(prefix, "greeter", "k1");
    await w.instance(prefix, "greeter", "k2");
    const victim = await w.instance(prefix, "greeter", "k3");
    const caller = await w.caller(prefix);
    await w.seesAll(caller, "greeter", ["k1", "k2", "k3"]);
    let killed = false;
    const result = await load(() => call(caller.ports.outbound, { host: "greeter" }), {
      rate: 150,
      ms: 3_000,
      concurrency: 16,
      onTick: (sent) => {
        if (sent === 150 && !killed) {
          killed = true;
          void victim.app.proc.kill9();
          void victim.mesher.proc.kill9();
        }
      },
    });
    expect(result.errors).toEqual([]);
    const bad = result.replies.filter((r) => r.status < 200 || r.status > 299);
    expect(bad.map((r) => r.body)).toEqual([]);
    const calls = (await caller.admin("/v1/calls?limit=2000")) as {
      tries?: { instance: string; outcome: string; atMs: number; endMs: number }[];
    }[];
    const tries = calls.flatMap((c) => c.tries ?? []).filter((t) => t.instance === "k3");
    // When this mesher saw its first failure on k3 (the outcome's time, not the try's start).
    const failures = tries.filter((t) => t.outcome !== "200").map((t) => t.endMs);
    expect(failures.length).toBeGreaterThan(0);
    const firstFailure = Math.min(...failures);
    const late = tries.filter((t) => t.atMs > firstFailure + 100);
    const timeline = tries
      .sort((a, b) => a.atMs - b.atMs)
      .map((t) => `${t.atMs - firstFailure} ${t.outcome}`)
      .join(", ");
    expect(late, timeline).toEqual([]);
  });

  it("kill -9 under POSTs: failures no more than the requests in flight at the kill, each with a reason", async () => {
    const prefix = w.prefix();
    await w.instance(prefix, "greeter", "p1");
    const victim = await w.instance(prefix, "greeter", "p2");
    const caller = await w.caller(prefix);
    await w.seesAll(caller, "greeter", ["p1", "p2"]);
    let inFlightAtKill = -1;
    const result = await load(
      () =>
        call(caller.ports.outbound, {
          host: "greeter",
          method: "POST",
          path: "/orders?delay=20",
          body: '{"n":1}',
          headers: { "content-type": "application/json" },
        }),
      {
        rate: 100,
        ms: 2_000,
        concurrency: 8,
        onTick: (sent, inFlight) => {
          if (sent === 80 && inFlightAtKill < 0) {
            inFlightAtKill = inFlight;
            void victim.app.proc.kill9();
            void victim.mesher.proc.kill9();
          }
        },
      },
    );
    expect(result.errors).toEqual([]);
    const failed = result.replies.filter((r) => r.status !== 200);
    expect(failed.length).toBeLessThanOrEqual(inFlightAtKill + 1);
    for (const f of failed) expect(f.json?.error?.reason, f.body).toMatch(/^[a-z-]+$/);
  });

  it("a canary policy change takes effect within 1 s and splits within tolerance", async () => {
    const prefix = w.prefix();
    await w.instance(prefix, "greeter", "v1a", ["--version=v1"]);
    await w.instance(prefix, "greeter", "v2a", ["--version=v2"]);
    const caller = await w.caller(prefix);
    await w.seesAll(caller, "greeter", ["v1a", "v2a"]);
    const client = new EtcdClient({ endpoints: cluster.endpoints });
    const store = new PolicyStore({ client, prefix });
    w.cleanups.push(
      () => client.close(),
      () => store.close(),
    );
    // Connect and compile the policy schema first: the clock below measures the policy's way
    // from the registry to the caller's mesher, not the dial or ajv's first compile.
    await client.get(`${prefix}/warm-up`);
    validatePolicy({ schemaVersion: 1, service: "greeter" });
    const t0 = Date.now();
    await store.put(
      "greeter",
      {
        schemaVersion: 1,
        service: "greeter",
        subsets: [
          { name: "stable", version: "v1" },
          { name: "canary", version: "v2" },
        ],
        routes: [
          {
            split: [
              { subset: "stable", weight: 90 },
              { subset: "canary", weight: 10 },
            ],
          },
        ],
      },
      0n,
    );
    const tPut = Date.now() - t0;
    await until(
      async () => {
        const p = (await caller.admin("/v1/policies")) as { service: string; source: string }[];
        return p.find((x) => x.service === "greeter")?.source === "registry";
      },
      3_000,
      "policy applied",
    );
    expect(Date.now() - t0, `put took ${tPut} ms`).toBeLessThan(1_000);
    let canary = 0;
    const n = 1_000;
    for (let i = 0; i < n; i++) {
      const r = await call(caller.ports.outbound, { host: "greeter" });
      expect(r.status).toBe(200);
      if (r.json?.name === "v2a") canary++;
    }
    expect(canary / n).toBeGreaterThan(0.06);
    expect(canary / n).toBeLessThan(0.14);
  });

  it("health checks take an instance out of rotation after N failures and back after M successes", async () => {
    const prefix = w.prefix();
    const flag = join(dir.path, `unhealthy-${w.seq}`);
    await w.instance(prefix, "greeter", "h1");
    const app = await startApp("h2", dir.path, { APP_UNHEALTHY: flag });
    const m = await startMesher("h2", dir.path, [
      ...w.registryArgs(),
      `--registry-prefix=${prefix}`,
      "--service=greeter",
      "--instance-id=h2",
      `--app-port=${app.port}`,
      "--inbound-listen=127.0.0.1:0",
      "--health-check=http:/health",
      "--health-interval=100ms",
      "--health-unhealthy-threshold=3",
      "--health-healthy-threshold=2",
    ]);
    w.cleanups.push(
      () => m.proc.stop(),
      () => app.proc.stop(),
    );
    const caller = await w.caller(prefix);
    await w.seesAll(caller, "greeter", ["h1", "h2"]);
    const health = async () => {
      const eps = (await caller.admin("/v1/endpoints")) as {
        service: string;
        instances: { id: string; health?: string }[];
      }[];
      return eps.find((e) => e.service === "greeter")?.instances.find((i) => i.id === "h2")?.health;
    };
    writeFileSync(flag, "");
    await until(async () => (await health()) === "unhealthy", 10_000, "h2 marked unhealthy");
    expect(((await m.admin("/readyz")) as { ready: boolean }).ready).toBe(false);
    for (let i = 0; i < 20; i++)
      expect((await call(caller.ports.outbound, { host: "greeter" })).json?.name).toBe("h1");
    rmSync(flag);
    await until(async () => (await health()) === "healthy", 10_000, "h2 healthy again");
    await w.seesAll(caller, "greeter", ["h1", "h2"]);
  });

  it("SIGTERM drains in-flight calls and the instance leaves other meshers' views before the process exits", async () => {
    const prefix = w.prefix();
    await w.instance(prefix, "greeter", "d1");
    const leaving = await w.instance(prefix, "greeter", "d2");
    const caller = await w.caller(prefix);
    await w.seesAll(caller, "greeter", ["d1", "d2"]);
    // Slow calls straight to d2's inbound port, so they are surely on d2 when SIGTERM comes.
    const slow = Array.from({ length: 5 }, () =>
      call(leaving.mesher.ports.inbound!, { path: "/slow?delay=1500" }),
    );
    await new Promise((r) => setTimeout(r, 300));
    let goneAt = 0;
    const watching = until(
      async () => {
        const eps = (await caller.admin("/v1/endpoints")) as {
          service: string;
          instances: { id: string }[];
        }[];
        const ids = eps.find((e) => e.service === "greeter")?.instances.map((i) => i.id) ?? [];
        if (!ids.includes("d2")) goneAt = Date.now();
        return goneAt > 0;
      },
      10_000,
      "d2 gone from the caller's view",
    );
    leaving.mesher.proc.killNow("SIGTERM");
    const exit = leaving.mesher.proc.exited.then((s) => ({ ...s, at: Date.now() }));
    const replies = await Promise.all(slow);
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    await watching;
    const e = await exit;
    expect(e.code).toBe(0);
    expect(goneAt).toBeLessThan(e.at);
  });

  it("registry stopped: no failed request; a mesher restarted while it is down routes from its disk cache", async () => {
    const prefix = w.prefix();
    await w.instance(prefix, "greeter", "r1");
    await w.instance(prefix, "greeter", "r2");
    const callerDir = `caller-registry-${w.seq}`;
    const caller = await startMesher(callerDir, dir.path, [
      ...w.registryArgs(),
      `--registry-prefix=${prefix}`,
    ]);
    w.cleanups.push(() => caller.proc.stop());
    await w.seesAll(caller, "greeter", ["r1", "r2"]);
    await new Promise((r) => setTimeout(r, 600)); // the disk cache is written (debounced)
    for (const m of cluster.members) await m.stop();
    try {
      const result = await load(() => call(caller.ports.outbound, { host: "greeter" }), {
        rate: 50,
        ms: REGISTRY_OUTAGE_MS,
        concurrency: 4,
      });
      expect(result.errors).toEqual([]);
      expect(result.replies.filter((r) => r.status !== 200).map((r) => r.body)).toEqual([]);
      await caller.proc.stop();
      const again = await startMesher(callerDir, dir.path, [
        ...w.registryArgs(),
        `--registry-prefix=${prefix}`,
      ]);
      w.cleanups.push(() => again.proc.stop());
      const r = await call(again.ports.outbound, { host: "greeter" });
      expect(r.status, r.body).toBe(200);
      const eps = (await again.admin("/v1/endpoints")) as {
        service: string;
        source: string;
        stale: boolean;
      }[];
      expect(eps.find((e) => e.service === "greeter")).toMatchObject({ source: "disk", stale: true });
    } finally {
      for (const m of cluster.members) await m.start();
      await cluster.waitHealthy?.();
    }
  });
});
