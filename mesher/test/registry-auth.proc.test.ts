// Each service's mesher with its own registry user (etcd auth): it registers, signs and routes,
// and its user can write only its own service's keys.
import { EtcdClient } from "@regmesh/sdk";
import { type Cluster, registryKindFromEnv, runEtcdctl, startCluster } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, until, World, workDir } from "./helpers.js";

let cluster: Cluster;
let w: World;
const dir = workDir();

const ROOT = "root:rootpw";
async function etcdctl(...args: string[]): Promise<string> {
  const r = await runEtcdctl(args, { endpoints: cluster.endpoints });
  if (r.code !== 0) throw new Error(`etcdctl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** A role and user for `service`: write its own instance and key entries, read the rest. */
async function serviceUser(prefix: string, service: string): Promise<void> {
  const u = `--user=${ROOT}`;
  await etcdctl(u, "role", "add", service);
  for (const k of [`${prefix}/services/${service}/`]) {
    await etcdctl(u, "role", "grant-permission", service, "readwrite", k, "--prefix=true");
  }
  for (const k of [`${prefix}/mesh/secrets/${service}`, `${prefix}/mesh/keys/${service}`]) {
    await etcdctl(u, "role", "grant-permission", service, "readwrite", k);
  }
  for (const k of [`${prefix}/services/`, `${prefix}/policies/`, `${prefix}/mesh/keys/`]) {
    await etcdctl(u, "role", "grant-permission", service, "read", k, "--prefix=true");
  }
  await etcdctl(u, "user", "add", `${service}-mesher`, `--new-user-password=${service}-pw`);
  await etcdctl(u, "user", "grant-role", `${service}-mesher`, service);
}

beforeAll(async () => {
  cluster = await startCluster({ kind: registryKindFromEnv("etcd") });
  w = new World(cluster, dir.path);
  await etcdctl("user", "add", "root", "--new-user-password=rootpw");
  await etcdctl("auth", "enable");
});
afterAll(async () => {
  await w?.cleanup();
  await cluster?.stop({ remove: true });
});

describe("meshers with their own registry users", () => {
  it("register, sign and route under etcd auth; a user cannot write another service's keys", async () => {
    const prefix = "/authz";
    await serviceUser(prefix, "orders");
    await serviceUser(prefix, "checkout");
    const user = (s: string) => [
      `--registry-user=${s}-mesher`,
      `--registry-password=${s}-pw`,
      "--auth-tokens",
    ];
    await w.instance(prefix, "orders", "o1", user("orders"));
    const checkout = await w.instance(prefix, "checkout", "c1", user("checkout"));
    await until(
      async () => (await call(checkout.mesher.ports.outbound, { host: "orders" })).status === 200,
      20_000,
      "checkout -> orders",
    );

    const asOrders = new EtcdClient({
      endpoints: cluster.endpoints,
      auth: { username: "orders-mesher", password: "orders-pw" },
    });
    try {
      const denied = await asOrders.put(`${prefix}/services/checkout/fake`, "{}").catch((e: Error) => e);
      expect(String(denied)).toMatch(/permission denied/);
      const secret = await asOrders.get(`${prefix}/mesh/secrets/checkout`).catch((e: Error) => e);
      expect(String(secret)).toMatch(/permission denied/);
      const own = await asOrders.get(`${prefix}/services/orders/o1`);
      expect(own).toBeDefined();
    } finally {
      asOrders.close();
    }
  });
});
