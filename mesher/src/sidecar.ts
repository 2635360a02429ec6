// The sidecar: wires the SDK (client, registrar, discovery, policies, mesh) to the listeners
// (outbound proxy, inbound port, admin API, bridge) and runs the lifecycle:
//
//   start: registry client (or an embedded registry-node child) -> disk caches -> listeners ->
//          health checks of the app -> registration once the app is healthy;
//   SIGTERM/SIGINT: not ready -> deregister (the instance leaves other meshers' views first)
//          -> stop accepting -> wait for in-flight calls up to --drain-timeout -> exit 0.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type net from "node:net";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import {
  Discovery,
  defaultPolicy,
  EtcdClient,
  Mesh,
  PolicyStore,
  Registrar,
  sdkMetrics,
  systemClock,
  validatePolicy,
} from "@regmesh/sdk";
import pino, { type Logger } from "pino";
import { Admin } from "./admin.js";
import { TokenAuthority } from "./auth.js";
import type { MesherConfig } from "./config.js";
import { splitAddr } from "./config.js";
import { HealthChecker, parseCheck } from "./health.js";
import { Observer } from "./observe.js";
import { H1Forwarder, H2Forwarder, type MeshTls } from "./proxy/forward.js";
import { Inbound } from "./proxy/inbound.js";
import { Outbound, TLS_METADATA } from "./proxy/outbound.js";
import { type DualServer, dualServer, listen } from "./proxy/wire.js";
import { mesherVersion } from "./version.js";
import { Webhooks, watchRemediation } from "./webhooks.js";

export function endpointsOf(urls: readonly string[]): string[] {
  return urls.map((u) => u.replace(/^[a-z]+:\/\//, "").replace(/\/$/, ""));
}

export interface Ports {
  outbound: number;
  inbound: number | undefined;
  admin: number;
  bridge: number | undefined;
}

export class Sidecar {
  readonly logger: Logger;
  private readonly logDestination: ReturnType<typeof pino.destination>;
  readonly observer: Observer;
  client!: EtcdClient;
  discovery!: Discovery;
  policies!: PolicyStore;
  mesh!: Mesh;
  registrar: Registrar | undefined;
  auth: TokenAuthority | undefined;
  health: HealthChecker | undefined;
  readonly inFlight = { n: 0 };
  readonly ports: Ports = { outbound: 0, inbound: undefined, admin: 0, bridge: undefined };
  registered = false;
  draining = false;
  registryUp = false;
  registryLatencyMs = 0;
  private embedded: ChildProcess | undefined;
  private readonly servers: DualServer[] = [];
  private adminServer: net.Server | undefined;
  private bridgeServer: net.Server | undefined;
  private bridgeClose: (() => Promise<void>) | undefined;
  private readonly tls: MeshTls | undefined;
  private readonly h1: H1Forwarder;
  private readonly h2: H2Forwarder;
  private probeTimer: NodeJS.Timeout | undefined;
  private stopRemediation: (() => void) | undefined;
  private readonly stopSdkMetrics: () => void;
  readonly instanceId: string | undefined;

  constructor(readonly cfg: MesherConfig) {
    // Asynchronous writes: an access-log line per call must not block the proxy on stdout.
    // stop() flushes what is pending.
    this.logDestination = pino.destination({ dest: 1, sync: false });
    this.logger = pino(
      { level: cfg["log-level"], base: { mesher: cfg.service ?? "(none)" } },
      this.logDestination,
    );
    this.observer = new Observer(cfg.service === undefined ? {} : { service: cfg.service });
    this.stopSdkMetrics = sdkMetrics(this.observer.registry);
    this.instanceId =
      cfg.service === undefined ? undefined : (cfg["instance-id"] ?? `${hostname()}-${cfg["app-port"]}`);
    this.tls =
      cfg["tls-cert"] === undefined
        ? undefined
        : {
            cert: readFileSync(cfg["tls-cert"]),
            key: readFileSync(cfg["tls-key"]!),
            ca: readFileSync(cfg["tls-ca"]!),
          };
    this.h1 = new H1Forwarder(this.tls === undefined ? {} : { tls: this.tls });
    this.h2 = new H2Forwarder(this.tls);
  }

  async start(): Promise<Ports> {
    const cfg = this.cfg;
    mkdirSync(cfg["data-dir"], { recursive: true });
    let endpoints = endpointsOf(cfg["registry-endpoints"]);
    if (cfg["embedded-registry"]) endpoints = [await this.startEmbedded()];
    this.client = new EtcdClient({
      endpoints,
      requestTimeoutMs: cfg["registry-timeout"],
      ...(cfg["registry-user"] !== undefined
        ? { auth: { username: cfg["registry-user"], password: cfg["registry-password"] ?? "" } }
        : {}),
      ...(cfg["registry-standby-endpoints"].length > 0
        ? { standby: { endpoints: endpointsOf(cfg["registry-standby-endpoints"]) } }
        : {}),
      logger: this.logger.child({ component: "registry" }),
    } as ConstructorParameters<typeof EtcdClient>[0]);
    const prefix = cfg["registry-prefix"];
    this.discovery = new Discovery({
      client: this.client,
      prefix,
      cacheFile: join(cfg["data-dir"], "endpoints.cache"),
      resolveTimeoutMs: cfg["stale-threshold"],
      logger: this.logger.child({ component: "discovery" }),
    });
    this.policies = new PolicyStore({
      client: this.client,
      prefix,
      cacheFile: join(cfg["data-dir"], "policies.cache"),
      logger: this.logger.child({ component: "policies" }),
    });
    await this.policies.loadCache();
    // Compile the policy schema now, not when the first policy arrives (ajv's compile is slow).
    validatePolicy(defaultPolicy(cfg.service ?? "warm-up"));
    this.mesh = new Mesh({
      discovery: this.discovery,
      policies: this.policies,
      clock: systemClock,
      logger: this.logger.child({ component: "mesh" }),
      ...(cfg.service !== undefined ? { caller: cfg.service } : {}),
      ...(cfg.zone !== undefined ? { localZone: cfg.zone } : {}),
    });
    if (cfg["auth-tokens"]) {
      if (cfg.service === undefined)
        throw new Error("--auth-tokens needs --service (the identity to sign with)");
      this.auth = new TokenAuthority(this.client, prefix, cfg.service);
      await this.auth.init();
    }

    const outbound = new Outbound({
      mesh: this.mesh,
      h1: this.h1,
      h2: this.h2,
      observer: this.observer,
      logger: this.logger.child({ component: "outbound" }),
      service: cfg.service,
      auth: this.auth,
      maxRetryBodyBytes: cfg["max-retry-body-bytes"],
      resolveTimeoutMs: cfg["stale-threshold"],
      inFlight: this.inFlight,
    });
    const out = dualServer(
      (req, res) => void outbound.handleH1(req, res),
      (s, h) => void outbound.handleH2(s, h),
    );
    this.servers.push(out);
    this.ports.outbound = await listen(out.tcp, splitAddr(cfg["outbound-listen"]));

    if (cfg["inbound-listen"] !== "" && cfg.service !== undefined) {
      const inbound = new Inbound({
        mesh: this.mesh,
        h1: this.h1,
        h2: this.h2,
        observer: this.observer,
        logger: this.logger.child({ component: "inbound" }),
        service: cfg.service,
        appOrigin: `http://${cfg["app-address"]}:${cfg["app-port"]}`,
        auth: this.auth,
        inFlight: this.inFlight,
      });
      const inb = dualServer(
        (req, res) => void inbound.handleH1(req, res),
        (s, h) => void inbound.handleH2(s, h),
        this.tls === undefined ? undefined : { ...this.tls, requestCert: true, rejectUnauthorized: true },
      );
      this.servers.push(inb);
      this.ports.inbound = await listen(inb.tcp, splitAddr(cfg["inbound-listen"]));
    }

    const admin = new Admin(this);
    this.adminServer = admin.server;
    this.ports.admin = await listen(admin.server, splitAddr(cfg["admin-listen"]));

    if (cfg["bridge-listen"] !== "") await this.startBridge(prefix);
    this.startProbe();
    await this.startRemediation();
    if (cfg.service !== undefined) this.startRegistration();
    this.logger.info({ ports: this.ports, version: mesherVersion, endpoints }, "mesher started");
    return this.ports;
  }

  private startRegistration(): void {
    const cfg = this.cfg;
    const service = cfg.service!;
    this.registrar = new Registrar({
      client: this.client,
      prefix: cfg["registry-prefix"],
      ttlS: Math.max(1, Math.round(cfg["lease-ttl"] / 1000)),
      logger: this.logger.child({ component: "registrar" }),
    });
    const inbound = this.ports.inbound !== undefined;
    const inboundHost = splitAddr(cfg["inbound-listen"] || "127.0.0.1:0").host;
    const address =
      cfg["advertise-address"] ??
      (inbound
        ? inboundHost === "0.0.0.0" || inboundHost === "::"
          ? "127.0.0.1"
          : inboundHost
        : cfg["app-address"]);
    const port = inbound ? this.ports.inbound! : cfg["app-port"]!;
    const input = {
      service,
      id: this.instanceId!,
      address,
      port,
      protocol: cfg.protocol,
      weight: cfg.weight,
      tags: cfg.tags,
      ...(this.tls !== undefined && inbound ? { metadata: { [TLS_METADATA]: "true" } } : {}),
      ...(cfg.zone !== undefined ? { zone: cfg.zone } : {}),
      ...(cfg.version !== undefined ? { version: cfg.version } : {}),
    };
    this.health = new HealthChecker({
      check: parseCheck(cfg["health-check"]),
      host: cfg["app-address"],
      port: cfg["app-port"]!,
      intervalMs: cfg["health-interval"],
      timeoutMs: cfg["health-timeout"],
      unhealthyThreshold: cfg["health-unhealthy-threshold"],
      healthyThreshold: cfg["health-healthy-threshold"],
      onChange: (healthy, why) => {
        if (this.draining || this.registrar === undefined) return;
        this.logger.info({ healthy, why }, healthy ? "app is healthy" : "app is unhealthy");
        const reg = this.registrar;
        const p = !this.registered
          ? healthy
            ? reg.register({ ...input, health: "healthy" }).then(() => {
                this.registered = true;
              })
            : Promise.resolve()
          : reg.update(service, input.id, { health: healthy ? "healthy" : "unhealthy" }).then(() => {});
        p.catch((err: Error) =>
          this.logger.warn({ err: err.message }, "registration update failed; retried by the registrar"),
        );
      },
    });
    this.health.start();
  }

  private async startBridge(prefix: string): Promise<void> {
    const { createBridge } = await import("./bridge/index.js");
    const http = await import("node:http");
    const mesh = this.mesh;
    const bridge = createBridge({
      client: this.client,
      prefix,
      discovery: this.discovery,
      logger: this.logger.child({ component: "bridge" }),
      router: {
        async pick(service, req) {
          if (mesh.snapshot(service) === undefined) await mesh.ready(service);
          const p = mesh.pick(service, req);
          if (!p.ok) return { error: { reason: p.reason, message: p.message } };
          // The app calls the instance itself and reports the outcome with `report`.
          p.attempt.end({ kind: "response", status: 200 });
          return { instance: p.attempt.instance, decision: p.attempt.decision };
        },
        report(service, instanceId, outcome) {
          mesh.report(service, instanceId, outcome);
        },
        async policy(service) {
          await mesh.ready(service);
          const s = mesh.policy(service);
          return { policy: s.policy, modRevision: s.modRevision };
        },
      },
    });
    const server = http.createServer((req, res) => bridge.handle(req, res));
    this.bridgeServer = server;
    this.bridgeClose = () => bridge.close();
    this.ports.bridge = await listen(server, splitAddr(this.cfg["bridge-listen"]));
  }

  private startProbe(): void {
    const probe = async (): Promise<void> => {
      const t0 = performance.now();
      try {
        await this.client.status();
        this.registryLatencyMs = performance.now() - t0;
        this.registryUp = true;
      } catch {
        this.registryUp = false;
      }
      this.observer.registryUp.set(this.registryUp ? 1 : 0);
      this.observer.registryLatency.set(this.registryLatencyMs / 1000);
      this.probeTimer = setTimeout(() => void probe(), 1_000);
      this.probeTimer.unref();
    };
    void probe();
  }

  private async startRemediation(): Promise<void> {
    if (this.cfg.webhooks.length === 0) return;
    const webhooks = new Webhooks({
      urls: this.cfg.webhooks,
      ...(this.cfg["webhook-secret"] !== undefined ? { secret: this.cfg["webhook-secret"] } : {}),
      logger: this.logger.child({ component: "webhooks" }),
      self: {
        ...(this.cfg.service !== undefined ? { service: this.cfg.service } : {}),
        ...(this.instanceId !== undefined ? { instance: this.instanceId } : {}),
      },
    });
    const stop = watchRemediation({
      webhooks,
      mesh: this.mesh,
      minInstances: this.cfg["webhook-min-instances"],
      registryLatencyMs: this.cfg["webhook-registry-latency"],
      probeRegistry: async () => {
        const t0 = performance.now();
        await this.client.status();
        return performance.now() - t0;
      },
    });
    this.stopRemediation = () => {
      stop();
      void webhooks.close();
    };
  }

  /** Starts registry-node as a child process on free loopback ports; returns its endpoint. */
  private async startEmbedded(): Promise<string> {
    const require = createRequire(import.meta.url);
    let bin: string;
    try {
      // The package's main export is dist/index.js; its command is bin/registry-node.js beside it.
      bin = join(dirname(require.resolve("@regmesh/registry-node")), "../bin/registry-node.js");
    } catch {
      throw new Error("--embedded-registry needs the registry-node package installed next to the mesher");
    }
    const { freePortPair } = await import("./ports.js");
    const [client, peer] = await freePortPair();
    const dataDir = join(this.cfg["data-dir"], "registry");
    const child = spawn(
      process.execPath,
      [
        bin,
        "--name=embedded",
        `--data-dir=${dataDir}`,
        `--listen-client-urls=http://127.0.0.1:${client}`,
        `--advertise-client-urls=http://127.0.0.1:${client}`,
        `--listen-peer-urls=http://127.0.0.1:${peer}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
        `--initial-cluster=embedded=http://127.0.0.1:${peer}`,
      ],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
    this.embedded = child;
    child.once("exit", (code, signal) => {
      if (!this.draining) this.logger.error({ code, signal }, "embedded registry exited");
    });
    for (let i = 0; i < 200; i++) {
      try {
        const r = await fetch(`http://127.0.0.1:${client}/health`);
        if (r.ok) {
          this.logger.info(
            { pid: child.pid, endpoint: `127.0.0.1:${client}`, dataDir },
            "embedded registry started",
          );
          return `127.0.0.1:${client}`;
        }
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("the embedded registry did not become healthy in 20 s");
  }

  /** Writes out log lines still buffered (before an exit). */
  flushLogs(): void {
    try {
      this.logDestination.flushSync();
    } catch {
      // not ready yet, or already closed: nothing buffered
    }
  }

  /** Graceful stop: deregister, stop accepting, drain in-flight calls, close. */
  async stop(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    const t0 = performance.now();
    this.logger.info({ inFlight: this.inFlight.n }, "draining: deregistering first");
    this.health?.stop();
    try {
      await this.registrar?.close();
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, "deregistration failed; the lease will expire");
    }
    for (const s of this.servers) s.tcp.close();
    const deadline = t0 + this.cfg["drain-timeout"];
    while (this.inFlight.n > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (this.inFlight.n > 0)
      this.logger.warn({ inFlight: this.inFlight.n }, "drain deadline passed; closing");
    for (const s of this.servers) {
      s.h1.closeAllConnections();
      for (const sock of s.sockets) sock.destroy();
    }
    clearTimeout(this.probeTimer);
    this.stopRemediation?.();
    this.stopSdkMetrics();
    await this.bridgeClose?.().catch(() => {});
    this.bridgeServer?.close();
    await this.mesh.close();
    await this.policies.close();
    await this.discovery.close();
    this.client.close();
    await this.h1.close().catch(() => {});
    this.h2.close();
    this.adminServer?.close();
    if (this.embedded !== undefined && this.embedded.exitCode === null) {
      this.embedded.kill("SIGTERM");
      await new Promise((r) => this.embedded!.once("exit", r));
    }
    this.logger.info({ ms: Math.round(performance.now() - t0) }, "mesher stopped");
    this.flushLogs();
  }
}
