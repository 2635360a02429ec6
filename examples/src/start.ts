// `npm start`: a one-member registry-node on a local data directory, example services that
// register themselves and a client that discovers and calls them, with a steady small load,
// until Ctrl-C. The examples use the etcd v3 API directly through @regmesh/proto for now;
// they move to the SDK and the mesher as those land (see docs/status.md).

import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { credentials } from "@grpc/grpc-js";
import { etcdserverpb } from "@regmesh/proto";

const repo = fileURLToPath(new URL("../../", import.meta.url));
const clientPort = Number(process.env.REGMESH_CLIENT_PORT ?? 23790);
const peerPort = clientPort + 1;
const dataDir = process.env.REGMESH_DATA_DIR ?? join(repo, "data");
const endpoint = `127.0.0.1:${clientPort}`;
const prefix = "/regmesh/services";

const log = (msg: string) => process.stdout.write(`[start] ${msg}\n`);
const children: ChildProcess[] = [];

function startRegistry(): ChildProcess {
  mkdirSync(dataDir, { recursive: true });
  const child = spawn(
    process.execPath,
    [
      join(repo, "registry-node/bin/registry-node.js"),
      "--name=local",
      `--data-dir=${join(dataDir, "registry")}`,
      `--listen-client-urls=http://127.0.0.1:${clientPort}`,
      `--advertise-client-urls=http://127.0.0.1:${clientPort}`,
      `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
      `--initial-cluster=local=http://127.0.0.1:${peerPort}`,
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  children.push(child);
  return child;
}

async function waitHealthy(): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(`http://${endpoint}/health`);
      if (r.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`registry at ${endpoint} did not become healthy`);
}

const unary =
  <Req, Res>(f: (req: Req, cb: (err: Error | null, res: Res) => void) => unknown) =>
  (req: Req) =>
    new Promise<Res>((resolve, reject) => f(req, (err, res) => (err ? reject(err) : resolve(res))));

/** An example HTTP service instance that registers itself on a lease and keeps it alive. */
async function startGreeter(id: string, zone: string) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ greeting: "hello", from: id, zone, path: req.url }));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  const kv = new etcdserverpb.KVClient(endpoint, credentials.createInsecure());
  const lease = new etcdserverpb.LeaseClient(endpoint, credentials.createInsecure());
  const grant = await unary<etcdserverpb.LeaseGrantRequest, etcdserverpb.LeaseGrantResponse>(
    lease.leaseGrant.bind(lease),
  )({ TTL: 10n, ID: 0n });
  const value = {
    Op: 0,
    Addr: `127.0.0.1:${port}`,
    Metadata: { zone, weight: 100, protocol: "http", version: "1.0.0" },
  };
  await unary(kv.put.bind(kv))(
    etcdserverpb.PutRequest.create({
      key: Buffer.from(`${prefix}/greeter/${id}`),
      value: Buffer.from(JSON.stringify(value)),
      lease: grant.ID,
    }),
  );
  const keepAlive = lease.leaseKeepAlive();
  keepAlive.on("error", () => {});
  const timer = setInterval(() => keepAlive.write({ ID: grant.ID }), 3000);
  log(`greeter ${id} on 127.0.0.1:${port}, registered with lease ${grant.ID.toString(16)}`);
  return {
    async stop() {
      clearInterval(timer);
      keepAlive.end();
      await unary(lease.leaseRevoke.bind(lease))({ ID: grant.ID }).catch(() => {});
      server.close();
      kv.close();
      lease.close();
    },
  };
}

/** A client that lists and watches the greeter instances and calls them round-robin. */
async function startCaller() {
  const kv = new etcdserverpb.KVClient(endpoint, credentials.createInsecure());
  const watch = new etcdserverpb.WatchClient(endpoint, credentials.createInsecure());
  const instances = new Map<string, string>();
  const key = Buffer.from(`${prefix}/greeter/`);
  const end = Buffer.from(`${prefix}/greeter0`);
  const listed = await unary<etcdserverpb.RangeRequest, etcdserverpb.RangeResponse>(kv.range.bind(kv))(
    etcdserverpb.RangeRequest.create({ key, rangeEnd: end }),
  );
  for (const item of listed.kvs) instances.set(item.key.toString(), JSON.parse(item.value.toString()).Addr);
  const stream = watch.watch();
  stream.on("error", () => {});
  stream.on("data", (r: etcdserverpb.WatchResponse) => {
    for (const ev of r.events) {
      const k = ev.kv!.key.toString();
      if (ev.type === 1) instances.delete(k);
      else instances.set(k, JSON.parse(ev.kv!.value.toString()).Addr);
    }
  });
  stream.write({
    createRequest: etcdserverpb.WatchCreateRequest.create({
      key,
      rangeEnd: end,
      startRevision: listed.header!.revision + 1n,
    }),
  });
  let n = 0;
  let ok = 0;
  const counts = new Map<string, number>();
  const timer = setInterval(async () => {
    const addrs = [...instances.values()];
    if (addrs.length === 0) return;
    const addr = addrs[n++ % addrs.length]!;
    try {
      const body = (await (await fetch(`http://${addr}/hello`)).json()) as { from: string };
      ok += 1;
      counts.set(body.from, (counts.get(body.from) ?? 0) + 1);
    } catch {
      // an instance went away between discovery and the call
    }
  }, 200);
  const report = setInterval(() => {
    log(
      `calls ok: ${ok}; by instance: ${JSON.stringify(Object.fromEntries(counts))}; instances: ${instances.size}`,
    );
  }, 5000);
  return {
    stop() {
      clearInterval(timer);
      clearInterval(report);
      stream.cancel();
      kv.close();
      watch.close();
    },
  };
}

async function main(): Promise<void> {
  log(`starting registry-node on ${endpoint} (data in ${dataDir})`);
  const registry = startRegistry();
  registry.once("exit", (code) => {
    log(`registry-node exited (${code})`);
    process.exit(1);
  });
  await waitHealthy();
  const greeters = [await startGreeter("greeter-1", "zone-a"), await startGreeter("greeter-2", "zone-b")];
  const caller = await startCaller();
  log("running; look at:");
  log(`  registry health   curl http://${endpoint}/health`);
  log(`  registry metrics  curl http://${endpoint}/metrics`);
  log(`  registered        ETCDCTL_API=3 etcdctl --endpoints=${endpoint} get --prefix ${prefix}/`);
  log("Ctrl-C to stop");
  const stop = async () => {
    log("stopping");
    caller.stop();
    await Promise.all(greeters.map((g) => g.stop()));
    registry.removeAllListeners("exit");
    for (const c of children) c.kill("SIGTERM");
    process.exit(0);
  };
  process.once("SIGINT", () => void stop());
  process.once("SIGTERM", () => void stop());
}

await main();
