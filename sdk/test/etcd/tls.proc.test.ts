// TLS against a real registry: the kit's TLS clusters (https client URLs, throwaway certificates),
// with and without client-certificate authentication.
import { readFileSync } from "node:fs";
import { type Cluster, makeTestCerts, registryKindFromEnv, startCluster, tempDir } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EtcdClient } from "../../src/etcd/client.js";
import { EtcdErrorCode } from "../../src/etcd/errors.js";
import { until } from "./helpers.js";

let dir: { path: string; remove(): void };
let cluster: Cluster;
let certs: Awaited<ReturnType<typeof makeTestCerts>>;
const clients: EtcdClient[] = [];

beforeAll(async () => {
  dir = tempDir("regmesh-sdk-tls-");
  certs = await makeTestCerts(dir.path);
  cluster = await startCluster({
    kind: registryKindFromEnv("etcd"),
    clientTls: {
      certFile: certs.serverCertFile,
      keyFile: certs.serverKeyFile,
      caFile: certs.caFile,
      clientCertAuth: true,
      clientCertFile: certs.clientCertFile,
      clientKeyFile: certs.clientKeyFile,
    },
  });
});
afterAll(async () => {
  for (const c of clients) c.close();
  await cluster?.stop({ remove: true });
  dir?.remove();
});

function client(tls: ConstructorParameters<typeof EtcdClient>[0]["tls"]): EtcdClient {
  const c = new EtcdClient({
    endpoints: cluster.endpoints,
    tls,
    requestTimeoutMs: 1_000,
    retryDeadlineMs: 1_500,
  });
  clients.push(c);
  return c;
}

describe("TLS", () => {
  it("puts, gets and watches over mutual TLS", async () => {
    const c = client({
      ca: readFileSync(certs.caFile),
      cert: readFileSync(certs.clientCertFile),
      key: readFileSync(certs.clientKeyFile),
    });
    await c.put("tls/k", "1");
    const seen: string[] = [];
    c.watch(
      { key: "tls/", prefix: true },
      { events: (evs) => seen.push(...evs.map((e) => e.kv!.value.toString())) },
    );
    await new Promise((r) => setTimeout(r, 200));
    await c.put("tls/k", "2");
    await until(
      () => seen.length === 1,
      5_000,
      () => "event",
    );
    expect((await c.get("tls/k"))?.value.toString()).toBe("2");
  });

  it("is refused without a client certificate, with an untrusted one, or in plaintext", async () => {
    const ca = readFileSync(certs.caFile);
    const noCert = client({ ca });
    await expect(noCert.get("tls/k")).rejects.toMatchObject({ code: EtcdErrorCode.UNAVAILABLE });
    const other = client({
      ca,
      cert: readFileSync(certs.otherCertFile),
      key: readFileSync(certs.otherKeyFile),
    });
    await expect(other.get("tls/k")).rejects.toMatchObject({ code: EtcdErrorCode.UNAVAILABLE });
    const plain = client(undefined);
    await expect(plain.get("tls/k")).rejects.toMatchObject({ code: EtcdErrorCode.UNAVAILABLE });
  });
});
