// watchRemediation on a real Mesh against a real etcd, delivering through Webhooks to a
// node:http receiver: an instance's breaker opening (failures driven with mesh.report), a
// service's healthy instances falling under the threshold as instances are deregistered or
// report unhealthy (and firing again only after recovering), and a registry probe failing.
import http from "node:http";
import type { AddressInfo } from "node:net";
import {
  Discovery,
  EtcdClient,
  Mesh,
  PolicyStore,
  Registrar,
  seededRand,
  silentLogger,
  systemClock,
} from "@regmesh/sdk";
import { type Cluster, startEtcd, waitFor } from "@regmesh/testkit";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type WebhookPayload, Webhooks, watchRemediation, webhookSignature } from "../src/webhooks.js";

let cluster: Cluster;
const closers: (() => unknown)[] = [];

beforeAll(async () => {
  cluster = await startEtcd({ members: 1 });
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});
afterAll(async () => {
  await cluster?.stop({ remove: true });
});

const SECRET = "remediate-me";

async function receiver() {
  const got: { signature: string | undefined; body: string; json: WebhookPayload }[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      got.push({
        signature: req.headers["x-mesher-signature"] as string | undefined,
        body,
        json: JSON.parse(body) as WebhookPayload,
      });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  closers.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, got };
}

let seq = 0;
async function setup(opts: { minInstances: number; probe?: () => Promise<number> }) {
  seq += 1;
  const prefix = `/remediation${seq}`;
  const client = new EtcdClient({ endpoints: cluster.endpoints, requestTimeoutMs: 2_000 });
  const registrar = new Registrar({ client, prefix, ttlS: 10 });
  const discovery = new Discovery({ client, prefix });
  const policies = new PolicyStore({ client, prefix });
  const mesh = new Mesh({
    discovery,
    policies,
    clock: systemClock,
    logger: silentLogger,
    rand: seededRand(seq),
  });
  const rec = await receiver();
  const logLines: { msg: string }[] = [];
  const logger = pino({ level: "info" }, { write: (s: string) => logLines.push(JSON.parse(s)) });
  const webhooks = new Webhooks({
    urls: [rec.url],
    secret: SECRET,
    logger,
    self: { service: "checkout", instance: "checkout-1" },
    backoffInitialMs: 20,
  });
  const stop = watchRemediation({
    webhooks,
    mesh,
    minInstances: opts.minInstances,
    registryLatencyMs: 5_000,
    intervalMs: 100,
    logger,
    probeRegistry:
      opts.probe ??
      (async () => {
        const t = performance.now();
        await client.status();
        return performance.now() - t;
      }),
  });
  closers.push(
    () => client.close(),
    () => registrar.close(),
    () => discovery.close(),
    () => policies.close(),
    () => mesh.close(),
    () => webhooks.close(2_000),
    stop,
  );
  await registrar.registerMany(
    ["a", "b", "c"].map((id, n) => ({ service: "orders", id, address: "127.0.0.1", port: 10_000 + n })),
  );
  return { registrar, policies, mesh, rec, logLines };
}

function verified(got: { signature: string | undefined; body: string }): boolean {
  return got.signature === webhookSignature(SECRET, got.body);
}

describe("watchRemediation on a real mesh", () => {
  it("fires breaker-open when an instance's breaker opens", async () => {
    const { mesh, policies, rec } = await setup({ minInstances: 2 });
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
    await waitFor(() => mesh.policy("orders").source === "registry", {
      timeoutMs: 10_000,
      describe: () => "the breaker policy in force",
    });
    for (let i = 0; i < 6; i++) mesh.report("orders", "a", { kind: "response", status: 503 });
    await waitFor(() => rec.got.some((g) => g.json.type === "breaker-open"), {
      timeoutMs: 10_000,
      describe: () => `a breaker-open delivery (got ${JSON.stringify(rec.got.map((g) => g.json.type))})`,
    });
    const ev = rec.got.find((g) => g.json.type === "breaker-open")!;
    expect(verified(ev)).toBe(true);
    expect(ev.json).toMatchObject({
      type: "breaker-open",
      service: "orders",
      instanceId: "a",
      detail: { state: "open", address: "127.0.0.1", port: 10_000 },
      mesher: { service: "checkout", instance: "checkout-1" },
    });
    // The counts are read when the breaker opens, inside the failure that opened it.
    expect(ev.json.detail.failures).toBeGreaterThanOrEqual(4);
    // Three healthy instances meet the threshold of two, and the registry answers: nothing else.
    expect(rec.got.filter((g) => g.json.type !== "breaker-open")).toEqual([]);
    expect(rec.got.filter((g) => g.json.type === "breaker-open")).toHaveLength(1);
  });

  it("fires low-instances under the threshold, once, and again only after recovering", async () => {
    const { mesh, registrar, rec, logLines } = await setup({ minInstances: 2 });
    await mesh.ready("orders");
    await registrar.deregister("orders", "b");
    await registrar.deregister("orders", "c");
    await waitFor(() => rec.got.some((g) => g.json.type === "low-instances"), {
      timeoutMs: 10_000,
      describe: () => "a low-instances delivery",
    });
    const first = rec.got.find((g) => g.json.type === "low-instances")!;
    expect(verified(first)).toBe(true);
    expect(first.json).toMatchObject({
      service: "orders",
      detail: { healthy: 1, total: 1, minInstances: 2, unhealthy: [] },
    });

    await registrar.register({ service: "orders", id: "b", address: "127.0.0.1", port: 10_001 });
    await waitFor(() => logLines.some((l) => l.msg === "remediation: instances recovered"), {
      timeoutMs: 10_000,
      describe: () => "the recovery to be seen",
    });
    expect(rec.got.filter((g) => g.json.type === "low-instances")).toHaveLength(1);

    // An instance reporting itself unhealthy does not count.
    await registrar.update("orders", "a", { health: "unhealthy" });
    await waitFor(() => rec.got.filter((g) => g.json.type === "low-instances").length === 2, {
      timeoutMs: 10_000,
      describe: () => "a second low-instances delivery",
    });
    const second = rec.got.filter((g) => g.json.type === "low-instances")[1]!;
    expect(second.json.detail).toMatchObject({ healthy: 1, total: 2, unhealthy: ["a"] });
  });

  it("fires registry-latency when the probe fails", async () => {
    let down = false;
    const { mesh, rec } = await setup({
      minInstances: 1,
      probe: async () => {
        if (down) throw new Error("registry unreachable");
        return 3;
      },
    });
    await mesh.ready("orders");
    down = true;
    await waitFor(() => rec.got.some((g) => g.json.type === "registry-latency"), {
      timeoutMs: 10_000,
      describe: () => "a registry-latency delivery",
    });
    const ev = rec.got.find((g) => g.json.type === "registry-latency")!;
    expect(verified(ev)).toBe(true);
    expect(ev.json).toMatchObject({
      service: null,
      detail: { down: true, error: "registry unreachable", thresholdMs: 5_000 },
    });
  });
});
