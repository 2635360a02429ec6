// Snapshots move both ways: a registry-node snapshot saved with `etcdctl snapshot save`
// passes `etcdctl snapshot status`, restores with `etcdctl snapshot restore` into a real
// etcd that serves the same keys at the same revisions with the same HashKV; an etcd
// snapshot restores with `registry-node snapshot restore` into a registry-node that does
// the same.

import { join } from "node:path";
import {
  type Cluster,
  freePort,
  ManagedProcess,
  registryNodeBin,
  runCommand,
  runEtcdctl,
  startCluster,
  tempDir,
  waitFor,
} from "@regmesh/testkit";
import { afterAll, describe, expect, it } from "vitest";

const dir = tempDir("regmesh-snap-");
const started: (Cluster | ManagedProcess)[] = [];
afterAll(async () => {
  for (const s of started) await s.stop();
  dir.remove();
});

/** Starts one member (etcd or registry-node) on an existing data directory. */
async function startOn(kind: "etcd" | "registry-node", dataDir: string, name: string, peerPort: number) {
  const clientPort = await freePort();
  const flags = [
    `--name=${name}`,
    `--data-dir=${dataDir}`,
    `--listen-client-urls=http://127.0.0.1:${clientPort}`,
    `--advertise-client-urls=http://127.0.0.1:${clientPort}`,
    `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
    `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
    `--initial-cluster=${name}=http://127.0.0.1:${peerPort}`,
  ];
  const proc = ManagedProcess.start({
    name,
    command: kind === "etcd" ? "etcd" : process.execPath,
    args: kind === "etcd" ? flags : [registryNodeBin, ...flags],
    logPath: join(dir.path, `${name}.log`),
  });
  started.push(proc);
  const endpoint = `127.0.0.1:${clientPort}`;
  await waitFor(async () => (await fetch(`http://${endpoint}/health`)).ok, {
    timeoutMs: 20_000,
    describe: () => `${kind} on ${dataDir}: ${proc.logTail()}`,
  });
  return { proc, endpoints: [endpoint] };
}

async function fill(endpoints: string[]) {
  const ctl = (...args: string[]) => runEtcdctl(args, { endpoints });
  for (let i = 0; i < 10; i++) await ctl("put", `s/${i}`, `v${i}`);
  await ctl("del", "s/3");
  await ctl("put", "s/1", "again");
  const lease = /lease ([0-9a-f]+) granted/.exec((await ctl("lease", "grant", "600")).stdout)![1]!;
  await ctl("put", "s/leased", "x", "--lease", lease);
  return lease;
}

async function view(endpoints: string[]) {
  const get = await runEtcdctl(["get", "s/", "--prefix", "-w", "json"], { endpoints });
  const body = JSON.parse(get.stdout) as { header: { revision: number }; kvs: unknown[] };
  const hash = (await runEtcdctl(["endpoint", "hashkv"], { endpoints })).stdout.split(", ")[1]!.trim();
  const leases = (await runEtcdctl(["lease", "list"], { endpoints })).stdout;
  return { revision: body.header.revision, kvs: body.kvs, hash, leases };
}

describe("snapshots across registry-node and etcd", () => {
  it("registry-node -> etcdctl snapshot save/status/restore -> etcd: same keys, revisions and HashKV", async () => {
    const source: Cluster = await startCluster({ kind: "registry-node" });
    started.push(source);
    await fill(source.endpoints);
    const before = await view(source.endpoints);
    const file = join(dir.path, "from-registry.db");
    expect((await runEtcdctl(["snapshot", "save", file], { endpoints: source.endpoints })).code).toBe(0);
    const status = await runEtcdctl(["snapshot", "status", file, "-w", "json"], { endpoints: [] });
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout).revision).toBe(before.revision);

    const peerPort = await freePort();
    const restored = await runCommand(
      "etcdctl",
      [
        "snapshot",
        "restore",
        file,
        `--data-dir=${join(dir.path, "etcd-restored")}`,
        "--name=e1",
        `--initial-cluster=e1=http://127.0.0.1:${peerPort}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
      ],
      { env: { ETCDCTL_API: "3" } },
    );
    expect(restored.code, restored.stderr).toBe(0);
    const etcd = await startOn("etcd", join(dir.path, "etcd-restored"), "e1", peerPort);
    expect(await view(etcd.endpoints)).toEqual(before);
  });

  it("etcd -> etcdctl snapshot save -> registry-node snapshot restore -> registry-node: same keys, revisions and HashKV", async () => {
    const source: Cluster = await startCluster({ kind: "etcd" });
    started.push(source);
    await fill(source.endpoints);
    const before = await view(source.endpoints);
    const file = join(dir.path, "from-etcd.db");
    expect((await runEtcdctl(["snapshot", "save", file], { endpoints: source.endpoints })).code).toBe(0);

    const peerPort = await freePort();
    const dataDir = join(dir.path, "registry-restored");
    const restored = await runCommand(process.execPath, [
      registryNodeBin,
      "snapshot",
      "restore",
      file,
      `--data-dir=${dataDir}`,
      "--name=r1",
      `--initial-cluster=r1=http://127.0.0.1:${peerPort}`,
    ]);
    expect(restored.code, restored.stderr).toBe(0);
    const ours = await startOn("registry-node", dataDir, "r1", peerPort);
    expect(await view(ours.endpoints)).toEqual(before);
    // And it goes on from there.
    expect((await runEtcdctl(["put", "s/after", "1"], { endpoints: ours.endpoints })).code).toBe(0);
  });

  it("a corrupted snapshot is refused by registry-node snapshot restore", async () => {
    const file = join(dir.path, "from-etcd.db");
    const bad = join(dir.path, "bad.db");
    const bytes = (await import("node:fs")).readFileSync(file);
    bytes[bytes.length - 100] ^= 0xff;
    (await import("node:fs")).writeFileSync(bad, bytes);
    const r = await runCommand(process.execPath, [
      registryNodeBin,
      "snapshot",
      "restore",
      bad,
      `--data-dir=${join(dir.path, "x")}`,
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("expected sha256");
  });
});
