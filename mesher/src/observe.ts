// What the mesher saw: Prometheus metrics, the caller -> callee topology with rates and error
// ratios, and the most recent calls by trace id. Every proxied call ends in `record()`.

import client from "prom-client";

export interface CallRecord {
  readonly traceId: string;
  readonly requestId: string;
  readonly direction: "outbound" | "inbound";
  readonly caller: string;
  readonly callee: string;
  readonly method: string;
  readonly path: string;
  /** HTTP status given to the app (or gRPC status as "grpc:<code>"). */
  readonly status: number;
  readonly grpcStatus?: number | undefined;
  readonly instance?: string | undefined;
  readonly attempts: number;
  /** Set when the mesher answered itself: no-instance, breaker-open, rate-limited, upstream-timeout, ... */
  readonly reason?: string | undefined;
  readonly durationMs: number;
  readonly at: string;
  /** Every try: instance, outcome kind (or status), wall-clock start and when its outcome was known (ms). */
  readonly tries?: readonly {
    readonly instance: string;
    readonly outcome: string;
    readonly atMs: number;
    readonly endMs: number;
  }[];
}

interface Edge {
  caller: string;
  callee: string;
  requests: number;
  errors: number;
  /** Exponentially weighted per-second rates (1-minute horizon). */
  rate: number;
  errorRate: number;
  lastMs: number;
  latencySumMs: number;
}

const RECENT_MAX = 2_000;
const HORIZON_MS = 60_000;

export class Observer {
  readonly registry = new client.Registry();
  readonly requests: client.Counter<"direction" | "caller" | "callee" | "code" | "reason">;
  readonly latency: client.Histogram<"direction" | "caller" | "callee">;
  readonly breakerState: client.Gauge<"service" | "instance">;
  readonly ejections: client.Counter<"service" | "reason">;
  readonly registryUp: client.Gauge;
  readonly registryLatency: client.Gauge;
  readonly cacheAge: client.Gauge<"service">;
  readonly instances: client.Gauge<"service" | "state">;
  readonly inFlight: client.Gauge<"direction">;
  private readonly edges = new Map<string, Edge>();
  private readonly requestChildren = new Map<string, client.Counter.Internal>();
  private readonly latencyChildren = new Map<
    string,
    client.Histogram.Internal<"direction" | "caller" | "callee">
  >();
  private readonly recent: CallRecord[] = [];
  private next = 0;

  constructor(labels: Record<string, string> = {}) {
    this.registry.setDefaultLabels(labels);
    client.collectDefaultMetrics({ register: this.registry, prefix: "mesher_" });
    const r = [this.registry];
    this.requests = new client.Counter({
      name: "mesher_requests_total",
      help: "Calls proxied, by direction, caller, callee, status code and the mesher's reason when it answered itself.",
      labelNames: ["direction", "caller", "callee", "code", "reason"],
      registers: r,
    });
    this.latency = new client.Histogram({
      name: "mesher_request_duration_seconds",
      help: "Time from the request's arrival to the end of the response, by direction, caller and callee.",
      labelNames: ["direction", "caller", "callee"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: r,
    });
    this.breakerState = new client.Gauge({
      name: "mesher_breaker_open",
      help: "1 when the instance's circuit breaker is open, 0.5 half-open, 0 closed.",
      labelNames: ["service", "instance"],
      registers: r,
    });
    this.ejections = new client.Counter({
      name: "mesher_ejections_total",
      help: "Outlier ejections, by service and reason.",
      labelNames: ["service", "reason"],
      registers: r,
    });
    this.registryUp = new client.Gauge({
      name: "mesher_registry_up",
      help: "1 when the last registry probe answered.",
      registers: r,
    });
    this.registryLatency = new client.Gauge({
      name: "mesher_registry_latency_seconds",
      help: "Latency of the last registry probe.",
      registers: r,
    });
    this.cacheAge = new client.Gauge({
      name: "mesher_endpoints_stale_seconds",
      help: "How long a routed service's endpoints have been stale (0 when fresh).",
      labelNames: ["service"],
      registers: r,
    });
    this.instances = new client.Gauge({
      name: "mesher_endpoints",
      help: "Known instances of each routed service, by reported health.",
      labelNames: ["service", "state"],
      registers: r,
    });
    this.inFlight = new client.Gauge({
      name: "mesher_requests_in_flight",
      help: "Calls in flight, by direction.",
      labelNames: ["direction"],
      registers: r,
    });
  }

  record(c: CallRecord, nowMs: number): void {
    // prom-client hashes the label set on every inc/observe; the children are looked up once
    // per label set and kept (bounded by services x codes).
    const code = c.grpcStatus === undefined ? String(c.status) : `grpc:${c.grpcStatus}`;
    const rk = `${c.direction}\u0000${c.caller}\u0000${c.callee}\u0000${code}\u0000${c.reason ?? ""}`;
    let counter = this.requestChildren.get(rk);
    if (counter === undefined) {
      counter = this.requests.labels({
        direction: c.direction,
        caller: c.caller,
        callee: c.callee,
        code,
        reason: c.reason ?? "",
      });
      this.requestChildren.set(rk, counter);
    }
    counter.inc();
    const lk = `${c.direction}\u0000${c.caller}\u0000${c.callee}`;
    let hist = this.latencyChildren.get(lk);
    if (hist === undefined) {
      hist = this.latency.labels({ direction: c.direction, caller: c.caller, callee: c.callee });
      this.latencyChildren.set(lk, hist);
    }
    hist.observe(c.durationMs / 1000);
    const failed =
      c.status >= 500 || c.reason !== undefined || (c.grpcStatus !== undefined && c.grpcStatus !== 0);
    const k = `${c.caller}\u0000${c.callee}`;
    let e = this.edges.get(k);
    if (e === undefined) {
      e = {
        caller: c.caller,
        callee: c.callee,
        requests: 0,
        errors: 0,
        rate: 0,
        errorRate: 0,
        lastMs: nowMs,
        latencySumMs: 0,
      };
      this.edges.set(k, e);
    }
    this.decay(e, nowMs);
    e.requests += 1;
    e.latencySumMs += c.durationMs;
    e.rate += 1000 / HORIZON_MS;
    if (failed) {
      e.errors += 1;
      e.errorRate += 1000 / HORIZON_MS;
    }
    if (this.recent.length < RECENT_MAX) this.recent.push(c);
    else this.recent[this.next] = c;
    this.next = (this.next + 1) % RECENT_MAX;
  }

  private decay(e: Edge, nowMs: number): void {
    const f = Math.exp(-(nowMs - e.lastMs) / HORIZON_MS);
    e.rate *= f;
    e.errorRate *= f;
    e.lastMs = nowMs;
  }

  /** Observed caller -> callee edges: totals, per-second rates over about a minute, error ratio. */
  topology(nowMs: number): {
    caller: string;
    callee: string;
    requests: number;
    errors: number;
    ratePerSecond: number;
    errorRatio: number;
    meanLatencyMs: number;
  }[] {
    return [...this.edges.values()].map((e) => {
      this.decay(e, nowMs);
      return {
        caller: e.caller,
        callee: e.callee,
        requests: e.requests,
        errors: e.errors,
        ratePerSecond: Math.round(e.rate * 1000) / 1000,
        errorRatio: e.requests === 0 ? 0 : e.errors / e.requests,
        meanLatencyMs: e.requests === 0 ? 0 : e.latencySumMs / e.requests,
      };
    });
  }

  /** Recent calls, newest first; with `traceId`, only that trace's. */
  calls(traceId?: string, limit = 100): CallRecord[] {
    const out: CallRecord[] = [];
    const n = this.recent.length;
    for (let i = 1; i <= n && out.length < limit; i++) {
      const c = this.recent[(this.next - i + n) % n]!;
      if (traceId === undefined || c.traceId === traceId) out.push(c);
    }
    return out;
  }
}
