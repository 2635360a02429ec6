// `npm start`: the whole system on one machine, until Ctrl-C.
//
//   registry-node (one member, data in ./data/registry)
//   frontend  (Node)          + mesher    GET /checkout: orders over HTTP, quotes over gRPC
//   orders    (Node)          + mesher    GET /orders: inventory and pricing over HTTP
//   inventory (Python)        + mesher    GET /stock: pricing over HTTP; this mesher also serves the bridge
//   quotes    (Node, gRPC)    + mesher    quotes.Quotes/Get
//   pricing   (Node, SDK)     no mesher   registers itself, calls inventory through an in-process Mesh
//   a load loop: a few checkouts per second into frontend's mesher
//   examples/bridge/curl-client.sh, once: the bridge over REST and JSON-RPC with curl
//
// Every app calls its own mesher's outbound port with `Host: <service>` (gRPC: the channel's
// authority); the mesher picks an instance and calls the inbound port of that instance's mesher,
// which hands the call to its app. Each mesher's admin port shows what it saw.
//
// Environment (all optional):
//   REGMESH_DATA_DIR      data folder (default ./data): registry, mesher caches, logs/
//   REGMESH_CLIENT_PORT   the registry's client port (default 23790; 0 picks a free one)
//   REGMESH_PEER_PORT     its peer port (default client port + 1; 0 picks a free one)
//   REGMESH_EXAMPLES_PORT first port of the services (default 17000; 0 picks free ports): service
//                         k (frontend 1, orders 2, inventory 3, quotes 4, pricing 5) uses
//                         base+10k (app), +1 (mesher outbound), +2 (inbound), +3 (admin), +4 (bridge)
//   REGMESH_LOAD_RPS      checkouts per second (default 2)
//   REGMESH_SUMMARY_MS    time between traffic summaries (default 5000)
//
// Every child runs in its own process group, so a Ctrl-C in the terminal reaches this process
// only; it then stops the children in order, each by pid (SIGTERM, SIGKILL after a grace): the
// load, then the meshers and pricing (they deregister while the registry is still up and let
// calls in flight finish), then the apps, then the registry. It exits 0.

import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = fileURLToPath(new URL("../../", import.meta.url));
const dataDir = resolve(process.env.REGMESH_DATA_DIR ?? join(repo, "data"));
const logDir = join(dataDir, "logs");
const prefix = "/regmesh";
const loadRps = envNumber("REGMESH_LOAD_RPS", 2, 0.1, 100);
const summaryMs = envNumber("REGMESH_SUMMARY_MS", 5_000, 100, 3_600_000);
/** How long a child may take to stop after SIGTERM before it gets SIGKILL. */
const STOP_GRACE_MS = 5_000;
const REGISTRY_HEALTHY_TIMEOUT_MS = 30_000;
const SERVICES_READY_TIMEOUT_MS = 60_000;
/** Checkouts in flight at most; the load loop skips a beat beyond it. */
const LOAD_IN_FLIGHT_MAX = 8;
const SKUS = ["apple", "pear", "plum", "fig", "quince"];

const log = (msg: string) => process.stdout.write(`[start] ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dist = (file: string) => join(repo, "examples/dist/services", file);
const shown = (p: string) => (p.startsWith(repo) ? `./${relative(repo, p)}` : p);

// -----------------------------------------------------------------------------------------------
// What runs

interface MeshedService {
  name: string;
  what: string;
  /** Block of ports: base + 10 * block. */
  block: number;
  command: string;
  args: string[];
  protocol: "http" | "grpc";
  healthCheck: string;
  bridge: boolean;
}

const MESHED: MeshedService[] = [
  {
    name: "inventory",
    what: "Python",
    block: 3,
    command: "python3",
    args: ["-u", join(repo, "examples/python/inventory.py")],
    protocol: "http",
    healthCheck: "http:/health",
    bridge: true,
  },
  {
    name: "quotes",
    what: "Node, gRPC",
    block: 4,
    command: process.execPath,
    args: [dist("quotes.js")],
    protocol: "grpc",
    healthCheck: "grpc",
    bridge: false,
  },
  {
    name: "orders",
    what: "Node",
    block: 2,
    command: process.execPath,
    args: [dist("orders.js")],
    protocol: "http",
    healthCheck: "http:/health",
    bridge: false,
  },
  {
    name: "frontend",
    what: "Node",
    block: 1,
    command: process.execPath,
    args: [dist("frontend.js")],
    protocol: "http",
    healthCheck: "http:/health",
    bridge: false,
  },
];
const PRICING_BLOCK = 5;

interface Ports {
  app: number;
  outbound: number;
  inbound: number;
  admin: number;
  bridge: number;
}

// -----------------------------------------------------------------------------------------------
// Ports

function envNumber(name: string, def: number, min: number, max: number): number {
  const raw = process.env[name];
  const v = raw === undefined || raw === "" ? def : Number(raw);
  if (!(v >= min && v <= max)) throw new Error(`${name}: want a number in ${min}..${max}, got ${raw}`);
  return v;
}

function envPort(name: string, def: number): number {
  const raw = process.env[name];
  const v = raw === undefined || raw === "" ? def : Number(raw);
  if (!Number.isInteger(v) || v < 0 || v > 65_535) throw new Error(`${name}: want a port number, got ${raw}`);
  return v;
}

/** `n` distinct free loopback ports (held open together while they are chosen, then released). */
async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      servers.push(s);
      await new Promise<void>((ok, fail) => {
        s.once("error", fail);
        s.listen(0, "127.0.0.1", () => ok());
      });
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

async function choosePorts(): Promise<{ client: number; peer: number; services: Map<number, Ports> }> {
  let client = envPort("REGMESH_CLIENT_PORT", 23_790);
  let peer = envPort("REGMESH_PEER_PORT", client === 0 ? 0 : client + 1);
  const base = envPort("REGMESH_EXAMPLES_PORT", 17_000);
  const blocks = [...MESHED.map((s) => s.block), PRICING_BLOCK];
  const free = await freePorts(2 + (base === 0 ? blocks.length * 5 : 0));
  if (client === 0) client = free[0]!;
  if (peer === 0) peer = free[1]!;
  const services = new Map<number, Ports>();
  blocks.forEach((b, i) => {
    const at = (offset: number) => (base === 0 ? free[2 + i * 5 + offset]! : base + 10 * b + offset);
    services.set(b, { app: at(0), outbound: at(1), inbound: at(2), admin: at(3), bridge: at(4) });
  });
  return { client, peer, services };
}

// -----------------------------------------------------------------------------------------------
// Children

interface Child {
  name: string;
  proc: ChildProcess;
  pid: number;
  logPath: string;
  /** Shutdown order: 0 first (meshers, pricing), then 1 (apps), then 2 (registry). */
  stage: number;
  exited: boolean;
  exit: Promise<void>;
}

const children: Child[] = [];
let stopping = false;

function spawnChild(
  name: string,
  stage: number,
  command: string,
  args: string[],
  env: Record<string, string> = {},
): Child {
  const logPath = join(logDir, `${name}.log`);
  const fd = openSync(logPath, "w");
  // MESHER_* variables configure meshers; none leak in, so what runs is what the flags say.
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("MESHER_")));
  const proc = spawn(command, args, {
    cwd: repo,
    env: { ...base, ...env },
    stdio: ["ignore", fd, fd],
    // Its own process group: a Ctrl-C in the terminal reaches only this process, which then
    // stops the children in order.
    detached: true,
  });
  closeSync(fd);
  if (proc.pid === undefined) {
    // spawn reports why (ENOENT: not installed) in an 'error' event, after this returns.
    proc.once("error", () => {});
    throw new Error(`${name}: could not start ${command} (is it installed?)`);
  }
  let markExited!: () => void;
  const child: Child = {
    name,
    proc,
    pid: proc.pid,
    logPath,
    stage,
    exited: false,
    exit: new Promise((r) => (markExited = r)),
  };
  proc.once("error", (err) => {
    log(`${name}: ${err.message}`);
    if (!child.exited) {
      child.exited = true;
      markExited();
    }
  });
  proc.once("exit", (code, signal) => {
    child.exited = true;
    markExited();
    if (stopping) return;
    log(`${name} (pid ${child.pid}) exited unexpectedly (${signal ?? `code ${code}`}); the end of its log:`);
    const lines = tail(logPath, 15);
    for (const line of lines) log(`  | ${line}`);
    if (lines.some((l) => l.includes("EADDRINUSE"))) {
      log("a port is taken: REGMESH_EXAMPLES_PORT=0 and REGMESH_CLIENT_PORT=0 pick free ones");
    }
    void shutdown(1);
  });
  children.push(child);
  return child;
}

function tail(path: string, lines: number): string[] {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines);
  } catch {
    return [];
  }
}

/** SIGTERM by pid; SIGKILL if it is still there after the grace. */
async function stopChild(c: Child): Promise<void> {
  if (c.exited) return;
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(c.pid, s);
    } catch {
      // already gone
    }
  };
  signal("SIGTERM");
  const t0 = Date.now();
  const timer = new Promise<boolean>((r) => setTimeout(() => r(false), STOP_GRACE_MS).unref());
  if (await Promise.race([c.exit.then(() => true), timer])) return;
  log(`${c.name} (pid ${c.pid}) still running ${Date.now() - t0} ms after SIGTERM: SIGKILL`);
  signal("SIGKILL");
  await Promise.race([c.exit, sleep(2_000)]);
}

// -----------------------------------------------------------------------------------------------
// HTTP helpers

function get(
  url: string,
  headers: Record<string, string> = {},
  timeoutMs = 5_000,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, timeout: timeoutMs, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url}: no answer in ${timeoutMs} ms`)));
    req.on("error", reject);
  });
}

async function waitFor(what: string, timeoutMs: number, ok: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (stopping) throw new Error("stopping");
    try {
      if (await ok()) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${what}: not ready after ${timeoutMs / 1000} s`);
    await sleep(200);
  }
}

// -----------------------------------------------------------------------------------------------
// Load and summaries

interface Edge {
  caller: string;
  callee: string;
  requests: number;
  errors: number;
}

const load = { sent: 0, ok: 0, failed: 0, inFlight: 0, lastTrace: "", lastError: "" };
let loadTimer: NodeJS.Timeout | undefined;
let summaryTimer: NodeJS.Timeout | undefined;

function startLoad(frontendInbound: number): void {
  let n = 0;
  loadTimer = setInterval(() => {
    if (load.inFlight >= LOAD_IN_FLIGHT_MAX) return;
    const sku = SKUS[n++ % SKUS.length]!;
    const traceId = randomBytes(16).toString("hex");
    load.sent += 1;
    load.inFlight += 1;
    get(`http://127.0.0.1:${frontendInbound}/checkout?sku=${sku}`, {
      traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01`,
      "x-mesher-caller": "loadgen",
    })
      .then(
        (r) => {
          if (r.status === 200) {
            load.ok += 1;
            load.lastTrace = traceId;
          } else {
            load.failed += 1;
            load.lastError = `HTTP ${r.status}: ${r.body.slice(0, 200)}`;
          }
        },
        (err: Error) => {
          load.failed += 1;
          load.lastError = err.message;
        },
      )
      .finally(() => (load.inFlight -= 1));
  }, 1_000 / loadRps);
}

/** Every caller -> callee edge the meshers saw (an edge seen by both ends: the larger count). */
async function edges(admins: number[]): Promise<Map<string, Edge>> {
  const all = new Map<string, Edge>();
  await Promise.all(
    admins.map(async (port) => {
      try {
        const r = await get(`http://127.0.0.1:${port}/v1/topology`, {}, 2_000);
        for (const e of JSON.parse(r.body) as Edge[]) {
          const k = `${e.caller || "?"}->${e.callee}`;
          const cur = all.get(k);
          if (cur === undefined || e.requests > cur.requests) all.set(k, e);
        }
      } catch {
        // that mesher is busy or stopping: the next summary has it
      }
    }),
  );
  return all;
}

const EDGE_ORDER = [
  "frontend->orders",
  "frontend->quotes",
  "orders->inventory",
  "orders->pricing",
  "pricing->inventory",
  "inventory->pricing",
];

function startSummaries(admins: number[]): void {
  let last = { at: Date.now(), ok: 0 };
  summaryTimer = setInterval(() => {
    void edges(admins).then((all) => {
      if (stopping) return;
      const now = Date.now();
      const rate = ((load.ok - last.ok) * 1000) / Math.max(1, now - last.at);
      last = { at: now, ok: load.ok };
      const parts: string[] = [];
      let errors = 0;
      for (const k of EDGE_ORDER) {
        const e = all.get(k);
        parts.push(`${k} ${e?.requests ?? 0}`);
        errors += e?.errors ?? 0;
      }
      let line =
        `traffic: ${load.sent} checkouts, ${load.ok} ok, ${load.failed} failed (${rate.toFixed(1)}/s)` +
        ` | ${parts.join(", ")} | edge errors ${errors}`;
      if (load.lastTrace !== "") line += ` | last trace ${load.lastTrace}`;
      log(line);
      if (load.failed > 0 && load.lastError !== "") log(`  last failure: ${load.lastError}`);
    });
  }, summaryMs);
}

// -----------------------------------------------------------------------------------------------
// Shutdown

async function shutdown(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  log("stopping: the load, then the meshers and pricing, then the apps, then the registry");
  clearInterval(loadTimer);
  clearInterval(summaryTimer);
  const deadline = Date.now() + 3_000;
  while (load.inFlight > 0 && Date.now() < deadline) await sleep(50);
  for (const stage of [0, 1, 2]) {
    await Promise.all(children.filter((c) => c.stage === stage).map(stopChild));
  }
  const left = children.filter((c) => !c.exited);
  if (left.length > 0) log(`still running: ${left.map((c) => `${c.name} (pid ${c.pid})`).join(", ")}`);
  log(`stopped ${children.length} processes`);
  process.exit(left.length > 0 && code === 0 ? 1 : code);
}

let firstSigintMs: number | undefined;
process.on("SIGINT", () => {
  if (firstSigintMs === undefined) {
    firstSigintMs = Date.now();
    void shutdown(0);
    return;
  }
  // A second Ctrl-C: no more waiting. One within a second of the first is the same Ctrl-C
  // delivered twice (npm forwards the signal its process group already got).
  if (Date.now() - firstSigintMs < 1_000) return;
  log("second Ctrl-C: SIGKILL to every child still running");
  for (const c of children) if (!c.exited) c.proc.kill("SIGKILL");
  process.exit(0);
});
process.on("SIGTERM", () => void shutdown(0));
// Last resort if this process dies another way: no child outlives it.
process.on("exit", () => {
  for (const c of children) {
    if (!c.exited) {
      try {
        process.kill(c.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
  }
});

// -----------------------------------------------------------------------------------------------
// Start

async function runBridgeClient(bridgeUrl: string): Promise<boolean> {
  const script = join(repo, "examples/bridge/curl-client.sh");
  return new Promise((resolve) => {
    const proc = spawn("bash", [script, bridgeUrl, "orders"], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    proc.stdout.on("data", (c: Buffer) => (out += c.toString()));
    proc.stderr.on("data", (c: Buffer) => (out += c.toString()));
    proc.once("error", (err) => {
      log(`bridge curl client: could not run bash: ${err.message}`);
      resolve(false);
    });
    proc.once("close", (code) => {
      for (const line of out.trimEnd().split("\n")) if (line !== "") log(`  [curl] ${line}`);
      resolve(code === 0);
    });
  });
}

async function main(): Promise<void> {
  for (const f of ["frontend.js", "orders.js", "quotes.js", "pricing.js"]) {
    if (!existsSync(dist(f))) throw new Error(`${shown(dist(f))} is missing: run \`npx tsc -b\` first`);
  }
  mkdirSync(logDir, { recursive: true });
  const t0 = Date.now();
  const since = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
  const ports = await choosePorts();
  const endpoint = `127.0.0.1:${ports.client}`;

  log(`registry-node: one member on ${endpoint}, data in ${shown(join(dataDir, "registry"))}`);
  const registry = spawnChild("registry-node", 2, process.execPath, [
    join(repo, "registry-node/bin/registry-node.js"),
    "--name=local",
    `--data-dir=${join(dataDir, "registry")}`,
    `--listen-client-urls=http://${endpoint}`,
    `--advertise-client-urls=http://${endpoint}`,
    `--listen-peer-urls=http://127.0.0.1:${ports.peer}`,
    `--initial-advertise-peer-urls=http://127.0.0.1:${ports.peer}`,
    `--initial-cluster=local=http://127.0.0.1:${ports.peer}`,
  ]);
  log(`registry-node: pid ${registry.pid}, log ${shown(registry.logPath)}`);
  await waitFor("registry-node", REGISTRY_HEALTHY_TIMEOUT_MS, async () => {
    const r = await get(`http://${endpoint}/health`, {}, 2_000);
    return r.status === 200;
  });
  log(`registry-node: healthy (${since()})`);

  const pricingPorts = ports.services.get(PRICING_BLOCK)!;
  const pricing = spawnChild("pricing", 0, process.execPath, [dist("pricing.js")], {
    APP_PORT: String(pricingPorts.app),
    REGISTRY: endpoint,
    PREFIX: prefix,
    INSTANCE: "pricing-1",
    DATA_DIR: join(dataDir, "pricing"),
  });
  mkdirSync(join(dataDir, "pricing"), { recursive: true });
  log(`pricing (Node, SDK in-process, no mesher): pid ${pricing.pid}, on 127.0.0.1:${pricingPorts.app}`);

  for (const s of MESHED) {
    const p = ports.services.get(s.block)!;
    const app = spawnChild(s.name, 1, s.command, s.args, {
      APP_PORT: String(p.app),
      OUTBOUND: `127.0.0.1:${p.outbound}`,
      INSTANCE: `${s.name}-1`,
    });
    const mesher = spawnChild(`${s.name}-mesher`, 0, process.execPath, [
      join(repo, "mesher/bin/mesher.js"),
      `--registry-endpoints=http://${endpoint}`,
      `--registry-prefix=${prefix}`,
      `--service=${s.name}`,
      `--instance-id=${s.name}-1`,
      `--protocol=${s.protocol}`,
      "--version=1.0.0",
      "--zone=local",
      "--app-address=127.0.0.1",
      `--app-port=${p.app}`,
      `--health-check=${s.healthCheck}`,
      // Twice the default: on a busy machine a slow answer is not a sick app.
      "--health-timeout=2s",
      `--inbound-listen=127.0.0.1:${p.inbound}`,
      `--outbound-listen=127.0.0.1:${p.outbound}`,
      `--admin-listen=127.0.0.1:${p.admin}`,
      ...(s.bridge ? [`--bridge-listen=127.0.0.1:${p.bridge}`] : []),
      `--data-dir=${join(dataDir, `mesher-${s.name}`)}`,
      "--drain-timeout=3s",
      "--log-level=info",
    ]);
    log(
      `${s.name} (${s.what}): pid ${app.pid} on 127.0.0.1:${p.app}; its mesher pid ${mesher.pid}` +
        ` (outbound ${p.outbound}, inbound ${p.inbound}, admin ${p.admin}${s.bridge ? `, bridge ${p.bridge}` : ""})`,
    );
  }

  log("waiting for every mesher to find its app healthy and register it ...");
  await Promise.all([
    waitFor("pricing", SERVICES_READY_TIMEOUT_MS, async () => {
      const r = await get(`http://127.0.0.1:${pricingPorts.app}/health`, {}, 2_000);
      return r.status === 200;
    }).then(() => log(`pricing: registered itself (${since()})`)),
    ...MESHED.map((s) =>
      waitFor(`${s.name}'s mesher`, SERVICES_READY_TIMEOUT_MS, async () => {
        const r = await get(`http://127.0.0.1:${ports.services.get(s.block)!.admin}/readyz`, {}, 2_000);
        return r.status === 200;
      }).then(() => log(`${s.name}: registered by its mesher (${since()})`)),
    ),
  ]);

  const inventory = ports.services.get(MESHED.find((s) => s.bridge)!.block)!;
  const bridgeUrl = `http://127.0.0.1:${inventory.bridge}`;
  log(`bridge: examples/bridge/curl-client.sh ${bridgeUrl}`);
  const bridgeOk = await runBridgeClient(bridgeUrl);
  log(bridgeOk ? "bridge curl client: ok" : "bridge curl client: FAILED (see the lines above)");

  const frontend = ports.services.get(1)!;
  startLoad(frontend.inbound);
  const admins = MESHED.map((s) => ports.services.get(s.block)!.admin);
  startSummaries(admins);
  log(`load: ${loadRps} checkouts/s into frontend's mesher (GET /checkout on its inbound port)`);
  log(`running (${since()}); look at:`);
  for (const s of [...MESHED].sort((a, b) => a.block - b.block)) {
    const p = ports.services.get(s.block)!;
    log(`  ${s.name.padEnd(10)} mesher admin  http://127.0.0.1:${p.admin}`);
  }
  log(`  ${"pricing".padEnd(10)} stats         http://127.0.0.1:${pricingPorts.app}/stats  (SDK, no mesher)`);
  log(`  ${"bridge".padEnd(10)} ${bridgeUrl}  (mesher/openapi.yaml)`);
  log(`  on a mesher admin port: /metrics /v1/topology /v1/endpoints /v1/breakers /v1/calls?trace=<id>`);
  log(`  e.g.   curl http://127.0.0.1:${frontend.admin}/v1/topology`);
  log(`         curl http://127.0.0.1:${inventory.bridge}/v1/services/orders`);
  log(`         curl 'http://127.0.0.1:${frontend.inbound}/checkout?sku=fig'   (through frontend's mesher)`);
  log(
    `         curl -H 'Host: orders' 'http://127.0.0.1:${frontend.outbound}/orders?sku=fig'   (as frontend)`,
  );
  log(`  registry   curl http://${endpoint}/health   curl http://${endpoint}/metrics`);
  log(`             etcdctl --endpoints=${endpoint} get --prefix ${prefix}/services/ --keys-only`);
  log(`  logs       ${shown(logDir)}/`);
  log(`a traffic summary every ${summaryMs / 1000} s; Ctrl-C to stop`);
}

main().catch((err: Error) => {
  if (stopping) return;
  log(`failed: ${err.message} (logs in ${shown(logDir)}/)`);
  void shutdown(1);
});
