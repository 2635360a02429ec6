// `pricing`: a Node service with the SDK in-process and no mesher. It registers itself with a
// Registrar (one lease, kept alive over one stream), and calls `inventory` with a Mesh: the Mesh
// watches inventory's instances and policy, picks one per try (balancer, breakers, outlier
// ejection) and says whether a failed try may be retried; the call goes straight to the instance
// over undici. Other services reach pricing through their own meshers, which route to the address
// registered here.
//
//   GET /cost/<sku>   the unit cost (a leaf: inventory asks it)
//   GET /price/<sku>  the selling price: asks inventory for stock and unit cost, adds a margin
//   GET /stats        what this process saw (calls to inventory by outcome, instances known)
//   GET /health       200 once registered
//
// Env: APP_PORT, REGISTRY (host:port of a registry member), PREFIX (the key prefix), INSTANCE,
// DATA_DIR (where the discovery cache is kept; optional).

import { join } from "node:path";
import {
  type CallOutcome,
  Discovery,
  EtcdClient,
  Mesh,
  NoInstanceError,
  PolicyStore,
  Registrar,
  systemClock,
} from "@regmesh/sdk";
import { request } from "undici";
import { envPort, propagated, serve } from "./http-app.js";

const registry = process.env.REGISTRY ?? "127.0.0.1:23790";
const prefix = process.env.PREFIX ?? "/regmesh";
const instance = process.env.INSTANCE ?? "pricing-1";
const dataDir = process.env.DATA_DIR;

const client = new EtcdClient({ endpoints: [registry], requestTimeoutMs: 2_000 });
const registrar = new Registrar({ client, prefix, ttlS: 10 });
const discovery = new Discovery({
  client,
  prefix,
  ...(dataDir !== undefined ? { cacheFile: join(dataDir, "endpoints.cache") } : {}),
});
const policies = new PolicyStore({ client, prefix });
const mesh = new Mesh({ discovery, policies, clock: systemClock, caller: "pricing", logger: client.logger });

const stats = { served: 0, inventoryOk: 0, inventoryFailed: 0, noInstance: 0 };
let registered = false;

/** How a try ended, for the Mesh (breaker, ejection, retry). Connection errors never reached the instance. */
function outcomeOf(r: { ok: true; value: { status: number } } | { ok: false; error: unknown }): CallOutcome {
  if (r.ok) return { kind: "response", status: r.value.status };
  const code = (r.error as { code?: string }).code;
  if (code === "ECONNREFUSED" || code === "UND_ERR_CONNECT_TIMEOUT") return { kind: "connect-failure" };
  if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") return { kind: "timeout" };
  return { kind: "reset" };
}

interface Stock {
  sku: string;
  available: number;
  unitCostCents: number;
}

/** GET inventory /stock/<sku>: Mesh picks, undici calls the instance directly. */
async function stockOf(sku: string, headers: Record<string, string>): Promise<Stock> {
  const path = `/stock/${encodeURIComponent(sku)}`;
  try {
    const r = await mesh.call(
      "inventory",
      { method: "GET", path, headers },
      async (attempt) => {
        const { address, port } = attempt.instance;
        const res = await request(`http://${address}:${port}${path}`, {
          method: "GET",
          // The instance is inventory's mesher (its inbound port): it learns who calls from
          // x-mesher-caller, as it would from another mesher.
          headers: { ...headers, host: "inventory", "x-mesher-caller": "pricing" },
          headersTimeout: attempt.perTryTimeoutMs ?? 5_000,
          bodyTimeout: 5_000,
        });
        return { status: res.statusCode, body: await res.body.text() };
      },
      outcomeOf,
    );
    if (r.status !== 200) throw new Error(`inventory${path} answered ${r.status}: ${r.body}`);
    stats.inventoryOk += 1;
    return JSON.parse(r.body) as Stock;
  } catch (err) {
    if (err instanceof NoInstanceError) stats.noInstance += 1;
    stats.inventoryFailed += 1;
    throw err;
  }
}

function unitCostCents(sku: string): number {
  let h = 7;
  for (const c of sku) h = (h * 31 + c.charCodeAt(0)) % 900;
  return 100 + h;
}

const server = serve(
  "pricing",
  envPort("APP_PORT"),
  (url, req) => {
    const m = /^\/(cost|price)\/([^/]+)$/.exec(url.pathname);
    if (url.pathname === "/stats") {
      const snap = mesh.snapshot("inventory");
      return Promise.resolve([
        200,
        { ...stats, registered, inventoryInstances: snap?.instances.map((i) => `${i.address}:${i.port}`) },
      ]);
    }
    if (m === null) return undefined;
    stats.served += 1;
    const sku = decodeURIComponent(m[2]!);
    if (m[1] === "cost") return Promise.resolve([200, { sku, unitCostCents: unitCostCents(sku) }]);
    return stockOf(sku, propagated(req)).then((stock): [number, unknown] => {
      const margin = stock.available < 20 ? 1.5 : 1.3;
      return [200, { sku, priceCents: Math.round(stock.unitCostCents * margin), from: instance }];
    });
  },
  {
    healthy: () => registered,
    // Deregister first (keys deleted, lease revoked), so callers' meshers stop picking this
    // instance while the calls in flight finish.
    onStop: async () => {
      await registrar.close();
      await mesh.close();
      await policies.close();
      await discovery.close();
      client.close();
    },
  },
);
server.once("listening", () => {
  const { port } = server.address() as { port: number };
  registrar
    .register({
      service: "pricing",
      id: instance,
      address: "127.0.0.1",
      port,
      protocol: "http",
      version: "1.0.0",
      health: "healthy",
    })
    .then(
      () => {
        registered = true;
        process.stdout.write(`${JSON.stringify({ service: "pricing", registered: instance })}\n`);
      },
      (err: Error) => {
        process.stderr.write(`pricing: registration failed: ${err.message}\n`);
        process.exit(1);
      },
    );
});
