import { afterEach, describe, expect, it } from "vitest";
import { type Cluster, runEtcdctl, startEtcd } from "../src/index.js";

let cluster: Cluster | undefined;
afterEach(async () => {
  await cluster?.stop({ remove: true });
  cluster = undefined;
});

describe("test kit: real etcd on loopback", () => {
  it("starts one member on free ports, serves etcdctl, survives kill -9 and restart", async () => {
    cluster = await startEtcd();
    const [m] = cluster.members;
    expect(m!.clientPort).not.toBe(2379);
    expect(m!.peerPort).not.toBe(2380);

    const put = await runEtcdctl(["put", "k", "v1"], { endpoints: cluster.endpoints });
    expect(put).toMatchObject({ code: 0, stdout: "OK\n" });

    await m!.kill9();
    expect(m!.proc!.exitStatus?.signal).toBe("SIGKILL");
    m!.start();
    await m!.waitHealthy();

    const get = await runEtcdctl(["get", "k", "--print-value-only"], { endpoints: cluster.endpoints });
    expect(get).toMatchObject({ code: 0, stdout: "v1\n" });
  });

  it("reports a failing command's exit code and stderr", async () => {
    cluster = await startEtcd();
    const r = await runEtcdctl(["lease", "revoke", "1234"], { endpoints: cluster.endpoints });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("requested lease not found");
  });

  it("starts a three-member cluster whose members all list each other", async () => {
    cluster = await startEtcd({ members: 3 });
    const r = await runEtcdctl(["member", "list"], { endpoints: cluster.endpoints });
    expect(r.code).toBe(0);
    const names = r.stdout
      .trim()
      .split("\n")
      .map((line) => line.split(", ")[2])
      .sort();
    expect(names).toEqual(["m1", "m2", "m3"]);
  });
});
