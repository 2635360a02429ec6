// The undici dispatcher on a real registry: real node:http servers registered through the
// Registrar; undici `request()` and `fetch()` to `http://svc/...` go to the instance the Mesh
// picks. Even spread, Host header, a killed server retried elsewhere, POST not retried unless
// asked, per-try timeout, pass-through, and a clear error when there is no instance.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { type Cluster, freePort, registryKindFromEnv, startCluster } from "@regmesh/testkit";
import { type Dispatcher, fetch, request } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Policy } from "../../src/core/policy.js";
import {
  createMeshDispatcher,
  MeshDispatchErrorCode,
  type MeshDispatcherOptions,
  MeshNoInstanceError,
} from "../../src/integrations/undici.js";
import type { Mesh } from "../../src/mesh/mesh.js";
import type { PolicyStore } from "../../src/mesh/policies.js";
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

interface Answer {
  name: string;
  host: string;
  method: string;
  url: string;
  body: string;
}

/** A server answering `statusCode` with its name and what it received, `delayMs` late. */
async function startServer(
  name: string,
  delayMs = 0,
  statusCode = 200,
): Promise<{ server: Server; port: number; kill: () => void }> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const answer: Answer = {
        name,
        host: req.headers.host ?? "",
        method: req.method ?? "",
        url: req.url ?? "",
        body: Buffer.concat(chunks).toString(),
      };
      const send = () => {
        res.statusCode = statusCode;
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify(answer));
      };
      if (delayMs > 0) setTimeout(send, delayMs).unref();
      else send();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const kill = () => {
    server.close();
    server.closeAllConnections();
  };
  closers.push(kill);
  return { server, port: (server.address() as AddressInfo).port, kill };
}

async function setup(
  instances: { id: string; port: number }[],
  policy: Omit<Policy, "schemaVersion" | "service"> | undefined,
  opts: MeshDispatcherOptions = {},
): Promise<{ mesh: Mesh; policies: PolicyStore; dispatcher: Dispatcher }> {
  const s = meshSetup(cluster, closers, "undici");
  await s.registrar.registerMany(
    instances.map((i) => ({
      service: "svc",
      id: i.id,
      address: "127.0.0.1",
      port: i.port,
      protocol: "http",
    })),
  );
  if (policy !== undefined) {
    const rev = await s.policies.put("svc", { schemaVersion: 1, service: "svc", ...policy }, 0n);
    await s.mesh.ready("svc");
    await until(() => s.mesh.policy("svc").modRevision === rev, 15_000);
  }
  const dispatcher = createMeshDispatcher(s.mesh, opts);
  closers.push(() => dispatcher.close());
  return { mesh: s.mesh, policies: s.policies, dispatcher };
}

async function get(dispatcher: Dispatcher, path = "/"): Promise<Answer> {
  const res = await request(`http://svc${path}`, { dispatcher });
  expect(res.statusCode).toBe(200);
  return (await res.body.json()) as Answer;
}

async function getAll(dispatcher: Dispatcher, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push((await get(dispatcher)).name);
  return out;
}

describe("undici dispatcher through the Mesh", () => {
  it("spreads request() and fetch() evenly over the instances, with Host: <service>", async () => {
    const servers = await Promise.all(["a", "b", "c"].map((n) => startServer(n)));
    const { dispatcher } = await setup(
      servers.map((s, i) => ({ id: "abc"[i]!, port: s.port })),
      undefined,
    );
    const viaRequest: Answer[] = [];
    for (let i = 0; i < 30; i++) viaRequest.push(await get(dispatcher, `/orders/${i}?q=1`));
    expect(tally(viaRequest.map((a) => a.name))).toEqual({ a: 10, b: 10, c: 10 });
    expect(viaRequest[7]).toMatchObject({ host: "svc", method: "GET", url: "/orders/7?q=1" });

    const viaFetch: string[] = [];
    for (let i = 0; i < 30; i++) {
      const res = await fetch("http://svc/f", { dispatcher });
      expect(res.status).toBe(200);
      const a = (await res.json()) as Answer;
      expect(a.host).toBe("svc");
      viaFetch.push(a.name);
    }
    expect(tally(viaFetch)).toEqual({ a: 10, b: 10, c: 10 });
    // Concurrent calls spread too (one pick per request, on the event loop).
    const concurrent = await Promise.all(Array.from({ length: 30 }, () => get(dispatcher)));
    expect(tally(concurrent.map((a) => a.name))).toEqual({ a: 10, b: 10, c: 10 });
    // The caller's own Host header is kept.
    const own = await request("http://svc/", { dispatcher, headers: { host: "orders.example" } });
    expect(((await own.body.json()) as Answer).host).toBe("orders.example");
  });

  it("can send the instance's address as the Host header instead", async () => {
    const a = await startServer("a");
    const { dispatcher } = await setup([{ id: "a", port: a.port }], undefined, { hostHeader: "instance" });
    expect((await get(dispatcher)).host).toBe(`127.0.0.1:${a.port}`);
  });

  it("retries a refused connection on another instance after a server is killed", async () => {
    const servers = await Promise.all(["a", "b", "c"].map((n) => startServer(n)));
    const { dispatcher, mesh } = await setup(
      servers.map((s, i) => ({ id: "abc"[i]!, port: s.port })),
      { retries: { attempts: 2, retryOn: ["connect-failure", "refused-stream", "reset"] } },
    );
    expect(tally(await getAll(dispatcher, 30))).toEqual({ a: 10, b: 10, c: 10 });
    servers[1]!.kill();
    const after = await getAll(dispatcher, 40);
    expect(Object.keys(tally(after)).sort()).toEqual(["a", "c"]);
    // The dead instance was tried and its failures were reported.
    const b = mesh.breakerStates().find((x) => x.instanceId === "b");
    expect(b?.failures ?? 0).toBeGreaterThanOrEqual(1);
    // fetch too.
    for (let i = 0; i < 6; i++) {
      const res = await fetch("http://svc/", { dispatcher });
      expect(["a", "c"]).toContain(((await res.json()) as Answer).name);
    }
  });

  it("does not retry a POST unless configured; retries it (body and all) when it is", async () => {
    const live = await startServer("live");
    const deadPort = await freePort();
    const instances = [
      { id: "dead", port: deadPort },
      { id: "live", port: live.port },
    ];
    const policy = { retries: { attempts: 2 }, outlierDetection: { consecutiveFailures: 0 } };
    const fires = (mesh: Mesh, id: string) =>
      mesh.breakerStates().find((b) => b.instanceId === id)?.fires ?? 0;

    const plain = await setup(instances, policy);
    const results: (string | (Error & { code?: string }))[] = [];
    // Round-robin over two: the first or the second POST meets the dead instance.
    for (let i = 0; i < 4; i++) {
      results.push(
        await request("http://svc/orders", {
          dispatcher: plain.dispatcher,
          method: "POST",
          body: "order-1",
        }).then(
          async (res) => ((await res.body.json()) as Answer).name,
          (err: unknown) => err as Error & { code?: string },
        ),
      );
    }
    const failed = results.filter((r) => typeof r !== "string");
    expect(failed.length).toBeGreaterThanOrEqual(1);
    for (const e of failed) expect(e.code).toBe("ECONNREFUSED");
    expect(results.indexOf(failed[0]!)).toBeLessThan(2);
    // One try per POST: a failed one was not sent again (and after its connection failure the
    // dead instance is held out for a while, so the next ones went to the live one).
    expect(fires(plain.mesh, "dead") + fires(plain.mesh, "live")).toBe(4);
    expect(fires(plain.mesh, "dead")).toBe(failed.length);

    const retrying = await setup(instances, policy, { retryNonIdempotent: true });
    const bodies: string[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await request("http://svc/orders", {
        dispatcher: retrying.dispatcher,
        method: "POST",
        body: "order-1",
      });
      const a = (await res.body.json()) as Answer;
      expect(a.name).toBe("live");
      bodies.push(a.body);
    }
    expect(bodies).toEqual(Array(4).fill("order-1"));
    expect(fires(retrying.mesh, "dead")).toBeGreaterThanOrEqual(1);
    expect(fires(retrying.mesh, "live")).toBe(4);
  });

  it("retries a 5xx elsewhere when the policy says so, and passes it through otherwise", async () => {
    const bad = await startServer("bad", 0, 503);
    const good = await startServer("good");
    const instances = [
      { id: "bad", port: bad.port },
      { id: "good", port: good.port },
    ];
    const fires = (mesh: Mesh, id: string) =>
      mesh.breakerStates().find((b) => b.instanceId === id)?.fires ?? 0;
    const retrying = await setup(instances, {
      retries: { attempts: 1, retryOn: ["5xx"] },
      outlierDetection: { consecutiveFailures: 0 },
    });
    expect(tally(await getAll(retrying.dispatcher, 6))).toEqual({ good: 6 });
    // Round-robin lands on "bad" every call but perhaps the first (the retry moves the rotation on).
    expect([5, 6]).toContain(fires(retrying.mesh, "bad"));

    const plain = await setup(instances, undefined);
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await request("http://svc/", { dispatcher: plain.dispatcher });
      statuses.push(res.statusCode);
      await res.body.dump();
    }
    expect(statuses.sort()).toEqual([200, 200, 503, 503]);
  });

  it("bounds each try by the policy's per-try timeout and retries elsewhere", async () => {
    const slow = await startServer("slow", 20_000);
    const fast = await startServer("fast");
    const { dispatcher, mesh } = await setup(
      [
        { id: "slow", port: slow.port },
        { id: "fast", port: fast.port },
      ],
      {
        retries: { attempts: 1, perTryTimeoutMs: 1_000, retryOn: ["timeout"] },
        outlierDetection: { consecutiveFailures: 0 },
      },
    );
    const t0 = performance.now();
    expect(tally(await getAll(dispatcher, 4))).toEqual({ fast: 4 });
    // Most calls met the slow one first (the retry moves the rotation on) and waited one per-try
    // timeout each, reported as failures of that instance.
    expect(performance.now() - t0).toBeLessThan(15_000); // not the slow server's 20 s
    const s = mesh.breakerStates().find((b) => b.instanceId === "slow");
    expect(s?.failures).toBeGreaterThanOrEqual(3);
    expect(s?.failures).toBe(s?.fires);
  });

  it("a caller's abort ends the try without counting it against the instance", async () => {
    const slow = await startServer("slow", 5_000);
    const { dispatcher, mesh } = await setup([{ id: "slow", port: slow.port }], {
      retries: { attempts: 2, retryOn: ["connect-failure", "reset", "timeout"] },
    });
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error("caller gave up")), 200).unref();
    const err = await request("http://svc/", { dispatcher, signal: ac.signal }).catch((e: unknown) => e);
    expect(String(err)).toMatch(/caller gave up/);
    expect(mesh.breakerStates()).toMatchObject([{ instanceId: "slow", fires: 1, failures: 0 }]);
    expect(mesh.quarantine("svc")).toEqual([]);
  });

  it("fails with a clear error naming the service and the reason when there is no instance", async () => {
    const { dispatcher } = await setup([], undefined);
    const err = await request("http://svc/x", { dispatcher }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MeshNoInstanceError);
    expect((err as MeshNoInstanceError).code).toBe(MeshDispatchErrorCode.NO_INSTANCE);
    expect((err as MeshNoInstanceError).reason).toBe("no-instance");
    expect(String((err as Error).message)).toMatch(/^service svc: .*no (available )?instances?/);
    const ferr = await fetch("http://svc/x", { dispatcher }).catch((e: unknown) => e);
    expect((ferr as Error & { cause?: unknown }).cause).toBeInstanceOf(MeshNoInstanceError);
  });

  it("passes origins that are not service names through to the Agent", async () => {
    const direct = await startServer("direct");
    const { dispatcher, mesh } = await setup([], undefined);
    const res = await request(`http://127.0.0.1:${direct.port}/p`, { dispatcher });
    expect(((await res.body.json()) as Answer).name).toBe("direct");
    expect(mesh.tracked()).toEqual([]);
  });
});
