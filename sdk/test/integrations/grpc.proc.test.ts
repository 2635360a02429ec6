// The grpc-js resolver and LB policy on a real registry: three real grpc-js servers registered
// through the Registrar, a real grpc-js client on `registry:///<service>`. Round-robin spreads
// exactly evenly; a killed server stops getting calls once its failure is seen; registry changes
// (new instance, policy split, path rule) are honoured live.
import {
  type Client,
  credentials,
  Metadata,
  makeGenericClientConstructor,
  Server,
  ServerCredentials,
  type ServiceDefinition,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import { type Cluster, freePort, registryKindFromEnv, startCluster } from "@regmesh/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Policy } from "../../src/core/policy.js";
import { EtcdClient } from "../../src/etcd/client.js";
import { systemClock } from "../../src/etcd/clock.js";
import { silentLogger } from "../../src/etcd/logger.js";
import { installRegistryResolver, registryTarget } from "../../src/integrations/grpc.js";
import { Mesh } from "../../src/mesh/mesh.js";
import { PolicyStore } from "../../src/mesh/policies.js";
import { Discovery } from "../../src/registry/discovery.js";
import { until } from "../etcd/helpers.js";
import { meshSetup, tally } from "./helpers.js";

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

// A tiny service with JSON messages: WhoAmI and Canary both answer with the server's name.
const json = {
  requestSerialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  requestDeserialize: (b: Buffer) => JSON.parse(b.toString()) as unknown,
  responseSerialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  responseDeserialize: (b: Buffer) => JSON.parse(b.toString()) as { name: string },
};
const Echo: ServiceDefinition = {
  whoAmI: { path: "/test.Echo/WhoAmI", requestStream: false, responseStream: false, ...json },
  canary: { path: "/test.Echo/Canary", requestStream: false, responseStream: false, ...json },
};
const EchoClient = makeGenericClientConstructor(Echo, "Echo");
type EchoClient = Client & {
  whoAmI(
    req: object,
    md: Metadata,
    opts: { deadline: number },
    cb: (err: ServiceError | null, res?: { name: string }) => void,
  ): void;
  canary(
    req: object,
    md: Metadata,
    opts: { deadline: number },
    cb: (err: ServiceError | null, res?: { name: string }) => void,
  ): void;
};

/** A server answering with its name, or failing every call with `failWith` and counting them. */
async function startServer(
  name: string,
  failWith?: number,
): Promise<{ server: Server; port: number; served: () => number }> {
  const server = new Server();
  let served = 0;
  const answer = (
    _call: unknown,
    cb: (err: { code: number; details: string } | null, res?: { name: string }) => void,
  ) => {
    served += 1;
    if (failWith === undefined) cb(null, { name });
    else cb({ code: failWith, details: `${name} refuses` });
  };
  server.addService(Echo, { whoAmI: answer, canary: answer });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  closers.push(() => server.forceShutdown());
  return { server, port, served: () => served };
}

function call(
  client: EchoClient,
  method: "whoAmI" | "canary" = "whoAmI",
  md = new Metadata(),
): Promise<{ ok: true; name: string } | { ok: false; code: number; details: string }> {
  return new Promise((resolve) =>
    client[method]({}, md, { deadline: Date.now() + 10_000 }, (err, res) =>
      resolve(err ? { ok: false, code: err.code, details: err.details } : { ok: true, name: res!.name }),
    ),
  );
}

async function names(
  client: EchoClient,
  n: number,
  method: "whoAmI" | "canary" = "whoAmI",
): Promise<string[]> {
  const out: string[] = [];
  // Batches of concurrent calls: picks still happen one at a time on the event loop.
  for (let i = 0; i < n; i += 10) {
    const batch = await Promise.all(Array.from({ length: Math.min(10, n - i) }, () => call(client, method)));
    for (const r of batch) {
      if (!r.ok) throw new Error(`call failed: ${r.code} ${r.details}`);
      out.push(r.name);
    }
  }
  return out;
}

let schemeSeq = 0;

/** Three servers a, b (v1) and c (v2) registered as `svc`; a client on registry:///svc. */
async function setup(failing?: { name: string; code: number }) {
  const s = meshSetup(cluster, closers, "grpc");
  const servers = new Map<string, Awaited<ReturnType<typeof startServer>>>();
  for (const name of ["a", "b", "c"]) {
    servers.set(name, await startServer(name, failing?.name === name ? failing.code : undefined));
  }
  await s.registrar.registerMany(
    ["a", "b", "c"].map((id) => ({
      service: "svc",
      id,
      address: "127.0.0.1",
      port: servers.get(id)!.port,
      protocol: "grpc",
      version: id === "c" ? "v2" : "v1",
    })),
  );
  // One scheme per test, so each test's channel resolves through its own Mesh.
  const { scheme } = installRegistryResolver(s.mesh, { scheme: `registry${++schemeSeq}` });
  const client = new EchoClient(
    registryTarget("svc", scheme),
    credentials.createInsecure(),
  ) as unknown as EchoClient;
  closers.push(() => client.close());
  return { ...s, servers, client, scheme };
}

/** Calls until every one of `expected` answered (the channel connected to each). */
async function warm(client: EchoClient, expected: string[]): Promise<void> {
  const seen = new Set<string>();
  await until(
    async () => {
      for (const n of await names(client, 10)) seen.add(n);
      return expected.every((e) => seen.has(e));
    },
    20_000,
    () => `answers from ${expected.join(",")} (seen ${[...seen].join(",")})`,
    0,
  );
}

describe("grpc-js resolver and LB policy through the Mesh", () => {
  it("spreads calls exactly evenly with round-robin over the three servers", async () => {
    const { client } = await setup();
    await warm(client, ["a", "b", "c"]);
    expect(tally(await names(client, 300))).toEqual({ a: 100, b: 100, c: 100 });
  });

  it("keeps calls succeeding on the others when one server is killed", async () => {
    const { client, servers } = await setup();
    await warm(client, ["a", "b", "c"]);
    // A steady stream of concurrent calls across the kill.
    const results: { startedMs: number; endedMs: number; r: Awaited<ReturnType<typeof call>> }[] = [];
    let stop = false;
    const worker = async () => {
      while (!stop) {
        const startedMs = performance.now();
        const r = await call(client);
        results.push({ startedMs, endedMs: performance.now(), r });
      }
    };
    const workers = Array.from({ length: 8 }, worker);
    await new Promise((r) => setTimeout(r, 300));
    const killedMs = performance.now();
    servers.get("b")!.server.forceShutdown();
    await new Promise((r) => setTimeout(r, 1_500));
    stop = true;
    await Promise.all(workers);

    const failures = results.filter((x) => !x.r.ok);
    // With no failure at all (the kill fell between calls), every call after the kill counts.
    const firstFailureSeenMs = failures.length === 0 ? killedMs : Math.min(...failures.map((f) => f.endedMs));
    // Only calls already under way when the first failure was seen may fail.
    for (const f of failures) expect(f.startedMs).toBeLessThan(firstFailureSeenMs);
    // In flight on the killed server: its forced shutdown resets the streams (CANCELLED), or the
    // connection is gone (UNAVAILABLE).
    for (const f of failures) if (!f.r.ok) expect([status.UNAVAILABLE, status.CANCELLED]).toContain(f.r.code);
    const after = results.filter((x) => x.startedMs > Math.max(killedMs, firstFailureSeenMs));
    expect(after.length).toBeGreaterThan(50);
    expect(after.every((x) => x.r.ok)).toBe(true);
    const served = tally(after.map((x) => (x.r.ok ? x.r.name : "")));
    expect(Object.keys(served).sort()).toEqual(["a", "c"]);
    // Round-robin over the two survivors stays even (within the calls under way at the switch).
    expect(Math.abs(served.a! - served.c!)).toBeLessThanOrEqual(8);
  });

  it("sends calls to the connected server when the Mesh's protect mode picks unreachable ones", async () => {
    const { client, servers, mesh } = await setup();
    await warm(client, ["a", "b", "c"]);
    servers.get("b")!.server.forceShutdown();
    servers.get("c")!.server.forceShutdown();
    // Under the protect threshold (1 of 3 available) the Mesh stops excluding anything; the
    // picker still only uses READY connections. Calls in flight at the kill may fail.
    await until(
      async () => (await Promise.all(Array.from({ length: 10 }, () => call(client)))).every((r) => r.ok),
      20_000,
      () => "calls to succeed again",
      0,
    );
    expect(tally(await names(client, 60))).toEqual({ a: 60 });
    expect(
      mesh.explain("svc", { method: "POST", path: "/test.Echo/WhoAmI", headers: {} })?.instance,
    ).toBeDefined();
  });

  it("follows the registry: a new instance gets calls, a removed one stops getting them", async () => {
    const { client, registrar } = await setup();
    await warm(client, ["a", "b", "c"]);
    const d = await startServer("d");
    await registrar.register({
      service: "svc",
      id: "d",
      address: "127.0.0.1",
      port: d.port,
      protocol: "grpc",
    });
    await warm(client, ["d"]);
    expect(tally(await names(client, 400))).toEqual({ a: 100, b: 100, c: 100, d: 100 });
    await registrar.deregister("svc", "a");
    await until(
      async () => !(await names(client, 20)).includes("a"),
      20_000,
      () => "a to leave the rotation",
      0,
    );
    expect(tally(await names(client, 300))).toEqual({ b: 100, c: 100, d: 100 });
  });

  it("honours a policy change live: a canary split, a header rule and a method-path rule", async () => {
    const { client, policies, mesh } = await setup();
    await warm(client, ["a", "b", "c"]);
    const policy: Policy = {
      schemaVersion: 1,
      service: "svc",
      subsets: [
        { name: "stable", version: "v1" },
        { name: "canary", version: "v2" },
      ],
      routes: [
        {
          name: "beta",
          match: { headers: [{ name: "x-beta", exact: "1" }] },
          split: [{ subset: "canary", weight: 1 }],
        },
        {
          name: "canary-method",
          match: { path: { exact: "/test.Echo/Canary" } },
          split: [{ subset: "canary", weight: 1 }],
        },
        { split: [{ subset: "stable", weight: 1 }] },
      ],
    };
    const rev = await policies.put("svc", policy, 0n);
    await until(() => mesh.policy("svc").modRevision === rev, 15_000);
    expect(tally(await names(client, 100))).toEqual({ a: 50, b: 50 });
    expect(tally(await names(client, 20, "canary"))).toEqual({ c: 20 });
    const md = new Metadata();
    md.set("x-beta", "1");
    const beta = await Promise.all(Array.from({ length: 10 }, () => call(client, "whoAmI", md)));
    expect(beta.map((r) => (r.ok ? r.name : `error ${r.code}`))).toEqual(Array(10).fill("c"));
  });

  it("retries UNAVAILABLE on another server as the policy's retries say (grpc-js retry policy)", async () => {
    const { client, policies, mesh, servers } = await setup({ name: "b", code: status.UNAVAILABLE });
    const rev = await policies.put(
      "svc",
      {
        schemaVersion: 1,
        service: "svc",
        retries: { attempts: 2, retryOn: ["unavailable"] },
        // Keep b in the rotation (no ejection, no breaker) so every call may meet it.
        outlierDetection: { consecutiveFailures: 0 },
        breaker: { volumeThreshold: 1_000_000 },
      },
      0n,
    );
    await until(() => mesh.policy("svc").modRevision === rev, 15_000);
    // Until every server is connected (a call meeting only b may fail meanwhile).
    const seen = new Set<string>();
    await until(
      async () => {
        const r = await call(client);
        if (r.ok) seen.add(r.name);
        return seen.has("a") && seen.has("c") && servers.get("b")!.served() > 0;
      },
      20_000,
      () => "answers from a and c",
      0,
    );
    // One call at a time, so a retry's pick follows its own first pick in the rotation.
    const before = servers.get("b")!.served();
    const got: string[] = [];
    for (let i = 0; i < 30; i++) {
      const r = await call(client);
      expect(r.ok).toBe(true);
      if (r.ok) got.push(r.name);
    }
    expect(Object.keys(tally(got)).sort()).toEqual(["a", "c"]);
    expect(servers.get("b")!.served() - before).toBeGreaterThanOrEqual(9); // b was tried, and retried away from
    expect(mesh.breakerStates().find((x) => x.instanceId === "b")?.failures).toBeGreaterThanOrEqual(9);
  });

  it("fails calls with UNAVAILABLE naming the service when no instance is available", async () => {
    const { client, registrar } = await setup();
    await warm(client, ["a", "b", "c"]);
    for (const id of ["a", "b", "c"]) await registrar.deregister("svc", id);
    let last: Awaited<ReturnType<typeof call>> | undefined;
    await until(
      async () => {
        last = await call(client);
        return !last.ok;
      },
      20_000,
      () => "calls to fail",
      20,
    );
    expect(last).toMatchObject({ ok: false, code: status.UNAVAILABLE });
    if (last !== undefined && !last.ok) expect(last.details).toMatch(/svc/);
  });

  it("fails calls with UNAVAILABLE when the service cannot be resolved at all", async () => {
    // A registry that never answers and no disk cache: nothing to route on.
    const client = new EtcdClient({ endpoints: [`127.0.0.1:${await freePort()}`], requestTimeoutMs: 500 });
    const discovery = new Discovery({ client, resolveTimeoutMs: 1_000 });
    const policies = new PolicyStore({ client });
    const mesh = new Mesh({ discovery, policies, clock: systemClock, logger: silentLogger });
    closers.push(
      () => client.close(),
      () => discovery.close(),
      () => policies.close(),
      () => mesh.close(),
    );
    const { scheme } = installRegistryResolver(mesh, { scheme: `registry${++schemeSeq}` });
    const grpcClient = new EchoClient(
      registryTarget("svc", scheme),
      credentials.createInsecure(),
    ) as unknown as EchoClient;
    closers.push(() => grpcClient.close());
    const r = await call(grpcClient);
    expect(r).toMatchObject({ ok: false, code: status.UNAVAILABLE });
    if (!r.ok) expect(r.details).toMatch(/service svc is not resolved/);
  });

  it("applies the policy's rate limit and caller allow-list as final statuses", async () => {
    const { client, policies, mesh } = await setup();
    await warm(client, ["a", "b", "c"]);
    const rev = await policies.put(
      "svc",
      { schemaVersion: 1, service: "svc", rateLimit: { requestsPerSecond: 1, burst: 3 } },
      0n,
    );
    await until(() => mesh.policy("svc").modRevision === rev, 15_000);
    const results = await Promise.all(Array.from({ length: 10 }, () => call(client)));
    const limited = results.filter((r) => !r.ok);
    expect(results.filter((r) => r.ok).length).toBeLessThanOrEqual(4);
    expect(limited.length).toBeGreaterThanOrEqual(6);
    for (const r of limited) {
      expect(r).toMatchObject({ ok: false, code: status.RESOURCE_EXHAUSTED });
      if (!r.ok) expect(r.details).toMatch(/calls to svc are over 1\/s/);
    }
    const rev2 = await policies.put(
      "svc",
      { schemaVersion: 1, service: "svc", allowedCallers: ["checkout"] },
      rev,
    );
    await until(() => mesh.policy("svc").modRevision === rev2, 15_000);
    expect(await call(client)).toMatchObject({ ok: false, code: status.PERMISSION_DENIED });
  });

  it("keeps routing on the last known set while the registry is unreachable", async () => {
    const { client, mesh } = await setup();
    await warm(client, ["a", "b", "c"]);
    const member = cluster.members[0]!;
    await member.stop();
    try {
      await until(
        () => mesh.snapshot("svc")?.stale === true,
        20_000,
        () => "the set to go stale",
      );
      expect(mesh.snapshot("svc")?.instances.length).toBe(3);
      expect(tally(await names(client, 60))).toEqual({ a: 20, b: 20, c: 20 });
    } finally {
      member.start();
      await member.waitHealthy(30_000);
    }
  });
});
