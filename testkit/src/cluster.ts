import { existsSync, mkdirSync, readFileSync } from "node:fs";
import https from "node:https";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "./ports.js";
import { ManagedProcess, waitFor } from "./proc.js";
import { tempDir } from "./tmp.js";

/** Which registry a suite runs against: a real etcd, or ours. Both take etcd's flags. */
export type RegistryKind = "etcd" | "registry-node";

/** The registry kind chosen by `REGMESH_REGISTRY` (default: registry-node once it serves the API, else etcd). */
export function registryKindFromEnv(fallback: RegistryKind = "etcd"): RegistryKind {
  const v = process.env.REGMESH_REGISTRY;
  if (v === "etcd" || v === "registry-node") return v;
  if (v !== undefined && v !== "")
    throw new Error(`REGMESH_REGISTRY must be etcd or registry-node, not ${v}`);
  return fallback;
}

export type StartClusterOptions = {
  kind?: RegistryKind;
  /** Number of members (default 1). */
  members?: number;
  /** Folder for data directories and logs (default: a fresh temp dir). */
  dir?: string;
  /** etcd's --heartbeat-interval and --election-timeout in ms (defaults 100 and 1000, as etcd). */
  heartbeatIntervalMs?: number;
  electionTimeoutMs?: number;
  /** More flags for every member, e.g. ["--auto-compaction-retention=1"]. */
  extraArgs?: string[];
  env?: Record<string, string | undefined>;
  /** How long to wait for every member to report healthy (default 30 s). */
  healthTimeoutMs?: number;
  /** Serve clients over TLS (https URLs) with these files; the health check uses them too. */
  clientTls?: ClientTls;
};

export type ClientTls = {
  certFile: string;
  keyFile: string;
  caFile: string;
  /** --client-cert-auth: clients must present a certificate signed by caFile. */
  clientCertAuth?: boolean;
  /** The certificate the kit's own health checks present. */
  clientCertFile?: string;
  clientKeyFile?: string;
};

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
export const registryNodeBin = join(repoRoot, "registry-node", "bin", "registry-node.js");

function commandFor(kind: RegistryKind): { command: string; prefix: string[] } {
  if (kind === "etcd") return { command: "etcd", prefix: [] };
  return { command: process.execPath, prefix: [registryNodeBin] };
}

/** One member of a test cluster: its URLs, data directory, log, and process. */
export class Member {
  proc: ManagedProcess | undefined;
  private starts = 0;

  constructor(
    readonly kind: RegistryKind,
    readonly name: string,
    readonly clientPort: number,
    readonly peerPort: number,
    readonly dataDir: string,
    readonly logDir: string,
    private readonly flags: () => string[],
    private readonly env: Record<string, string | undefined> | undefined,
    readonly clientTls: ClientTls | undefined = undefined,
  ) {}

  get clientUrl(): string {
    return `${this.clientTls ? "https" : "http"}://127.0.0.1:${this.clientPort}`;
  }
  get peerUrl(): string {
    return `http://127.0.0.1:${this.peerPort}`;
  }
  /** host:port, as gRPC clients and etcdctl's --endpoints take it. */
  get endpoint(): string {
    return `127.0.0.1:${this.clientPort}`;
  }
  get logPath(): string {
    return join(this.logDir, `${this.name}.${this.starts}.log`);
  }

  /** Starts (or restarts, with the same flags and data dir) the member's process; does not wait for health. */
  start(): void {
    if (this.proc?.running) throw new Error(`${this.name} is already running (pid ${this.proc.pid})`);
    this.starts += 1;
    const { command, prefix } = commandFor(this.kind);
    this.proc = ManagedProcess.start({
      name: this.name,
      command,
      args: [...prefix, ...this.flags()],
      logPath: this.logPath,
      env: this.env,
    });
  }

  async waitHealthy(timeoutMs = 30_000): Promise<void> {
    await waitFor(() => this.healthy(), {
      timeoutMs,
      describe: () =>
        `${this.kind} member ${this.name} on ${this.clientUrl} not healthy` +
        (this.proc?.running === false ? ` (exited ${JSON.stringify(this.proc.exitStatus)})` : "") +
        `\n--- log tail (${this.logPath}) ---\n${this.proc?.logTail() ?? ""}`,
    });
  }

  /** GET /health answers {"health":"true"}. */
  async healthy(): Promise<boolean> {
    if (!this.proc?.running) return false;
    if (this.clientTls) return this.healthyTls(this.clientTls);
    try {
      const res = await fetch(`${this.clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
      const body = (await res.json()) as { health?: string };
      return res.ok && body.health === "true";
    } catch {
      return false;
    }
  }

  private healthyTls(t: ClientTls): Promise<boolean> {
    return new Promise((resolve) => {
      const req = https.get(
        `${this.clientUrl}/health`,
        {
          ca: readFileSync(t.caFile),
          cert: t.clientCertFile ? readFileSync(t.clientCertFile) : undefined,
          key: t.clientKeyFile ? readFileSync(t.clientKeyFile) : undefined,
          timeout: 1000,
        },
        (res) => {
          let body = "";
          res.on("data", (c) => {
            body += c;
          });
          res.on("end", () => resolve(res.statusCode === 200 && body.includes('"health":"true"')));
        },
      );
      req.on("error", () => resolve(false));
      req.on("timeout", () => req.destroy());
    });
  }

  async stop(): Promise<void> {
    await this.proc?.stop();
  }
  async kill9(): Promise<void> {
    await this.proc?.kill9();
  }
  pause(): void {
    this.proc?.pause();
  }
  resume(): void {
    this.proc?.resume();
  }
  async restart(): Promise<void> {
    await this.stop();
    this.start();
    await this.waitHealthy();
  }
}

/** A registry cluster of real processes on loopback, started by the test kit. */
export class Cluster {
  constructor(
    readonly kind: RegistryKind,
    readonly members: Member[],
    private readonly removeDir: (() => void) | undefined,
  ) {}

  get endpoints(): string[] {
    return this.members.map((m) => m.endpoint);
  }
  get clientUrls(): string[] {
    return this.members.map((m) => m.clientUrl);
  }
  /** The first member's data directory (the only one, for a one-member cluster). */
  get dataDir(): string {
    return this.members[0]!.dataDir;
  }

  async waitHealthy(timeoutMs = 30_000): Promise<void> {
    await Promise.all(this.members.map((m) => m.waitHealthy(timeoutMs)));
  }

  /** Stops every member; with `remove`, deletes the temp dir the kit created (logs go too). */
  async stop(opts: { remove?: boolean } = {}): Promise<void> {
    await Promise.all(this.members.map((m) => m.stop()));
    if (opts.remove) this.removeDir?.();
  }
}

export async function startCluster(opts: StartClusterOptions = {}): Promise<Cluster> {
  const kind = opts.kind ?? registryKindFromEnv();
  const count = opts.members ?? 1;
  if (count < 1) throw new Error("startCluster: members must be at least 1");
  if (kind === "registry-node" && !existsSync(registryNodeBin)) {
    throw new Error(`startCluster: ${registryNodeBin} not found; run npm ci (it builds the packages)`);
  }
  const temp = opts.dir === undefined ? tempDir(`regmesh-${kind}-`) : undefined;
  const root = opts.dir ?? temp!.path;
  const logDir = join(root, "logs");
  mkdirSync(logDir, { recursive: true });

  const specs: { name: string; clientPort: number; peerPort: number }[] = [];
  for (let i = 0; i < count; i++) {
    specs.push({ name: `m${i + 1}`, clientPort: await freePort(), peerPort: await freePort() });
  }
  const initialCluster = specs.map((s) => `${s.name}=http://127.0.0.1:${s.peerPort}`).join(",");
  const token = `regmesh-test-${specs[0]!.clientPort}`;

  const scheme = opts.clientTls ? "https" : "http";
  const members = specs.map((s) => {
    const dataDir = join(root, `${s.name}.data`);
    const flags = () => [
      `--name=${s.name}`,
      `--data-dir=${dataDir}`,
      `--listen-client-urls=${scheme}://127.0.0.1:${s.clientPort}`,
      `--advertise-client-urls=${scheme}://127.0.0.1:${s.clientPort}`,
      ...(opts.clientTls
        ? [
            `--cert-file=${opts.clientTls.certFile}`,
            `--key-file=${opts.clientTls.keyFile}`,
            `--trusted-ca-file=${opts.clientTls.caFile}`,
            ...(opts.clientTls.clientCertAuth ? ["--client-cert-auth"] : []),
          ]
        : []),
      `--listen-peer-urls=http://127.0.0.1:${s.peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${s.peerPort}`,
      `--initial-cluster=${initialCluster}`,
      `--initial-cluster-token=${token}`,
      "--initial-cluster-state=new",
      `--heartbeat-interval=${opts.heartbeatIntervalMs ?? 100}`,
      `--election-timeout=${opts.electionTimeoutMs ?? 1000}`,
      ...(kind === "etcd" ? ["--logger=zap", "--log-outputs=stderr"] : []),
      ...(opts.extraArgs ?? []),
    ];
    return new Member(
      kind,
      s.name,
      s.clientPort,
      s.peerPort,
      dataDir,
      logDir,
      flags,
      opts.env,
      opts.clientTls,
    );
  });

  const cluster = new Cluster(kind, members, temp?.remove);
  for (const m of members) m.start();
  try {
    await cluster.waitHealthy(opts.healthTimeoutMs ?? 30_000);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/** A real etcd 3.4 (Debian's etcd-server) on free loopback ports. */
export function startEtcd(opts: Omit<StartClusterOptions, "kind"> = {}): Promise<Cluster> {
  return startCluster({ ...opts, kind: "etcd" });
}

/** Our registry-node on free loopback ports, with the same flags as etcd. */
export function startRegistryNode(opts: Omit<StartClusterOptions, "kind"> = {}): Promise<Cluster> {
  return startCluster({ ...opts, kind: "registry-node" });
}
