// The admin API, on its own port: liveness and readiness, Prometheus metrics, and JSON views of
// what the mesher knows (endpoints, breakers, policies, config, topology, recent calls) and why
// a request would go where (explain).

import http from "node:http";
import { describeDecision, type RouteRequest } from "@regmesh/sdk";
import { OPTIONS } from "./config.js";
import type { Sidecar } from "./sidecar.js";

function json(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, (_k, v) => (typeof v === "bigint" ? v.toString() : v), 2);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

export class Admin {
  readonly server: http.Server;

  constructor(private readonly s: Sidecar) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: Error) => json(res, 500, { error: err.message }));
    });
  }

  private readiness(): { ready: boolean; reasons: string[] } {
    const s = this.s;
    const reasons: string[] = [];
    if (s.draining) reasons.push("draining");
    if (s.cfg.service !== undefined) {
      if (s.health?.healthy === false) reasons.push(`app unhealthy: ${s.health.lastError}`);
      if (!s.registered) reasons.push("not registered yet");
    }
    return { ready: reasons.length === 0, reasons };
  }

  private refreshGauges(): void {
    const s = this.s;
    const o = s.observer;
    o.breakerState.reset();
    for (const b of s.mesh.breakerStates()) {
      o.breakerState.set(
        { service: b.service, instance: b.instanceId },
        b.state === "open" ? 1 : b.state === "half-open" ? 0.5 : 0,
      );
    }
    o.cacheAge.reset();
    o.instances.reset();
    for (const svc of s.mesh.tracked()) {
      const snap = s.mesh.snapshot(svc);
      if (snap === undefined) continue;
      o.cacheAge.set({ service: svc }, snap.staleForMs / 1000);
      const unhealthy = snap.instances.filter((i) => i.health === "unhealthy").length;
      o.instances.set({ service: svc, state: "healthy" }, snap.instances.length - unhealthy);
      o.instances.set({ service: svc, state: "unhealthy" }, unhealthy);
    }
    o.inFlight.set({ direction: "all" }, s.inFlight.n);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const s = this.s;
    const url = new URL(req.url ?? "/", "http://admin");
    const q = url.searchParams;
    switch (url.pathname) {
      case "/healthz":
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("ok\n");
        return;
      case "/readyz": {
        const r = this.readiness();
        json(res, r.ready ? 200 : 503, r);
        return;
      }
      case "/metrics": {
        this.refreshGauges();
        const text = await s.observer.registry.metrics();
        res.writeHead(200, { "content-type": s.observer.registry.contentType });
        res.end(text);
        return;
      }
      case "/v1/endpoints":
        json(
          res,
          200,
          s.mesh.tracked().map((svc) => {
            const snap = s.mesh.snapshot(svc);
            return {
              service: svc,
              revision: snap?.revision ?? 0n,
              stale: snap?.stale ?? true,
              staleForMs: snap?.staleForMs ?? 0,
              source: snap?.source ?? "none",
              instances: snap?.instances ?? [],
              ejected: s.mesh.ejected(svc),
              quarantined: s.mesh.quarantine(svc),
              held: s.mesh.held(svc),
            };
          }),
        );
        return;
      case "/v1/breakers":
        json(res, 200, s.mesh.breakerStates());
        return;
      case "/v1/policies":
        json(
          res,
          200,
          s.mesh.tracked().map((svc) => s.mesh.policy(svc)),
        );
        return;
      case "/v1/config": {
        const cfg: Record<string, unknown> = { ...s.cfg };
        if (cfg["registry-password"] !== undefined) cfg["registry-password"] = "(redacted)";
        if (cfg["webhook-secret"] !== undefined) cfg["webhook-secret"] = "(redacted)";
        json(res, 200, {
          config: cfg,
          options: Object.keys(OPTIONS),
          ports: s.ports,
          registry: { up: s.registryUp, latencyMs: s.registryLatencyMs },
        });
        return;
      }
      case "/v1/explain": {
        const service = q.get("service");
        if (service === null || service === "") {
          json(res, 400, {
            error: "want ?service=<name>[&method=GET&path=/&caller=<svc>&header=name:value...]",
          });
          return;
        }
        const headers: Record<string, string> = {};
        for (const h of q.getAll("header")) {
          const i = h.indexOf(":");
          if (i > 0) headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
        }
        const rr: RouteRequest = {
          method: q.get("method") ?? "GET",
          path: q.get("path") ?? "/",
          headers,
          ...(q.get("caller") !== null ? { caller: q.get("caller")! } : {}),
        };
        if (s.mesh.snapshot(service) === undefined) await s.mesh.ready(service, 2_000);
        const d = s.mesh.explain(service, rr);
        if (d === undefined) {
          json(res, 404, { error: `service ${service} is not resolved` });
          return;
        }
        json(res, 200, { decision: d, text: describeDecision(d) });
        return;
      }
      case "/v1/topology":
        json(res, 200, s.observer.topology(Date.now()));
        return;
      case "/v1/calls": {
        const trace = q.get("trace") ?? undefined;
        json(res, 200, s.observer.calls(trace, Number(q.get("limit") ?? 100)));
        return;
      }
      default:
        json(res, 404, {
          error: `no such path ${url.pathname}`,
          paths: [
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/endpoints",
            "/v1/breakers",
            "/v1/policies",
            "/v1/config",
            "/v1/explain",
            "/v1/topology",
            "/v1/calls",
          ],
        });
    }
  }
}
