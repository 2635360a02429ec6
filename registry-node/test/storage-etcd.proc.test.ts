// Lives in test/ (not test/storage/): the vitest `proc` project only picks up test/*.proc.test.ts.
// A real etcd's backend file (member/snap/db) opens in our engine: etcd's buckets are there
// and the "key" bucket holds one revision per put. Skipped when /usr/bin/etcd is absent.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NodeFileSystem } from "../src/io/index.js";
import { DB } from "../src/storage/index.js";
import { bbolt, buildBboltcheck, haveGoBbolt, utf8 } from "./storage/helpers.js";
import { type Child, freePort, kill, start, waitFor } from "./storage/proc-helpers.js";

const haveEtcd = existsSync("/usr/bin/etcd") && existsSync("/usr/bin/etcdctl") && haveGoBbolt;
const dir = mkdtempSync(join(tmpdir(), "regmesh-etcd-"));
const children: Child[] = [];

afterAll(async () => {
  for (const c of children) await kill(c);
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!haveEtcd)("etcd interop", () => {
  it("opens member/snap/db written by a real etcd", async () => {
    const [client, peer] = [await freePort(), await freePort()];
    const clientUrl = `http://127.0.0.1:${client}`;
    const peerUrl = `http://127.0.0.1:${peer}`;
    const dataDir = join(dir, "data");
    const etcd = start("/usr/bin/etcd", [
      "--name=default",
      `--data-dir=${dataDir}`,
      `--listen-client-urls=${clientUrl}`,
      `--advertise-client-urls=${clientUrl}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=default=${peerUrl}`,
    ]);
    children.push(etcd);
    const ctl = (...args: string[]) =>
      execFileSync("/usr/bin/etcdctl", [`--endpoints=${clientUrl}`, "--command-timeout=2s", ...args], {
        encoding: "utf8",
        env: { ...process.env, ETCDCTL_API: "3" },
        stdio: ["ignore", "pipe", "pipe"],
      });
    await waitFor(
      () => {
        try {
          ctl("put", "probe", "1");
          return true;
        } catch {
          return false;
        }
      },
      30_000,
      "etcd to accept a put",
    );
    const puts = 6;
    for (let i = 1; i < puts; i++) ctl("put", `/svc/key${i}`, `value-${i}`);
    await kill(etcd, "SIGTERM");

    const path = join(dataDir, "member", "snap", "db");
    expect(bbolt(buildBboltcheck(), "check", path).trim()).toBe("ok");
    const db = await DB.open(path, { fs: new NodeFileSystem(), readOnly: true });
    const { names, keys } = await db.view((tx) => {
      const names: string[] = [];
      const c = tx.cursor();
      for (let e = c.first(); e; e = c.next()) names.push(new TextDecoder().decode(e.key));
      let keys = 0;
      tx.bucket(utf8("key"))!.forEach(() => {
        keys++;
      });
      return { names, keys };
    });
    expect(names).toEqual(expect.arrayContaining(["key", "meta", "lease", "members", "cluster"]));
    expect(keys).toBe(puts);
    expect((await db.check()).errors).toEqual([]);
    await db.close();
  });
});
