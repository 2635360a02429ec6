// The differential suite: one script of etcdctl (3.4) commands runs against a real etcd and
// against registry-node, each started by the test kit on loopback; normalised outputs must
// match. What is normalised, and why, is the table in `normalise` below; everything else
// must be equal byte for byte.

import { type Cluster, type CommandResult, runEtcdctl, startCluster } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

type Step = {
  /** etcdctl arguments; `$LEASE1`... are replaced by the lease ids each target granted. */
  args: string[];
  stdin?: string;
  /** Run in the background for this long (watch), collecting its output, while later steps run. */
  backgroundMs?: number;
  /** Wait this long after the step (lease expiry). */
  sleepMs?: number;
};

/**
 * The reviewed normalisation table:
 * - cluster and member ids: derived from URLs, which differ per run (free ports).
 * - lease ids: chosen by the server from its member id and the clock.
 * - raft_term, raft index, applied index: etcd logs its own membership entries; our log differs.
 * - db size: the storage files differ in layout (free pages, page cache).
 * - warn log lines of etcdctl (timestamps, client ids): not part of the answer.
 * - endpoint addresses (127.0.0.1:port): free ports differ per run.
 * Revisions, keys, values, versions, counts, errors and their order are NOT normalised.
 */
function normalise(out: string, leases: string[]): string {
  let s = out;
  leases.forEach((id, i) => {
    s = s.replaceAll(id, `<lease${i + 1}>`);
    s = s.replaceAll(BigInt(`0x${id}`).toString(10), `<lease${i + 1}>`);
  });
  return s
    .split("\n")
    .filter((line) => !line.startsWith('{"level":"warn"'))
    .join("\n")
    .replace(/"cluster_id":\d+/g, '"cluster_id":<id>')
    .replace(/"member_id":\d+/g, '"member_id":<id>')
    .replace(/"raft_term":\d+/g, '"raft_term":<term>')
    .replace(/"(ClusterID|MemberID)" : \d+/g, '"$1" : <id>')
    .replace(/"RaftTerm" : \d+/g, '"RaftTerm" : <term>')
    .replace(/127\.0\.0\.1:\d+/g, "<endpoint>")
    .replace(/\b[0-9a-f]{16}\b/g, "<hexid>");
}

type Target = { cluster: Cluster; leases: string[]; background: Promise<CommandResult>[] };

async function runScript(t: Target, steps: Step[]): Promise<string[]> {
  const outputs: string[] = [];
  for (const step of steps) {
    const args = step.args.map((a) => a.replace(/\$LEASE(\d)/g, (_, n) => t.leases[Number(n) - 1] ?? "0"));
    if (step.backgroundMs !== undefined) {
      t.background.push(runEtcdctl(args, { endpoints: t.cluster.endpoints, timeoutMs: step.backgroundMs }));
      await new Promise((r) => setTimeout(r, 300));
      continue;
    }
    const r = await runEtcdctl(args, { endpoints: t.cluster.endpoints, stdin: step.stdin });
    const granted = /^lease ([0-9a-f]{16}) granted/.exec(r.stdout);
    if (granted) t.leases.push(granted[1]!);
    outputs.push(`$ etcdctl ${step.args.join(" ")}\n[exit ${r.code}]\n${r.stdout}${r.stderr}`);
    if (step.sleepMs) await new Promise((r) => setTimeout(r, step.sleepMs));
  }
  for (const bg of t.background) {
    const r = await bg;
    outputs.push(`(background)\n${r.stdout}${r.stderr.replace(/^.*signal: killed.*$/m, "")}`);
  }
  return outputs.map((o) => normalise(o, t.leases));
}

let etcd: Cluster;
let ours: Cluster;

beforeAll(async () => {
  [etcd, ours] = await Promise.all([startCluster({ kind: "etcd" }), startCluster({ kind: "registry-node" })]);
});
afterAll(async () => {
  await Promise.all([etcd?.stop({ remove: true }), ours?.stop({ remove: true })]);
});

/**
 * Runs `steps` on both targets and compares. Most scripts share one pair of clusters;
 * `fresh` starts a new pair, for scripts whose result depends on the whole history
 * (HashKV covers every stored revision, and lease ids differ between the two).
 */
async function differential(steps: Step[], opts: { fresh?: boolean } = {}): Promise<void> {
  const pair = opts.fresh
    ? await Promise.all([startCluster({ kind: "etcd" }), startCluster({ kind: "registry-node" })])
    : [etcd, ours];
  try {
    const [a, b] = await Promise.all([
      runScript({ cluster: pair[0]!, leases: [], background: [] }, steps),
      runScript({ cluster: pair[1]!, leases: [], background: [] }, steps),
    ]);
    for (let i = 0; i < Math.max(a.length, b.length); i++) expect(b[i], `step ${i}`).toBe(a[i]);
  } finally {
    if (opts.fresh) await Promise.all(pair.map((c) => c!.stop({ remove: true })));
  }
}

const p = (...args: string[]): Step => ({ args });

describe("etcdctl against etcd and registry-node: same normalised output", () => {
  it("put and get with their flags", async () => {
    await differential([
      p("put", "k1", "v1"),
      p("put", "k2", "v2"),
      p("put", "k3", "v3"),
      p("put", "k1", "v1b", "--prev-kv"),
      p("get", "k1"),
      p("get", "k1", "-w", "json"),
      p("get", "k", "--prefix"),
      p("get", "k2", "--from-key"),
      p("get", "k", "--prefix", "--limit", "2"),
      p("get", "k", "--prefix", "--limit", "2", "-w", "json"),
      p("get", "k1", "--rev", "2"),
      p("get", "k", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND"),
      p("get", "k", "--prefix", "--sort-by", "VERSION", "--order", "ASCEND"),
      p("get", "k", "--prefix", "--keys-only"),
      p("get", "k", "--prefix", "--print-value-only"),
      p("get", "k", "--prefix", "--count-only", "-w", "json"),
      p("get", "k1", "-w", "fields"),
      p("get", "nothing"),
      p("get", "nothing", "-w", "json"),
      p("put", "", "empty-key"),
    ]);
  });

  it("delete with --prefix and --prev-kv", async () => {
    await differential([
      p("put", "d/a", "1"),
      p("put", "d/b", "2"),
      p("put", "d/c", "3"),
      p("del", "d/a", "--prev-kv"),
      p("del", "d/", "--prefix"),
      p("del", "d/none"),
      p("get", "d/", "--prefix", "-w", "json"),
    ]);
  });

  it("txn from stdin, with -w json", async () => {
    await differential([
      p("put", "t/a", "1"),
      { args: ["txn"], stdin: 'value("t/a") = "1"\n\nput t/b 2\nget t/a\n\nput t/c 3\n\n' },
      { args: ["txn", "-w", "json"], stdin: 'mod("t/a") > "100"\n\nput t/x 1\n\ndel t/a\nget t/b\n\n' },
      p("get", "t/", "--prefix"),
    ]);
  });

  it("watch a prefix and from an old revision, with --prev-kv", async () => {
    await differential([
      p("put", "w/0", "start"),
      { args: ["watch", "w/", "--prefix", "--prev-kv"], backgroundMs: 2500 },
      { args: ["watch", "w/1", "--rev", "1", "-w", "json"], backgroundMs: 2500 },
      p("put", "w/1", "a"),
      p("put", "w/2", "b"),
      p("put", "w/1", "c"),
      p("del", "w/1"),
    ]);
  });

  it("leases: grant, put --lease, timetolive --keys, list, keep-alive --once, revoke, expiry", async () => {
    await differential([
      p("lease", "grant", "100"),
      p("put", "l/a", "1", "--lease", "$LEASE1"),
      p("put", "l/b", "1", "--lease", "$LEASE1"),
      p("lease", "list"),
      p("lease", "keep-alive", "--once", "$LEASE1"),
      p("lease", "revoke", "$LEASE1"),
      p("get", "l/", "--prefix"),
      p("lease", "timetolive", "$LEASE1"),
      p("lease", "revoke", "$LEASE1"),
      p("put", "l/c", "1", "--lease", "1234"),
      p("lease", "grant", "2"),
      { args: ["put", "l/d", "1", "--lease", "$LEASE2"], sleepMs: 4000 },
      p("get", "l/", "--prefix", "-w", "json"),
    ]);
  });

  it("compaction, including a future revision, and a compacted read", async () => {
    await differential([
      p("put", "c/a", "1"),
      p("put", "c/a", "2"),
      p("put", "c/a", "3"),
      p("compact", "3"),
      p("get", "c/a", "--rev", "2"),
      p("compact", "2"),
      p("compact", "100000"),
      p("compact", "5", "--physical"),
      p("get", "c/a"),
    ]);
  });

  it("HashKV: the same history gives the same hash as etcd, before and after compaction", async () => {
    await differential(
      [
        p("put", "h/a", "1"),
        p("put", "h/b", "2"),
        p("put", "h/a", "3"),
        p("del", "h/b"),
        { args: ["txn"], stdin: 'version("h/a") > "0"\n\nput h/c 4\nput h/d 5\n\n\n' },
        p("endpoint", "hashkv"),
        p("endpoint", "hashkv", "-w", "json"),
        p("compact", "4"),
        p("endpoint", "hashkv"),
        p("alarm", "list"),
      ],
      { fresh: true },
    );
  });

  it("auth: users, roles, permissions allowed and denied, enable and disable", async () => {
    const root = ["--user", "root:rootpw"];
    const u1 = ["--user", "u1:pw1"];
    await differential([
      p("put", "au/x", "1"),
      p("auth", "enable"),
      p("user", "add", "root:rootpw"),
      p("auth", "enable"),
      p("role", "add", "root"),
      p("user", "grant-role", "root", "root"),
      p("auth", "enable"),
      p("get", "au/x"),
      p("get", "au/x", ...root),
      p("get", "au/x", "--user", "root:wrong"),
      p("role", "add", "r1", ...root),
      p("role", "add", "r1", ...root),
      p("role", "grant-permission", "r1", "read", "au/x", ...root),
      p("role", "grant-permission", "r1", "readwrite", "au/p/", "--prefix", ...root),
      p("user", "add", "u1:pw1", ...root),
      p("user", "grant-role", "u1", "r1", ...root),
      p("user", "grant-role", "u1", "nosuchrole", ...root),
      p("get", "au/x", ...u1),
      p("put", "au/x", "2", ...u1),
      p("put", "au/p/1", "v", ...u1),
      p("get", "au/p/", "--prefix", ...u1),
      p("get", "au/", "--prefix", ...u1),
      p("del", "au/p/1", ...u1),
      p("user", "list", ...u1),
      p("user", "get", "u1", ...root),
      p("role", "get", "r1", ...root),
      p("user", "list", ...root),
      p("role", "list", ...root),
      p("role", "revoke-permission", "r1", "au/x", ...root),
      p("get", "au/x", ...u1),
      p("role", "revoke-permission", "r1", "au/x", ...root),
      p("user", "revoke-role", "u1", "r1", ...root),
      p("user", "revoke-role", "u1", "r1", ...root),
      p("user", "delete", "root", ...root),
      p("role", "delete", "root", ...root),
      p("auth", "disable", ...u1),
      p("auth", "disable", ...root),
      p("get", "au/x"),
      p("user", "delete", "u1"),
      p("user", "delete", "root"),
      p("role", "delete", "r1"),
      p("role", "delete", "root"),
    ]);
  });

  it("errors: oversize request", async () => {
    // etcdctl reads the value from stdin when it is not an argument (argv cannot hold 1.6 MB).
    await differential([
      { args: ["put", "big"], stdin: "x".repeat(1_600_000) },
      { args: ["put", "bigger"], stdin: "x".repeat(3_000_000) },
      p("get", "big", "--count-only", "-w", "json"),
    ]);
  });
});
