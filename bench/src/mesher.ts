// Mesher data-path benchmark: one HTTP/1.1 call path measured several ways on loopback with
// wrk, against the same upstream app (a minimal node:http server answering a small body, in a
// child process):
//   direct                 wrk -> app
//   node:http proxy (ref)  wrk -> a ten-line node:http keep-alive proxy -> app: what one Node
//                          hop costs on this machine, so the mesher's own share shows
//   mesher pair            wrk -> caller mesher (outbound) -> app's mesher (inbound) -> app,
//                          routed by `Host: bench` through a real etcd (one member); twice, with
//                          the shipping default --log-level=info (an access-log line per hop per
//                          call) and with --log-level=warn (no access log)
//   haproxy                wrk -> HAProxy (Debian package, HTTP mode, keep-alive both sides) -> app
// and two measurements per path:
//   1. Max throughput: closed loop, THROUGHPUT_CONNECTIONS connections on THROUGHPUT_THREADS wrk
//      threads for PHASE_SECONDS. Also CPU per call of the proxy processes, from utime+stime in
//      /proc/<pid>/stat before and after, so throughput per core can be compared.
//   2. Added latency at moderate load: wrk2 is not packaged, so wrk is paced with its Lua
//      `delay()` hook: PACED_CONNECTIONS connections, each waiting PACED_DELAY_MS after every
//      response, which holds the rate near PACED_TARGET_RPS. wrk times each call from the
//      write of the request to the end of the response (the delay is not counted). A path
//      that keeps up with the rate has no queue, so coordinated omission (what wrk2 corrects)
//      hardly matters; a path near saturation lowers its own rate instead (closed loop), which
//      the printed rate shows, and its percentiles then understate what an open-loop client
//      would see.
// Ratios come from the same run, so a slow or busy machine moves all paths together.
//
// Run:  npx tsc -p bench && node bench/dist/mesher.js
// Env:  REGMESH_BENCH_SECONDS   seconds per measured phase (default 5)
//       REGMESH_BENCH_ROUNDS    interleaved rounds; medians are printed (default 3)
//       REGMESH_BENCH_PROFILE=1 run the meshers under `node --cpu-prof` and print their hot spots
//                               in the throughput phases (their figures are then slowed by it)
// Needs etcd, haproxy and wrk on PATH; as root it installs haproxy and wrk with apt-get.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import { SourceMap } from "node:module";
import { cpus, loadavg } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { type Cluster, freePort, ManagedProcess, startEtcd, tempDir } from "@regmesh/testkit";

// ---------------------------------------------------------------------------------------------
// Limits and load shapes, in one place.

const PHASE_SECONDS = Number(process.env.REGMESH_BENCH_SECONDS ?? 5);
// Paths are measured in interleaved rounds (the starting path rotates each round) and the
// median is printed: on a shared machine the others' load changes within seconds, and
// interleaving spreads that over all paths instead of landing on whichever ran then.
const ROUNDS = Number(process.env.REGMESH_BENCH_ROUNDS ?? 3);
const WARMUP_SECONDS = 3; // JIT and connection pools warm before anything is measured
const THROUGHPUT_CONNECTIONS = 32;
const THROUGHPUT_THREADS = 2;
// Many connections, each pausing long: a call's latency then changes the rate little (each
// connection sends one call per pause + latency), so a slow path is offered nearly the same
// load as a fast one. With 4 connections and 4 ms a path at 6 ms latency got only ~400 req/s.
const PACED_CONNECTIONS = 16;
const PACED_TARGET_RPS = 1000;
const PACED_DELAY_MS = Math.round((PACED_CONNECTIONS * 1000) / PACED_TARGET_RPS);
const WRK_TIMEOUT_S = 2; // wrk's per-call timeout (its default); calls slower than this count as errors
const WRK_KILL_GRACE_MS = 20_000; // a wrk run that overstays its -d by this much is killed
const START_TIMEOUT_MS = 30_000; // app, meshers, HAProxy: up and answering within this
const STOP_GRACE_MS = 5_000; // SIGTERM, then SIGKILL after this
const APP_BODY = '{"ok":true,"from":"bench-app"}\n'; // a small body, the same on every path
const SERVICE = "bench";

if (!Number.isInteger(PHASE_SECONDS) || PHASE_SECONDS < 1 || PHASE_SECONDS > 300) {
  throw new Error(`REGMESH_BENCH_SECONDS must be 1..300, got ${process.env.REGMESH_BENCH_SECONDS}`);
}
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || ROUNDS > 20) {
  throw new Error(`REGMESH_BENCH_ROUNDS must be 1..20, got ${process.env.REGMESH_BENCH_ROUNDS}`);
}
const profile = process.env.REGMESH_BENCH_PROFILE === "1";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const mesherBin = join(repoRoot, "mesher", "bin", "mesher.js");
const clockTicksPerS = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());

// ---------------------------------------------------------------------------------------------
// Tools: etcd, haproxy and wrk must be on PATH.

function onPath(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

function ensureTools(): void {
  const missing = ["haproxy", "wrk"].filter((c) => !onPath(c));
  if (missing.length > 0) {
    if (process.getuid?.() !== 0) {
      fail(`${missing.join(" and ")} not found; install them: sudo apt-get install -y haproxy wrk`);
    }
    console.log(`installing ${missing.join(", ")} with apt-get`);
    const apt = (args: string[]) =>
      spawnSync("apt-get", args, {
        stdio: "inherit",
        timeout: 300_000,
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      }).status === 0;
    if (
      !apt(["install", "-y", "haproxy", "wrk"]) &&
      !(apt(["update"]) && apt(["install", "-y", "haproxy", "wrk"]))
    ) {
      fail("apt-get install -y haproxy wrk failed; install them by hand and run again");
    }
    const still = missing.filter((c) => !onPath(c));
    if (still.length > 0) fail(`${still.join(" and ")} installed but not on PATH (${process.env.PATH})`);
  }
  if (!onPath("etcd")) fail("etcd not found on PATH (Debian: apt-get install -y etcd-server)");
  if (!existsSync(join(repoRoot, "mesher", "dist", "cli.js"))) {
    fail("mesher is not built: run npx tsc -b mesher");
  }
}

function fail(message: string): never {
  console.error(`bench/mesher: ${message}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Everything started is recorded here and stopped by pid at the end, even on error.

const started: ManagedProcess[] = [];
let cluster: Cluster | undefined;
const work = tempDir("regmesh-bench-mesher-");

async function stopEverything(): Promise<void> {
  for (const p of started.splice(0).reverse()) await p.stop(STOP_GRACE_MS);
  await cluster?.stop({ remove: true });
  cluster = undefined;
}

function start(name: string, command: string, args: string[]): ManagedProcess {
  const p = ManagedProcess.start({ name, command, args, logPath: join(work.path, `${name}.log`) });
  started.push(p);
  return p;
}

// ---------------------------------------------------------------------------------------------
// One plain GET with keep-alive off, for readiness checks only.

function get(port: number, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, path: "/", headers: { host }, agent: false, timeout: 2_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

/** Waits until a GET through `port` returns the app's body; throws with the logs after START_TIMEOUT_MS. */
async function answers(what: string, port: number, procs: ManagedProcess[]): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last = "";
  for (;;) {
    try {
      const r = await get(port, SERVICE);
      if (r.status === 200 && r.body === APP_BODY) return;
      last = `${r.status} ${r.body.slice(0, 200)}`;
    } catch (err) {
      last = (err as Error).message;
    }
    for (const p of procs) if (!p.running) throw new Error(`${p.name} exited:\n${p.logTail(30)}`);
    if (Date.now() > deadline) {
      throw new Error(
        `${what} did not answer within ${START_TIMEOUT_MS} ms (last: ${last})\n${procs.map((p) => `--- ${p.name}\n${p.logTail(20)}`).join("\n")}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---------------------------------------------------------------------------------------------
// The upstream app, the mesher pairs and HAProxy.

async function startApp(): Promise<{ proc: ManagedProcess; port: number }> {
  const port = await freePort();
  const script = join(work.path, "app.mjs");
  // Keep-alive longer than any phase, so no proxy sees its pooled connection closed mid-run.
  writeFileSync(
    script,
    `import http from "node:http";
const body = ${JSON.stringify(APP_BODY)};
const server = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) }).end(body));
});
server.keepAliveTimeout = 600_000;
server.headersTimeout = 610_000;
server.listen(${port}, "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
`,
  );
  const proc = start("app", process.execPath, [script]);
  await answers("app", port, [proc]);
  return { proc, port };
}

type Path = {
  name: string;
  port: number;
  proxies: ManagedProcess[];
  profileDirs?: string[];
  /** The measured throughput phases on the monotonic clock in µs (V8 profiles use the same clock). */
  windowsUs: [number, number][];
};

const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);

async function startMesherPair(name: string, appPort: number, logLevel: string): Promise<Path> {
  const registry = `--registry-endpoints=${cluster!.endpoints.map((e) => `http://${e}`).join(",")}`;
  // Explicit ports rather than the "mesher started" log line: at --log-level=warn it is not logged.
  const [inbound, appOutbound, appAdmin, outbound, callerAdmin] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const common = [registry, `--registry-prefix=/${name}`, `--log-level=${logLevel}`];
  const profileDirs = profile
    ? [join(work.path, `${name}-caller.prof`), join(work.path, `${name}-app.prof`)]
    : [];
  const nodeArgs = (i: number) =>
    profileDirs[i] !== undefined
      ? ["--cpu-prof", `--cpu-prof-dir=${profileDirs[i]}`, mesherBin]
      : [mesherBin];
  const appMesher = start(`${name}-app-mesher`, process.execPath, [
    ...nodeArgs(1),
    ...common,
    `--service=${SERVICE}`,
    `--app-port=${appPort}`,
    `--inbound-listen=127.0.0.1:${inbound}`,
    `--outbound-listen=127.0.0.1:${appOutbound}`,
    `--admin-listen=127.0.0.1:${appAdmin}`,
    `--data-dir=${join(work.path, `${name}-app-mesher.data`)}`,
  ]);
  const caller = start(`${name}-caller-mesher`, process.execPath, [
    ...nodeArgs(0),
    ...common,
    `--outbound-listen=127.0.0.1:${outbound}`,
    `--admin-listen=127.0.0.1:${callerAdmin}`,
    `--data-dir=${join(work.path, `${name}-caller-mesher.data`)}`,
  ]);
  await answers(`${name} (caller mesher -> app mesher -> app)`, outbound, [appMesher, caller]);
  return {
    name: `mesher pair (${logLevel})`,
    port: outbound,
    proxies: [caller, appMesher],
    profileDirs,
    windowsUs: [],
  };
}

async function startHaproxy(appPort: number): Promise<Path> {
  const port = await freePort();
  const cfg = join(work.path, "haproxy.cfg");
  // HTTP mode with keep-alive on both sides (http-keep-alive is HAProxy's default mode; said
  // here so the file reads on its own). No log: the mesher's info access log is the other
  // variant. nbthread is left to HAProxy (one per CPU it may run on).
  writeFileSync(
    cfg,
    `global
  maxconn 4096

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s

frontend bench
  bind 127.0.0.1:${port}
  default_backend app

backend app
  http-reuse safe
  server app1 127.0.0.1:${appPort}
`,
  );
  const check = spawnSync("haproxy", ["-c", "-q", "-f", cfg], { encoding: "utf8" });
  if (check.status !== 0) throw new Error(`haproxy -c rejected ${cfg}:\n${check.stdout}${check.stderr}`);
  // -db: stay in the foreground, so the pid we hold is HAProxy's and stop() reaches it.
  const proc = start("haproxy", "haproxy", ["-db", "-f", cfg]);
  await answers("haproxy", port, [proc]);
  return { name: "haproxy", port, proxies: [proc], windowsUs: [] };
}

/**
 * A reference hop: the smallest keep-alive proxy node:http allows (about ten lines). It says
 * what one Node process costs per call on this machine, so the mesher's own share shows.
 */
async function startNodeProxy(appPort: number): Promise<Path> {
  const port = await freePort();
  const script = join(work.path, "node-proxy.mjs");
  writeFileSync(
    script,
    `import http from "node:http";
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const server = http.createServer((req, res) => {
  const up = http.request({ host: "127.0.0.1", port: ${appPort}, method: req.method, path: req.url, headers: req.headers, agent }, (r) => {
    res.writeHead(r.statusCode, r.headers);
    r.pipe(res);
  });
  up.on("error", () => res.destroy());
  req.pipe(up);
});
server.keepAliveTimeout = 600_000;
server.headersTimeout = 610_000;
server.listen(${port}, "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
`,
  );
  const proc = start("node-proxy", process.execPath, [script]);
  await answers("node proxy", port, [proc]);
  return { name: "node proxy (ref)", port, proxies: [proc], windowsUs: [] };
}

// ---------------------------------------------------------------------------------------------
// CPU time from /proc: per process (utime + stime, all threads) and for the whole machine.

function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / clockTicksPerS;
}

/** Busy and total jiffies of all CPUs, from the first line of /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = f[3]! + (f[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

// ---------------------------------------------------------------------------------------------
// wrk runs.

type WrkResult = {
  requests: number;
  durationUs: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  p50Us: number;
  p99Us: number;
  p999Us: number;
};

function wrkScript(paced: boolean): string {
  const path = join(work.path, paced ? "paced.lua" : "report.lua");
  // done() prints one line of JSON; the percentiles are wrk's, in microseconds.
  writeFileSync(
    path,
    `${paced ? `function delay() return ${PACED_DELAY_MS} end\n` : ""}function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"durationUs":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"p50Us":%d,"p99Us":%d,"p999Us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
`,
  );
  return path;
}

async function wrk(port: number, opts: { paced: boolean; seconds: number }): Promise<WrkResult> {
  const args = [
    `-t${opts.paced ? 1 : THROUGHPUT_THREADS}`,
    `-c${opts.paced ? PACED_CONNECTIONS : THROUGHPUT_CONNECTIONS}`,
    `-d${opts.seconds}s`,
    `--timeout=${WRK_TIMEOUT_S}s`,
    "-H",
    `Host: ${SERVICE}`,
    "-s",
    wrkScript(opts.paced),
    `http://127.0.0.1:${port}/`,
  ];
  const proc = start(`wrk-${port}-${Date.now()}`, "wrk", args);
  const killer = setTimeout(() => proc.killNow("SIGKILL"), opts.seconds * 1000 + WRK_KILL_GRACE_MS);
  const status = await proc.exited.finally(() => clearTimeout(killer));
  started.splice(started.indexOf(proc), 1);
  const out = readFileSync(proc.logPath, "utf8");
  const line = out.split("\n").find((l) => l.startsWith("WRKJSON "));
  if (status.code !== 0 || line === undefined) {
    throw new Error(`wrk ${args.join(" ")} failed (${JSON.stringify(status)}):\n${out.slice(-2000)}`);
  }
  return JSON.parse(line.slice("WRKJSON ".length)) as WrkResult;
}

type ThroughputSample = {
  rps: number;
  calls: number;
  errors: number;
  proxyCpuS: number; // CPU of the proxy processes (the pair: both meshers)
  proxyRunnableS: number; // time they ran or waited to run, from /proc/<pid>/schedstat
  appCpuS: number;
  machineBusyPct: number;
};
type LatencySample = { rps: number; errors: number; p50Ms: number; p99Ms: number; p999Ms: number };

const errorCount = (r: WrkResult) =>
  r.errors.connect + r.errors.read + r.errors.write + r.errors.status + r.errors.timeout;

/** Nanoseconds on a CPU and waiting for one (first two fields of /proc/<pid>/schedstat). */
function runnableSecondsOf(pid: number): number {
  const [onCpuNs, waitNs] = readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ").map(Number);
  return (onCpuNs! + waitNs!) / 1e9;
}

async function throughput(path: Path, app: ManagedProcess): Promise<ThroughputSample> {
  const cpu0 = path.proxies.map((p) => cpuSecondsOf(p.pid));
  const run0 = path.proxies.map((p) => runnableSecondsOf(p.pid));
  const app0 = cpuSecondsOf(app.pid);
  const m0 = machineTicks();
  const t0Us = monotonicUs();
  const r = await wrk(path.port, { paced: false, seconds: PHASE_SECONDS });
  path.windowsUs.push([t0Us, monotonicUs()]);
  const m1 = machineTicks();
  return {
    rps: r.requests / (r.durationUs / 1e6),
    calls: r.requests,
    errors: errorCount(r),
    proxyCpuS: path.proxies.reduce((sum, p, i) => sum + cpuSecondsOf(p.pid) - cpu0[i]!, 0),
    proxyRunnableS: path.proxies.reduce((sum, p, i) => sum + runnableSecondsOf(p.pid) - run0[i]!, 0),
    appCpuS: cpuSecondsOf(app.pid) - app0,
    machineBusyPct: (100 * (m1.busy - m0.busy)) / (m1.total - m0.total),
  };
}

async function latency(path: Path): Promise<LatencySample> {
  const r = await wrk(path.port, { paced: true, seconds: PHASE_SECONDS });
  return {
    rps: r.requests / (r.durationUs / 1e6),
    errors: errorCount(r),
    p50Ms: r.p50Us / 1000,
    p99Ms: r.p99Us / 1000,
    p999Ms: r.p999Us / 1000,
  };
}

// ---------------------------------------------------------------------------------------------
// CPU profiles: self time and inclusive time per function, mapped to TypeScript lines.

type ProfileNode = {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
};

const sourceMaps = new Map<string, SourceMap | null>();

function where(url: string, line0: number, col0: number): string {
  if (!url.startsWith("file://")) return url === "" ? "(native)" : url;
  const file = fileURLToPath(url);
  let sm = sourceMaps.get(file);
  if (sm === undefined) {
    try {
      sm = new SourceMap(JSON.parse(readFileSync(`${file}.map`, "utf8")));
    } catch {
      sm = null;
    }
    sourceMaps.set(file, sm);
  }
  const entry = sm?.findEntry(line0, col0) as { originalSource?: string; originalLine?: number } | undefined;
  if (entry?.originalSource !== undefined && entry.originalLine !== undefined) {
    const src = entry.originalSource.startsWith("file://")
      ? fileURLToPath(entry.originalSource)
      : join(file, "..", entry.originalSource);
    return `${relative(repoRoot, src)}:${entry.originalLine + 1}`;
  }
  return `${relative(repoRoot, file)}:${line0 + 1}`;
}

/** Hot spots of the profile in `dir`, counting only the samples taken inside `windowsUs`. */
function summariseProfile(dir: string, label: string, windowsUs: [number, number][], top: number): void {
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".cpuprofile")) : [];
  if (files.length === 0) {
    console.log(`\n${label}: no .cpuprofile in ${dir}`);
    return;
  }
  const prof = JSON.parse(readFileSync(join(dir, files[0]!), "utf8")) as {
    nodes: ProfileNode[];
    startTime: number;
    samples: number[];
    timeDeltas: number[];
  };
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  let atUs = prof.startTime;
  prof.samples.forEach((id, i) => {
    const dUs = prof.timeDeltas[i] ?? 0;
    atUs += dUs;
    if (windowsUs.some(([a, b]) => atUs >= a && atUs <= b)) selfUs.set(id, (selfUs.get(id) ?? 0) + dUs);
  });
  const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0);
  if (totalUs === 0) {
    console.log(`\n${label}: no samples inside the throughput phase (${join(dir, files[0]!)})`);
    return;
  }
  const keyOf = (n: ProfileNode) =>
    `${n.callFrame.functionName || "(anonymous)"}  ${where(n.callFrame.url, n.callFrame.lineNumber, n.callFrame.columnNumber)}`;
  const self = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const k = keyOf(byId.get(id)!);
    self.set(k, (self.get(k) ?? 0) + us);
  }
  // Inclusive time: a node's own samples plus its subtree's; a function counted once per stack.
  const incl = new Map<string, number>();
  const walk = (id: number, onStack: Set<string>): number => {
    const n = byId.get(id)!;
    let us = selfUs.get(id) ?? 0;
    const k = keyOf(n);
    const fresh = !onStack.has(k);
    if (fresh) onStack.add(k);
    for (const c of n.children ?? []) us += walk(c, onStack);
    if (fresh) {
      onStack.delete(k);
      incl.set(k, (incl.get(k) ?? 0) + us);
    }
    return us;
  };
  walk(prof.nodes[0]!.id, new Set());
  const pct = (us: number) => `${((100 * us) / totalUs).toFixed(1).padStart(5)}%`;
  console.log(
    `\n${label}: ${(totalUs / 1e6).toFixed(1)} s sampled in the throughput phases (${join(dir, files[0]!)})`,
  );
  console.log("  top self time:");
  for (const [k, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(`   ${pct(us)}  ${k}`);
  console.log("  top inclusive time, our code (mesher/, sdk/):");
  for (const [k, us] of [...incl]
    .filter(([k]) => / (mesher|sdk)\//.test(k))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top))
    console.log(`   ${pct(us)}  ${k}`);
}

// ---------------------------------------------------------------------------------------------

function fmt(n: number, digits: number, width: number): string {
  return n.toFixed(digits).padStart(width);
}

function median(xs: number[]): number {
  const v = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** Runs `measure` on every path, ROUNDS times, starting each round one path further on. */
async function rounds<T>(what: string, paths: Path[], measure: (p: Path) => Promise<T>): Promise<T[][]> {
  const out: T[][] = paths.map(() => []);
  for (let r = 0; r < ROUNDS; r++) {
    process.stdout.write(`  ${what}, round ${r + 1}/${ROUNDS}:`);
    for (let k = 0; k < paths.length; k++) {
      const i = (r + k) % paths.length;
      process.stdout.write(` [${paths[i]!.name}]`);
      out[i]!.push(await measure(paths[i]!));
    }
    process.stdout.write("\n");
  }
  return out;
}

type Summary = {
  path: Path;
  rps: number;
  rpsRounds: number[];
  errors: number;
  cpuMsPerCall: number; // proxy processes, pooled over the rounds
  cpuSharePct: number; // of the time the proxy processes wanted a CPU, how much they got
  appCpuMsPerCall: number;
  machineBusyPct: number;
  pacedRps: number;
  pacedErrors: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  p50Rounds: number[];
  p99Rounds: number[];
};

function summarise(path: Path, t: ThroughputSample[], l: LatencySample[]): Summary {
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const calls = sum(t.map((x) => x.calls));
  return {
    path,
    rps: median(t.map((x) => x.rps)),
    rpsRounds: t.map((x) => x.rps),
    errors: sum(t.map((x) => x.errors)),
    cpuMsPerCall: (1000 * sum(t.map((x) => x.proxyCpuS))) / calls,
    cpuSharePct: (100 * sum(t.map((x) => x.proxyCpuS))) / sum(t.map((x) => x.proxyRunnableS)),
    appCpuMsPerCall: (1000 * sum(t.map((x) => x.appCpuS))) / calls,
    machineBusyPct: sum(t.map((x) => x.machineBusyPct)) / t.length,
    pacedRps: median(l.map((x) => x.rps)),
    pacedErrors: sum(l.map((x) => x.errors)),
    p50Ms: median(l.map((x) => x.p50Ms)),
    p99Ms: median(l.map((x) => x.p99Ms)),
    p999Ms: median(l.map((x) => x.p999Ms)),
    p50Rounds: l.map((x) => x.p50Ms),
    p99Rounds: l.map((x) => x.p99Ms),
  };
}

const list = (xs: number[], digits: number) => xs.map((x) => x.toFixed(digits)).join(" ");

function report(results: Summary[]): void {
  const head = [
    "path".padEnd(22),
    "req/s".padStart(7),
    "err".padStart(3),
    "CPU ms".padStart(7),
    "req/CPU-s".padStart(9),
    "got CPU".padStart(7),
    "app ms".padStart(6),
    "busy".padStart(4),
    "|",
    "paced/s".padStart(7),
    "err".padStart(3),
    "p50 ms".padStart(7),
    "p99 ms".padStart(7),
    "p99.9".padStart(7),
  ];
  console.log(head.join(" "));
  for (const r of results) {
    const proxied = r.path.proxies.length > 0;
    const row = [
      r.path.name.padEnd(22),
      fmt(r.rps, 0, 7),
      String(r.errors).padStart(3),
      proxied ? fmt(r.cpuMsPerCall, 3, 7) : "-".padStart(7),
      proxied ? fmt(1000 / r.cpuMsPerCall, 0, 9) : "-".padStart(9),
      proxied ? `${fmt(r.cpuSharePct, 0, 6)}%` : "-".padStart(7),
      fmt(r.appCpuMsPerCall, 3, 6),
      fmt(r.machineBusyPct, 0, 4),
      "|",
      fmt(r.pacedRps, 0, 7),
      String(r.pacedErrors).padStart(3),
      fmt(r.p50Ms, 3, 7),
      fmt(r.p99Ms, 3, 7),
      fmt(r.p999Ms, 3, 7),
    ];
    console.log(row.join(" "));
  }
  console.log(
    "  req/s, p50, p99: medians over the rounds. CPU ms: CPU time of the proxy processes per call in the",
  );
  console.log(
    "  throughput phase (the pair: both meshers); req/CPU-s is its inverse (calls per core-second).",
  );
  console.log(
    "  got CPU: of the time those processes were runnable, the share they spent on a CPU (schedstat);",
  );
  console.log("  well under 100% means they queued for a CPU. busy: the whole machine, all users.");
  const direct = results.find((r) => r.path.name === "direct")!;
  const haproxy = results.find((r) => r.path.name === "haproxy")!;
  const nodeRef = results.find((r) => r.path.name.startsWith("node proxy"))!;
  console.log("");
  console.log("per round:");
  for (const r of results) {
    console.log(
      `  ${r.path.name.padEnd(22)} req/s ${list(r.rpsRounds, 0)}; p50 ms ${list(r.p50Rounds, 3)}; p99 ms ${list(r.p99Rounds, 3)}`,
    );
  }
  console.log("");
  console.log("ratios (this run, medians):");
  for (const r of results) {
    if (r === direct) continue;
    console.log(
      `  ${r.path.name.padEnd(22)} added p50 ${fmt(r.p50Ms - direct.p50Ms, 3, 7)} ms, added p99 ${fmt(r.p99Ms - direct.p99Ms, 3, 7)} ms vs direct`,
    );
  }
  for (const r of results) {
    if (!r.path.name.startsWith("mesher")) continue;
    const hops = r.path.proxies.length;
    console.log(
      `  ${r.path.name.padEnd(22)} throughput ${(r.rps / haproxy.rps).toFixed(3)}x haproxy` +
        ` (per round ${r.rpsRounds.map((x, i) => (x / haproxy.rpsRounds[i]!).toFixed(3)).join(" ")});` +
        ` calls per CPU-second ${(haproxy.cpuMsPerCall / r.cpuMsPerCall).toFixed(3)}x haproxy` +
        ` (per hop ${((hops * haproxy.cpuMsPerCall) / r.cpuMsPerCall).toFixed(3)}x; per hop` +
        ` ${((hops * nodeRef.cpuMsPerCall) / r.cpuMsPerCall).toFixed(2)}x the node proxy)`,
    );
  }
}

async function main(): Promise<void> {
  ensureTools();
  const haproxyVersion = execFileSync("haproxy", ["-v"]).toString().split("\n")[0];
  const load = () =>
    loadavg()
      .map((l) => l.toFixed(2))
      .join(" ");
  console.log(`mesher bench in ${work.path}`);
  console.log(
    `node ${process.version}; ${haproxyVersion}; ${cpus().length} CPUs (${cpus()[0]?.model}); load average ${load()}`,
  );
  console.log(
    `throughput: wrk -t${THROUGHPUT_THREADS} -c${THROUGHPUT_CONNECTIONS} -d${PHASE_SECONDS}s (closed loop; ${WARMUP_SECONDS} s warm-up per path first); ` +
      `latency: wrk -t1 -c${PACED_CONNECTIONS} -d${PHASE_SECONDS}s, ${PACED_DELAY_MS} ms pause after each response (~${PACED_TARGET_RPS} req/s); ${ROUNDS} interleaved rounds`,
  );
  if (profile) console.log("profiling: the meshers run under --cpu-prof (their figures are slowed)");

  const app = await startApp();
  cluster = await startEtcd({ members: 1, dir: join(work.path, "etcd") });
  // All paths stay up for the whole run; the idle ones cost little (health checks, lease keep-alives).
  const paths: Path[] = [
    { name: "direct", port: app.port, proxies: [], windowsUs: [] },
    await startNodeProxy(app.port),
    await startMesherPair("pair-info", app.port, "info"),
    await startMesherPair("pair-warn", app.port, "warn"),
    await startHaproxy(app.port),
  ];
  for (const path of paths) await wrk(path.port, { paced: false, seconds: WARMUP_SECONDS });
  const t = await rounds("throughput", paths, (p) => throughput(p, app.proc));
  const l = await rounds("latency", paths, latency);
  const endLoad = load();
  await stopEverything(); // meshers write their profiles as they exit

  console.log("");
  report(paths.map((p, i) => summarise(p, t[i]!, l[i]!)));
  console.log(`\nload average at the end ${endLoad}`);
  if (profile) {
    for (const p of paths) {
      for (const dir of p.profileDirs ?? [])
        summariseProfile(dir, dir.replace(`${work.path}/`, ""), p.windowsUs, 20);
    }
    console.log(`\nprofiles and logs kept in ${work.path}`);
  } else {
    work.remove();
  }
}

let stopping = false;
/** Stops everything started, then exits; `removeWork` deletes the logs too (Ctrl-C). */
async function shutdown(code: number, removeWork = false): Promise<void> {
  if (stopping) return;
  stopping = true;
  await stopEverything().catch((err) => console.error(err));
  if (removeWork) work.remove();
  process.exit(code);
}
process.on("SIGINT", () => void shutdown(130, true));
process.on("SIGTERM", () => void shutdown(143, true));

main().then(
  () => shutdown(0),
  (err) => {
    if (stopping) return; // interrupted: a wrk or a start cut short is expected, not an error
    console.error(err);
    console.error(`logs kept in ${work.path}`);
    return shutdown(1);
  },
);
