import { describe, expect, it } from "vitest";
import { configFromFlags, envName, FlagError, parseFlags } from "../../src/config/index.js";

const cfg = (argv: string[], env: Record<string, string> = {}) => configFromFlags(parseFlags(argv, env));
const three = [
  "--name=m1",
  "--initial-cluster=m1=http://127.0.0.1:3001,m2=http://127.0.0.1:3002,m3=http://127.0.0.1:3003",
  "--initial-advertise-peer-urls=http://127.0.0.1:3001",
];

describe("registry-node flags (etcd's names and defaults)", () => {
  it("defaults are etcd's", () => {
    const c = cfg([]);
    expect(c).toMatchObject({
      name: "default",
      dataDir: "default.etcd",
      heartbeatIntervalMs: 100,
      electionTimeoutMs: 1000,
      snapshotCount: 100000,
      initialClusterState: "new",
      initialClusterToken: "etcd-cluster",
      maxTxnOps: 128,
      maxRequestBytes: 1572864,
      quotaBackendBytes: 2 * 1024 ** 3,
    });
    expect(c.listenClientUrls.map((u) => u.href)).toEqual(["http://localhost:2379/"]);
  });

  it("accepts --flag=value, --flag value, -flag value and bare booleans; flags win over ETCD_* env", () => {
    const c = cfg(["--name", "m1", "-data-dir", "/tmp/x", "--client-cert-auth", ...three.slice(1)], {
      ETCD_NAME: "ignored",
      ETCD_SNAPSHOT_COUNT: "5000",
    });
    expect(c.name).toBe("m1");
    expect(c.dataDir).toBe("/tmp/x");
    expect(c.tls.clientCertAuth).toBe(true);
    expect(c.snapshotCount).toBe(5000);
    expect(envName("initial-cluster-state")).toBe("ETCD_INITIAL_CLUSTER_STATE");
  });

  it("parses a three-member --initial-cluster", () => {
    const c = cfg(three);
    expect([...c.initialCluster.keys()]).toEqual(["m1", "m2", "m3"]);
  });

  it.each([
    [["--bogus"], "flag provided but not defined: -bogus"],
    [["--snapshot-count=lots"], 'invalid value "lots" for flag -snapshot-count: parse error'],
    [["--name"], "flag needs an argument: -name"],
    [
      ["--heartbeat-interval=300"],
      "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]",
    ],
    [
      ["--election-timeout=60000"],
      "--election-timeout[60000ms] is too long, and should be set less than 50000ms",
    ],
    [["--heartbeat-interval=0"], "--heartbeat-interval must be >0 (set to 0ms)"],
    [["--initial-cluster-state=maybe"], 'invalid value "maybe" for flag -initial-cluster-state'],
    [["--name=m9", ...three.slice(1)], 'couldn\'t find local name "m9" in the initial cluster configuration'],
    [
      [...three.slice(0, 2), "--initial-advertise-peer-urls=http://127.0.0.1:4000"],
      "--initial-cluster has m1=",
    ],
    [["--listen-client-urls=ftp://x:1"], "URL scheme must be http, https, unix, or unixs"],
    [["--listen-client-urls=http://127.0.0.1:1/path"], "URL must not contain a path"],
    [["--cert-file=a.pem"], "--cert-file and --key-file must be given together"],
  ])("rejects %j with a message naming the problem", (argv, message) => {
    expect(() => cfg(argv)).toThrow(FlagError);
    expect(() => cfg(argv)).toThrow(message);
  });
});
