// Mutual TLS between meshers: the inbound port asks for a client certificate signed by the mesh
// CA, the caller is the certificate's CN, the policy's allow-list applies to it; callers without
// a trusted certificate never reach the app.

import { readFileSync } from "node:fs";
import https from "node:https";
import { EtcdClient, PolicyStore } from "@regmesh/sdk";
import {
  type Cluster,
  makeLeafCert,
  makeTestCerts,
  registryKindFromEnv,
  startCluster,
} from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, until, World, workDir } from "./helpers.js";

let cluster: Cluster;
let w: World;
const dir = workDir();

beforeAll(async () => {
  cluster = await startCluster({ kind: registryKindFromEnv("etcd") });
  w = new World(cluster, dir.path);
});
afterAll(async () => {
  await w?.cleanup();
  await cluster?.stop({ remove: true });
});

function get(
  port: number,
  opts: { cert?: string; key?: string; ca: string },
): Promise<{ status: number } | { error: string }> {
  return new Promise((resolve) => {
    const req = https.get(
      {
        host: "127.0.0.1",
        port,
        path: "/hello",
        ca: readFileSync(opts.ca),
        ...(opts.cert !== undefined ? { cert: readFileSync(opts.cert), key: readFileSync(opts.key!) } : {}),
        agent: false,
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode ?? 0 }));
      },
    );
    req.on("error", (e) => resolve({ error: e.message }));
  });
}

describe("mutual TLS between meshers", () => {
  it("the caller is its certificate's CN; untrusted or missing certificates are refused", async () => {
    const certs = await makeTestCerts(dir.path);
    const tlsArgs = async (service: string) => {
      const c = await makeLeafCert(dir.path, service, service);
      return [`--tls-cert=${c.certFile}`, `--tls-key=${c.keyFile}`, `--tls-ca=${certs.caFile}`];
    };
    const prefix = w.prefix();
    const client = new EtcdClient({ endpoints: cluster.endpoints });
    const store = new PolicyStore({ client, prefix });
    w.cleanups.push(
      () => client.close(),
      () => store.close(),
    );
    await store.put("orders", { schemaVersion: 1, service: "orders", allowedCallers: ["checkout"] }, 0n);
    const orders = await w.instance(prefix, "orders", "o1", await tlsArgs("orders"));
    const checkout = await w.instance(prefix, "checkout", "c1", await tlsArgs("checkout"));
    const intruder = await w.instance(prefix, "intruder", "i1", await tlsArgs("intruder"));

    await until(
      async () => (await call(checkout.mesher.ports.outbound, { host: "orders" })).status === 200,
      20_000,
      "checkout -> orders over TLS",
    );
    const eps = (await checkout.mesher.admin("/v1/endpoints")) as {
      service: string;
      instances: { metadata: Record<string, string> }[];
    }[];
    expect(eps.find((e) => e.service === "orders")?.instances[0]?.metadata["mesher.tls"]).toBe("true");

    // The intruder's own mesher refuses (the allow-list is known to every caller)...
    expect((await call(intruder.mesher.ports.outbound, { host: "orders" })).status).toBe(403);
    // ...and straight at the inbound port with intruder's certificate, orders' mesher refuses.
    const inbound = orders.mesher.ports.inbound!;
    const asIntruder = await get(inbound, {
      cert: `${dir.path}/intruder.pem`,
      key: `${dir.path}/intruder.key`,
      ca: certs.caFile,
    });
    expect(asIntruder).toEqual({ status: 403 });
    const asCheckout = await get(inbound, {
      cert: `${dir.path}/checkout.pem`,
      key: `${dir.path}/checkout.key`,
      ca: certs.caFile,
    });
    expect(asCheckout).toEqual({ status: 200 });
    // No certificate, or one from another CA: the handshake fails; nothing reaches the app.
    expect("error" in (await get(inbound, { ca: certs.caFile }))).toBe(true);
    expect(
      "error" in
        (await get(inbound, { cert: certs.otherCertFile, key: certs.otherKeyFile, ca: certs.caFile })),
    ).toBe(true);
    // Plain HTTP to a TLS port gets nowhere either.
    expect(await call(inbound).catch((e: Error) => e.message)).toMatch(
      /socket hang up|ECONNRESET|Parse Error|status/i,
    );
  });
});
