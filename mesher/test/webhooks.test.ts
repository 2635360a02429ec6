// Remediation webhooks against a node:http receiver on loopback: the body is signed so a receiver
// can verify it, 5xx/429/network errors/timeouts are retried with the same delivery id, other
// 4xx are not, the queue is bounded (oldest dropped with a log line) and close() waits up to its
// deadline. watchRemediation's decisions run on a manual clock with a fake mesh and probe.
import { createHmac, timingSafeEqual } from "node:crypto";
import diagnostics from "node:diagnostics_channel";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { setImmediate as flush } from "node:timers/promises";
import { type BreakerInfo, type Instance, ManualClock, type Mesh } from "@regmesh/sdk";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import {
  type RemediationEvent,
  type WebhookPayload,
  Webhooks,
  type WebhooksOptions,
  watchRemediation,
  webhookSignature,
} from "../src/webhooks.js";

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  json: WebhookPayload;
}

type Reply = (req: Received, res: http.ServerResponse) => void;

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

/** A receiver on loopback; `replies[i]` answers the i-th request (the last one repeats). */
async function receiver(replies: Reply[] = [(_, res) => res.writeHead(204).end()]) {
  const got: Received[] = [];
  const waiters = new Set<() => void>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const r: Received = { headers: req.headers, body, json: JSON.parse(body) as WebhookPayload };
      got.push(r);
      for (const w of [...waiters]) w();
      replies[Math.min(got.length - 1, replies.length - 1)]!(r, res);
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
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook?token=s3cret`;
  /** Resolves once `n` requests arrived (fails the test after `timeoutMs`). */
  const requests = (n: number, timeoutMs = 10_000): Promise<Received[]> =>
    new Promise((resolve, reject) => {
      const check = () => {
        if (got.length < n) return false;
        waiters.delete(check as () => void);
        clearTimeout(t);
        resolve(got.slice());
        return true;
      };
      const t = setTimeout(() => {
        waiters.delete(check as () => void);
        reject(new Error(`timed out waiting for ${n} requests (got ${got.length})`));
      }, timeoutMs);
      if (!check()) waiters.add(check as () => void);
    });
  return { url, got, requests };
}

function logs() {
  const lines: { msg: string; [k: string]: unknown }[] = [];
  const logger = pino({ level: "debug" }, { write: (s: string) => lines.push(JSON.parse(s)) });
  return { logger, lines };
}

/** Resolves with the outcome of the next `n` finished deliveries (mesher:webhook:delivery). */
function outcomes(
  n: number,
  timeoutMs = 10_000,
): Promise<{ outcome: string; attempts: number; status?: number }[]> {
  return new Promise((resolve, reject) => {
    const seen: { outcome: string; attempts: number; status?: number }[] = [];
    const on = (m: unknown) => {
      seen.push(m as { outcome: string; attempts: number });
      if (seen.length === n) {
        diagnostics.unsubscribe("mesher:webhook:delivery", on);
        clearTimeout(t);
        resolve(seen);
      }
    };
    const t = setTimeout(() => {
      diagnostics.unsubscribe("mesher:webhook:delivery", on);
      reject(new Error(`timed out waiting for ${n} deliveries (got ${seen.length})`));
    }, timeoutMs);
    diagnostics.subscribe("mesher:webhook:delivery", on);
  });
}

function hooks(o: Partial<WebhooksOptions> & { urls: string[] }): Webhooks {
  const w = new Webhooks({ logger: pino({ level: "silent" }), backoffInitialMs: 10, backoffMaxMs: 50, ...o });
  closers.push(() => w.close(1_000));
  return w;
}

const breakerOpen: RemediationEvent = {
  type: "breaker-open",
  service: "orders",
  instanceId: "a",
  detail: { failures: 6 },
};

describe("Webhooks: delivery", () => {
  it("POSTs the event as signed JSON to every URL; the signature verifies", async () => {
    const r1 = await receiver();
    const r2 = await receiver();
    const w = hooks({
      urls: [r1.url, r2.url],
      secret: "topsecret",
      self: { service: "checkout", instance: "checkout-1" },
      wallClockMs: () => Date.UTC(2026, 0, 2, 3, 4, 5),
    });
    w.fire(breakerOpen);
    const [a] = await r1.requests(1);
    const [b] = await r2.requests(1);
    for (const got of [a!, b!]) {
      expect(got.headers["content-type"]).toBe("application/json");
      expect(got.headers["x-mesher-event"]).toBe("breaker-open");
      expect(got.headers["x-mesher-delivery"]).toMatch(/^[0-9a-f-]{36}$/);
      const sig = String(got.headers["x-mesher-signature"]);
      const want = `sha256=${createHmac("sha256", "topsecret").update(got.body).digest("hex")}`;
      expect(timingSafeEqual(Buffer.from(sig), Buffer.from(want))).toBe(true);
      expect(webhookSignature("topsecret", got.body)).toBe(sig);
      expect(got.json).toEqual({
        type: "breaker-open",
        service: "orders",
        instanceId: "a",
        detail: { failures: 6 },
        at: "2026-01-02T03:04:05.000Z",
        mesher: { service: "checkout", instance: "checkout-1" },
      });
    }
    expect(a!.headers["x-mesher-delivery"]).not.toBe(b!.headers["x-mesher-delivery"]);
    const tampered = a!.body.replace("orders", "0rders");
    expect(webhookSignature("topsecret", tampered)).not.toBe(a!.headers["x-mesher-signature"]);
  });

  it("sends no signature header without a secret", async () => {
    const r = await receiver();
    hooks({ urls: [r.url] }).fire({ type: "registry-latency", detail: { latencyMs: 3_000 } });
    const [got] = await r.requests(1);
    expect(got!.headers["x-mesher-signature"]).toBeUndefined();
    expect(got!.json.service).toBeNull();
    expect(got!.json.mesher).toEqual({ service: null, instance: null });
  });

  it("retries 500 and 429 with back-off, keeping the delivery id, until it succeeds", async () => {
    const r = await receiver([
      (_, res) => res.writeHead(500).end("boom"),
      (_, res) => res.writeHead(429, { "retry-after": "0" }).end(),
      (_, res) => res.writeHead(503).end(),
      (_, res) => res.writeHead(200).end("ok"),
    ]);
    const w = hooks({ urls: [r.url], secret: "k" });
    const done = outcomes(1);
    w.fire(breakerOpen);
    const [o] = await done;
    expect(o).toMatchObject({ outcome: "delivered", attempts: 4, status: 200 });
    expect(r.got).toHaveLength(4);
    expect(new Set(r.got.map((g) => g.headers["x-mesher-delivery"])).size).toBe(1);
    expect(new Set(r.got.map((g) => g.body)).size).toBe(1);
    expect(w.stats()).toEqual({ queued: 0, waiting: 0, inflight: 0, delivered: 1, failed: 0, dropped: 0 });
  });

  it("does not retry a 400, and logs the refusal", async () => {
    const r = await receiver([(_, res) => res.writeHead(400).end("bad")]);
    const { logger, lines } = logs();
    const w = hooks({ urls: [r.url], logger });
    const done = outcomes(1);
    w.fire(breakerOpen);
    expect((await done)[0]).toMatchObject({ outcome: "failed", attempts: 1, status: 400 });
    expect(r.got).toHaveLength(1);
    // Nothing is left to retry: the failure was final.
    expect(w.stats()).toEqual({ queued: 0, waiting: 0, inflight: 0, delivered: 0, failed: 1, dropped: 0 });
    const line = lines.find((l) => l.msg === "webhook delivery refused by the receiver");
    expect(line).toMatchObject({ status: 400, attempts: 1 });
    // The URL's query (a token) stays out of the logs.
    expect(JSON.stringify(lines)).not.toContain("s3cret");
  });

  it("gives up after maxAttempts on 5xx", async () => {
    const r = await receiver([(_, res) => res.writeHead(502).end()]);
    const w = hooks({ urls: [r.url], maxAttempts: 3 });
    const done = outcomes(1);
    w.fire(breakerOpen);
    expect((await done)[0]).toMatchObject({ outcome: "failed", attempts: 3, status: 502 });
    expect(r.got).toHaveLength(3);
    expect(w.stats().failed).toBe(1);
  });

  it("retries network errors and timeouts", async () => {
    let calls = 0;
    const r = await receiver([
      () => {}, // never answers: the try times out
      (_, res) => res.writeHead(200).end(),
    ]);
    const w = hooks({
      urls: [r.url],
      // Long enough that a prompt answer never times out on a loaded machine; the first
      // request is never answered, so this is also how long the test waits for it.
      requestTimeoutMs: 2_000,
      fetchImpl: async (input, init) => {
        calls += 1;
        if (calls === 1) throw new TypeError("fetch failed");
        return fetch(input, init);
      },
    });
    const done = outcomes(1);
    w.fire(breakerOpen);
    expect((await done)[0]).toMatchObject({ outcome: "delivered", attempts: 3, status: 200 });
    expect(calls).toBe(3);
    expect(r.got).toHaveLength(2);
  });

  it("bounds the queue: the oldest waiting delivery is dropped with a log line", async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const r = await receiver([
      (_, res) => void released.then(() => res.writeHead(200).end()),
      (_, res) => res.writeHead(200).end(),
    ]);
    const { logger, lines } = logs();
    const w = hooks({ urls: [r.url], logger, concurrency: 1, queueMax: 2 });
    const t0 = performance.now();
    for (let n = 1; n <= 5; n++) w.fire({ type: "low-instances", service: "orders", detail: { n } });
    // fire() returned at once, without waiting for the receiver.
    expect(performance.now() - t0).toBeLessThan(1_000);
    expect(w.stats()).toMatchObject({ queued: 2, inflight: 1, dropped: 2 });
    const dropped = lines.filter((l) => l.msg === "webhook delivery dropped: queue full, oldest goes");
    expect(dropped).toHaveLength(2);
    await r.requests(1);
    release();
    const got = await r.requests(3);
    expect(got.map((g) => g.json.detail.n)).toEqual([1, 4, 5]);
  });

  it("close() waits for pending deliveries, and abandons them at its deadline", async () => {
    const slow = await receiver([(_, res) => setTimeout(() => res.writeHead(200).end(), 200)]);
    const w1 = new Webhooks({ urls: [slow.url], logger: pino({ level: "silent" }) });
    w1.fire(breakerOpen);
    expect(await w1.close(10_000)).toEqual({ abandoned: 0 });
    expect(w1.stats().delivered).toBe(1);

    const never = await receiver([() => {}]);
    const { logger, lines } = logs();
    const w2 = new Webhooks({ urls: [never.url], logger, requestTimeoutMs: 60_000 });
    w2.fire(breakerOpen);
    await never.requests(1);
    const t0 = performance.now();
    expect(await w2.close(200)).toEqual({ abandoned: 1 });
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(lines.some((l) => l.msg === "webhooks: deliveries abandoned at close")).toBe(true);
    w2.fire(breakerOpen);
    expect(w2.stats()).toMatchObject({ queued: 0, inflight: 0 });
    expect(lines.some((l) => l.msg === "webhook event after close; not sent")).toBe(true);
  });

  it("refuses URLs that are not http(s)", () => {
    expect(() => new Webhooks({ urls: ["ftp://x/"], logger: pino({ level: "silent" }) })).toThrow(
      /want an http/,
    );
    expect(() => new Webhooks({ urls: ["not a url"], logger: pino({ level: "silent" }) })).toThrow(
      /want an http/,
    );
  });
});

// ---------------------------------------------------------------------------------------------

function inst(id: string, health?: Instance["health"]): Instance {
  return {
    id,
    service: "orders",
    address: "10.0.0.1",
    port: 8080,
    protocol: "http",
    weight: 100,
    tags: [],
    metadata: {},
    health,
  };
}

function fakeMesh(initial: Record<string, Instance[]>) {
  const services = new Map(Object.entries(initial));
  const breakers: BreakerInfo[] = [];
  const mesh = {
    tracked: () => [...services.keys()].sort(),
    snapshot: (s: string) => {
      const instances = services.get(s);
      return instances === undefined
        ? undefined
        : { service: s, instances, revision: 7n, stale: false, staleForMs: 0, source: "registry" as const };
    },
    breakerStates: () => breakers,
  } satisfies Pick<Mesh, "tracked" | "snapshot" | "breakerStates">;
  return { mesh, services, breakers };
}

function recorder() {
  const fired: RemediationEvent[] = [];
  return { fired, webhooks: { fire: (e: RemediationEvent) => void fired.push(e) } };
}

describe("watchRemediation", () => {
  it("fires registry-latency once per crossing: slow, down, or a probe that hangs", async () => {
    const clock = new ManualClock();
    const { fired, webhooks } = recorder();
    const { mesh } = fakeMesh({});
    const answers: (number | Error | "hang")[] = [
      5,
      50,
      60,
      new Error("connection refused"),
      5,
      new Error("down"),
      5,
      "hang",
    ];
    let hung = false;
    const stop = watchRemediation({
      webhooks,
      mesh,
      minInstances: 1,
      registryLatencyMs: 20,
      intervalMs: 1_000,
      clock,
      probeRegistry: async () => {
        const a = answers.shift();
        if (a === "hang") {
          hung = true;
          return new Promise<number>(() => {});
        }
        if (a instanceof Error) throw a;
        return a ?? 5;
      },
    });
    closers.push(stop);
    const step = async () => {
      clock.advance(1_000);
      await flush();
      await flush();
    };
    await step(); // 5: fine
    expect(fired).toHaveLength(0);
    await step(); // 50: slow
    expect(fired).toEqual([
      { type: "registry-latency", detail: { thresholdMs: 20, latencyMs: 50, down: false } },
    ]);
    await step(); // 60: still slow, same crossing
    await step(); // down: still the same crossing
    expect(fired).toHaveLength(1);
    await step(); // 5: recovered, re-armed
    await step(); // down
    expect(fired).toHaveLength(2);
    expect(fired[1]).toEqual({
      type: "registry-latency",
      detail: { thresholdMs: 20, down: true, error: "down" },
    });
    await step(); // 5
    await step(); // hangs
    expect(hung).toBe(true);
    expect(fired).toHaveLength(2);
    await step(); // still out after 1000 ms > 20 ms
    expect(fired).toHaveLength(3);
    expect(fired[2]!.detail).toMatchObject({ latencyMs: 1_000, pending: true });
  });

  it("fires low-instances once per crossing, counting only instances not reported unhealthy", async () => {
    const clock = new ManualClock();
    const { fired, webhooks } = recorder();
    const { mesh, services } = fakeMesh({ orders: [inst("a"), inst("b"), inst("c", "unknown")] });
    closers.push(
      watchRemediation({
        webhooks,
        mesh,
        minInstances: 2,
        registryLatencyMs: 1_000,
        intervalMs: 500,
        clock,
        probeRegistry: async () => 1,
      }),
    );
    const step = async () => {
      clock.advance(500);
      await flush();
    };
    await step();
    expect(fired).toHaveLength(0);
    services.set("orders", [inst("a"), inst("b", "unhealthy"), inst("c", "unhealthy")]);
    await step();
    expect(fired).toEqual([
      {
        type: "low-instances",
        service: "orders",
        detail: { healthy: 1, total: 3, minInstances: 2, unhealthy: ["b", "c"], revision: "7", stale: false },
      },
    ]);
    services.set("orders", [inst("a")]);
    await step();
    expect(fired).toHaveLength(1);
    services.set("orders", [inst("a"), inst("b")]);
    await step();
    services.set("orders", []);
    await step();
    expect(fired).toHaveLength(2);
    expect(fired[1]!.detail).toMatchObject({ healthy: 0, total: 0 });
  });

  it("fires breaker-open when a tracked service's breaker opens, not again until it closed", async () => {
    const { fired, webhooks } = recorder();
    const { mesh } = fakeMesh({ orders: [inst("a")] });
    closers.push(
      watchRemediation({
        webhooks,
        mesh,
        minInstances: 0,
        registryLatencyMs: 1_000,
        clock: new ManualClock(),
        probeRegistry: async () => 1,
      }),
    );
    const ch = diagnostics.channel("sdk:mesh:breaker");
    ch.publish({ service: "orders", instanceId: "a", state: "open" });
    expect(fired).toEqual([
      {
        type: "breaker-open",
        service: "orders",
        instanceId: "a",
        detail: { state: "open", address: "10.0.0.1", port: 8080, zone: undefined, version: undefined },
      },
    ]);
    ch.publish({ service: "orders", instanceId: "a", state: "half-open" });
    ch.publish({ service: "orders", instanceId: "a", state: "open" });
    expect(fired).toHaveLength(1);
    ch.publish({ service: "orders", instanceId: "a", state: "closed" });
    ch.publish({ service: "orders", instanceId: "a", state: "open" });
    expect(fired).toHaveLength(2);
    ch.publish({ service: "payments", instanceId: "x", state: "open" }); // not routed by this mesh
    expect(fired).toHaveLength(2);
  });

  it("checks at once when the mesh's instance set changes (sdk:mesh:instances)", () => {
    const { fired, webhooks } = recorder();
    const { mesh, services } = fakeMesh({ orders: [inst("a"), inst("b")] });
    closers.push(
      watchRemediation({
        webhooks,
        mesh,
        minInstances: 2,
        registryLatencyMs: 1_000,
        clock: new ManualClock(),
        probeRegistry: async () => 1,
      }),
    );
    services.set("orders", [inst("a")]);
    diagnostics.channel("sdk:mesh:instances").publish({ service: "orders", added: [], removed: ["b"] });
    expect(fired).toMatchObject([{ type: "low-instances", service: "orders", detail: { healthy: 1 } }]);
  });

  it("forgets a breaker the mesh dropped without closing it, so a new one opening fires", async () => {
    const clock = new ManualClock();
    const { fired, webhooks } = recorder();
    const { mesh, breakers } = fakeMesh({ orders: [inst("a")] });
    closers.push(
      watchRemediation({
        webhooks,
        mesh,
        minInstances: 0,
        registryLatencyMs: 1_000,
        intervalMs: 100,
        clock,
        probeRegistry: async () => 1,
      }),
    );
    const ch = diagnostics.channel("sdk:mesh:breaker");
    const open: BreakerInfo = {
      service: "orders",
      instanceId: "a",
      state: "open",
      fires: 6,
      failures: 6,
      successes: 0,
      rejects: 0,
    };
    breakers.push(open);
    ch.publish({ service: "orders", instanceId: "a", state: "open" });
    expect(fired).toHaveLength(1);
    expect(fired[0]!.detail).toMatchObject({ failures: 6, fires: 6 });
    clock.advance(100); // the breaker is still held open: remembered
    await flush();
    ch.publish({ service: "orders", instanceId: "a", state: "open" });
    expect(fired).toHaveLength(1);
    breakers.length = 0; // e.g. new breaker options from a policy change
    clock.advance(100);
    await flush();
    ch.publish({ service: "orders", instanceId: "a", state: "open" });
    expect(fired).toHaveLength(2);
  });
});
