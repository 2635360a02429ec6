// Real processes for mesher tests: example apps and meshers on free loopback ports.
import { readFileSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { type Cluster, ManagedProcess, tempDir } from "@regmesh/testkit";

const here = new URL(".", import.meta.url).pathname;
export const mesherBin = join(here, "../bin/mesher.js");
const appScript = join(here, "fixtures/app.mjs");
export const grpcAppScript = join(here, "fixtures/grpc-app.mjs");

export async function waitLine<T>(
  logPath: string,
  pick: (obj: Record<string, unknown>) => T | undefined,
  timeoutMs = 20_000,
  proc?: ManagedProcess,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let text = "";
    try {
      text = readFileSync(logPath, "utf8");
    } catch {}
    for (const line of text.split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        const v = pick(JSON.parse(line));
        if (v !== undefined) return v;
      } catch {}
    }
    if (proc !== undefined && !proc.running) throw new Error(`${proc.name} exited:\n${proc.logTail(40)}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting in ${logPath}:\n${text.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface App {
  proc: ManagedProcess;
  port: number;
}

export async function startApp(
  name: string,
  dir: string,
  env: Record<string, string> = {},
  script = appScript,
): Promise<App> {
  const proc = ManagedProcess.start({
    name: `app-${name}`,
    command: process.execPath,
    args: [script],
    logPath: join(dir, `app-${name}-${Date.now()}.log`),
    env: { APP_NAME: name, ...env },
  });
  const port = await waitLine(
    proc.logPath,
    (o) => (typeof o.listening === "number" ? o.listening : undefined),
    10_000,
    proc,
  );
  return { proc, port };
}

export interface MesherPorts {
  outbound: number;
  inbound?: number;
  admin: number;
  bridge?: number;
}

export interface RunningMesher {
  proc: ManagedProcess;
  ports: MesherPorts;
  admin(path: string): Promise<unknown>;
  outbound: string;
}

export async function startMesher(
  name: string,
  dir: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<RunningMesher> {
  const proc = ManagedProcess.start({
    name: `mesher-${name}`,
    command: process.execPath,
    args: [
      mesherBin,
      "--outbound-listen=127.0.0.1:0",
      "--admin-listen=127.0.0.1:0",
      `--data-dir=${join(dir, `mesher-${name}`)}`,
      "--log-level=info",
      ...args,
    ],
    logPath: join(dir, `mesher-${name}-${Date.now()}.log`),
    env,
  });
  const ports = await waitLine(
    proc.logPath,
    (o) => (o.msg === "mesher started" ? (o.ports as MesherPorts) : undefined),
    30_000,
    proc,
  );
  return {
    proc,
    ports,
    outbound: `http://127.0.0.1:${ports.outbound}`,
    async admin(path: string) {
      const r = await fetch(`http://127.0.0.1:${ports.admin}${path}`);
      return r.headers.get("content-type")?.includes("json") ? r.json() : r.text();
    },
  };
}

export function workDir(): { path: string; remove(): void } {
  return tempDir("mesher-e2e-");
}

// ---------------------------------------------------------------------------------------------
// A test's world: a registry cluster, a work folder, and everything started, stopped at the end.

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json?: {
    name?: string;
    headers?: Record<string, string>;
    url?: string;
    error?: { reason: string; traceId?: string };
  };
}

const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 64 });

export function call(
  port: number,
  opts: {
    path?: string;
    host?: string;
    method?: string;
    body?: string;
    headers?: Record<string, string>;
  } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        path: opts.path ?? "/hello",
        method: opts.method ?? "GET",
        headers: { ...(opts.host !== undefined ? { host: opts.host } : {}), ...opts.headers },
        agent: keepAlive,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const body = Buffer.concat(chunks).toString();
          let json: Reply["json"];
          try {
            json = JSON.parse(body);
          } catch {}
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

export async function until(
  f: () => Promise<boolean> | boolean,
  timeoutMs = 10_000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await f())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface Instance {
  app: App;
  mesher: RunningMesher;
}

export class World {
  readonly cleanups: (() => Promise<unknown> | unknown)[] = [];
  seq = 0;

  constructor(
    readonly cluster: Cluster,
    readonly dir: string,
  ) {}

  registryArgs(): string[] {
    return [`--registry-endpoints=${this.cluster.endpoints.map((e) => `http://${e}`).join(",")}`];
  }

  prefix(): string {
    return `/e2e${++this.seq}`;
  }

  async cleanup(): Promise<void> {
    for (const c of this.cleanups.splice(0).reverse()) await c();
  }

  async instance(
    prefix: string,
    service: string,
    id: string,
    extra: string[] = [],
    opts: { script?: string; check?: string } = {},
  ): Promise<Instance> {
    const app = await startApp(id, this.dir, {}, opts.script);
    const mesher = await startMesher(id, this.dir, [
      ...this.registryArgs(),
      `--registry-prefix=${prefix}`,
      `--service=${service}`,
      `--instance-id=${id}`,
      `--app-port=${app.port}`,
      "--inbound-listen=127.0.0.1:0",
      `--health-check=${opts.check ?? "http:/health"}`,
      "--health-interval=200ms",
      "--lease-ttl=5s",
      ...extra,
    ]);
    this.cleanups.push(
      () => mesher.proc.stop(),
      () => app.proc.stop(),
    );
    return { app, mesher };
  }

  async caller(prefix: string, extra: string[] = [], name = `caller-${++this.seq}`): Promise<RunningMesher> {
    const m = await startMesher(name, this.dir, [
      ...this.registryArgs(),
      `--registry-prefix=${prefix}`,
      ...extra,
    ]);
    this.cleanups.push(() => m.proc.stop());
    return m;
  }

  async seesAll(caller: RunningMesher, service: string, names: string[]): Promise<void> {
    await until(
      async () => {
        const seen = new Set<string>();
        for (let i = 0; i < names.length * 4; i++) {
          const r = await call(caller.ports.outbound, { host: service });
          if (r.status === 200 && r.json?.name !== undefined) seen.add(r.json.name);
        }
        return names.every((n) => seen.has(n));
      },
      20_000,
      `${service} instances ${names.join(",")}`,
    );
  }
}
