// registry-node's HTTP side: the JSON gateway (etcd's paths and JSON), errors as
// grpc-gateway answers them, /health, /version, /metrics, and the NOSPACE quota flow.

import { type Cluster, runEtcdctl, startCluster } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let cluster: Cluster;
let base: string;
const b64 = (s: string) => Buffer.from(s).toString("base64");

beforeAll(async () => {
  cluster = await startCluster({ kind: "registry-node", extraArgs: ["--quota-backend-bytes=200000"] });
  base = cluster.clientUrls[0]!;
});
afterAll(async () => {
  await cluster?.stop({ remove: true });
});

const post = async (path: string, body: unknown) => {
  const r = await fetch(`${base}${path}`, {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
};

describe("JSON gateway", () => {
  it("put and range with base64 bytes and int64 as strings; camelCase accepted", async () => {
    const put = await post("/v3/kv/put", { key: b64("g/k"), value: b64("v") });
    expect(put.status).toBe(200);
    const rev = (put.json.header as { revision: string }).revision;
    expect(typeof rev).toBe("string");
    const range = await post("/v3/kv/range", { key: b64("g/"), rangeEnd: b64("g0") });
    expect(range.json.kvs).toEqual([
      { key: b64("g/k"), create_revision: rev, mod_revision: rev, version: "1", value: b64("v") },
    ]);
    expect(range.json.count).toBe("1");
  });

  it("bad JSON gets 400 with a message; an etcd error keeps its code", async () => {
    const bad = await post("/v3/kv/range", "{not json");
    expect(bad.status).toBe(400);
    expect(bad.json.code).toBe(3);
    expect(String(bad.json.error)).not.toBe("");
    const empty = await post("/v3/kv/range", {});
    expect(empty).toEqual({
      status: 400,
      json: { error: "etcdserver: key is not provided", message: "etcdserver: key is not provided", code: 3 },
    });
    const future = await post("/v3/kv/range", { key: b64("g/k"), revision: "99999" });
    expect(future.json.code).toBe(11);
  });

  it("watch streams results as JSON lines", async () => {
    const ctl = new AbortController();
    const res = await fetch(`${base}/v3/watch`, {
      method: "POST",
      body: JSON.stringify({ create_request: { key: b64("gw/"), range_end: b64("gw0") } }),
      signal: ctl.signal,
    });
    const reader = res.body!.getReader();
    const lines: Record<string, { created?: boolean; events?: unknown[] }>[] = [];
    let text = "";
    const readUntil = async (n: number) => {
      while (lines.length < n) {
        const { value, done } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
        const parts = text.split("\n");
        text = parts.pop()!;
        for (const p of parts) if (p.trim()) lines.push(JSON.parse(p));
      }
    };
    await readUntil(1);
    expect(lines[0]!.result!.created).toBe(true);
    await post("/v3/kv/put", { key: b64("gw/a"), value: b64("1") });
    await readUntil(2);
    expect(lines[1]!.result!.events).toHaveLength(1);
    ctl.abort();
  });

  it("/health, /version and /metrics", async () => {
    expect(await (await fetch(`${base}/health`)).json()).toEqual({ health: "true" });
    expect(await (await fetch(`${base}/version`)).json()).toEqual({
      etcdserver: "3.4.23",
      etcdcluster: "3.4.0",
    });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain("etcd_server_has_leader 1");
    expect(metrics).toContain("etcd_mvcc_db_total_size_in_bytes");
  });
});

describe("space quota", () => {
  it("raises NOSPACE at the quota, refuses writes but not deletes, and recovers after compact, defrag and disarm", async () => {
    const opts = { endpoints: cluster.endpoints };
    let refused = "";
    for (let i = 0; i < 100 && refused === ""; i++) {
      const r = await runEtcdctl(["put", `q/${i}`], { ...opts, stdin: "x".repeat(10_000) });
      if (r.code !== 0) refused = r.stderr;
    }
    expect(refused).toContain("etcdserver: mvcc: database space exceeded");
    expect((await runEtcdctl(["alarm", "list"], opts)).stdout).toMatch(/alarm:NOSPACE/);
    expect((await runEtcdctl(["put", "q/small", "1"], opts)).stderr).toContain("database space exceeded");
    expect((await runEtcdctl(["del", "q/", "--prefix"], opts)).code).toBe(0);
    const rev = JSON.parse((await runEtcdctl(["get", "q/", "-w", "json"], opts)).stdout).header.revision;
    expect((await runEtcdctl(["compact", String(rev), "--physical"], opts)).code).toBe(0);
    const sizeBefore = JSON.parse((await runEtcdctl(["endpoint", "status", "-w", "json"], opts)).stdout)[0]
      .Status.dbSize;
    expect((await runEtcdctl(["defrag"], opts)).stdout).toMatch(/Finished defragmenting etcd member/);
    const sizeAfter = JSON.parse((await runEtcdctl(["endpoint", "status", "-w", "json"], opts)).stdout)[0]
      .Status.dbSize;
    expect(sizeAfter).toBeLessThan(sizeBefore);
    expect((await runEtcdctl(["alarm", "disarm"], opts)).code).toBe(0);
    expect((await runEtcdctl(["alarm", "list"], opts)).stdout).toBe("");
    expect(await runEtcdctl(["put", "q/after", "1"], opts)).toMatchObject({ code: 0, stdout: "OK\n" });
  });
});
