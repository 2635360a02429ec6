// TLS on the client port with etcd's flags (--cert-file, --key-file, --trusted-ca-file,
// --client-cert-auth): etcdctl with a trusted client certificate is served; without one,
// or with one from another CA, it is refused. The same checks run against real etcd.

import {
  type Cluster,
  makeTestCerts,
  runEtcdctl,
  startCluster,
  type TestCerts,
  tempDir,
} from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const dir = tempDir("regmesh-tls-");
let certs: TestCerts;
const clusters = new Map<string, Cluster>();
const kinds = ["etcd", "registry-node"] as const;

beforeAll(async () => {
  certs = await makeTestCerts(dir.path);
  for (const kind of kinds) {
    clusters.set(
      kind,
      await startCluster({
        kind,
        clientTls: {
          certFile: certs.serverCertFile,
          keyFile: certs.serverKeyFile,
          caFile: certs.caFile,
          clientCertAuth: true,
          clientCertFile: certs.clientCertFile,
          clientKeyFile: certs.clientKeyFile,
        },
      }),
    );
  }
});
afterAll(async () => {
  await Promise.all([...clusters.values()].map((c) => c.stop({ remove: true })));
  dir.remove();
});

describe.each(kinds)("client TLS on %s", (kind) => {
  const ctl = (args: string[], tlsArgs: string[]) =>
    runEtcdctl([...tlsArgs, "--dial-timeout=1s", "--command-timeout=2s", ...args], {
      endpoints: clusters.get(kind)!.clientUrls,
    });

  it("serves a client with a trusted certificate", async () => {
    const ok = [`--cacert=${certs.caFile}`, `--cert=${certs.clientCertFile}`, `--key=${certs.clientKeyFile}`];
    expect(await ctl(["put", "tls/k", "v"], ok)).toMatchObject({ code: 0, stdout: "OK\n" });
    expect((await ctl(["get", "tls/k", "--print-value-only"], ok)).stdout).toBe("v\n");
  });

  it("refuses a client without a certificate", async () => {
    const r = await ctl(["get", "tls/k"], [`--cacert=${certs.caFile}`]);
    expect(r.code).not.toBe(0);
  });

  it("refuses a client whose certificate another CA signed", async () => {
    const r = await ctl(
      ["get", "tls/k"],
      [`--cacert=${certs.caFile}`, `--cert=${certs.otherCertFile}`, `--key=${certs.otherKeyFile}`],
    );
    expect(r.code).not.toBe(0);
  });
});
