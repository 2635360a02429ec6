// The outbound proxy: the local app's calls to other services. The target service is named by
// (first match wins):
//   1. the `x-mesher-target` header (any protocol; the way for gRPC channels: see docs/mesher.md);
//   2. an absolute-form request line `GET http://orders/path` (apps using HTTP_PROXY);
//   3. the Host header / :authority, when it is not a loopback address (`Host: orders`);
//   4. the first path segment otherwise: `http://127.0.0.1:15001/orders/path` -> orders, /path.
// The SDK's Mesh picks the instance (policy route, balancer, breakers, ejection); the call goes
// straight to it. Retries: only when the body was buffered (under --max-retry-body-bytes) and
// no response byte reached the app; without a retry policy, idempotent methods retry
// connection failures and resets once, other methods only connection failures.

import type http from "node:http";
import type http2 from "node:http2";
import type { CallOutcome, Instance, Mesh, RetryPolicy, RouteRequest } from "@regmesh/sdk";
import type { Logger } from "pino";
import type { TokenAuthority } from "../auth.js";
import { TOKEN_HEADER } from "../auth.js";
import type { CallRecord, Observer } from "../observe.js";
import type { H1Forwarder, H2Forwarder, TryResult } from "./forward.js";
import {
  answerH1,
  answerH2,
  endToEnd,
  first,
  grpcTimeoutHeader,
  grpcTimeoutMs,
  hostOnly,
  isLoopbackHost,
  type Reason,
  type Trace,
  traceOf,
} from "./wire.js";

const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);

const RETRY_IDEMPOTENT: RetryPolicy = {
  attempts: 2,
  retryOn: ["connect-failure", "refused-stream", "reset", "unavailable"],
};
const RETRY_OTHER: RetryPolicy = {
  attempts: 2,
  retryOn: ["connect-failure", "refused-stream", "unavailable"],
};

export interface OutboundDeps {
  mesh: Mesh;
  h1: H1Forwarder;
  h2: H2Forwarder;
  observer: Observer;
  logger: Logger;
  /** This mesher's service (the caller), if it registers one. */
  service: string | undefined;
  auth: TokenAuthority | undefined;
  maxRetryBodyBytes: number;
  /** How long a first call to a service waits for its instances. */
  resolveTimeoutMs: number;
  inFlight: { n: number };
}

interface Target {
  service: string;
  path: string;
}

function targetOf(
  headers: Record<string, string | string[] | undefined>,
  url: string,
  authority: string | undefined,
): Target | undefined {
  const explicit = first(headers["x-mesher-target"]);
  if (explicit !== undefined && explicit !== "") return { service: explicit, path: url };
  if (url.startsWith("http://")) {
    const u = new URL(url);
    return { service: u.hostname, path: `${u.pathname}${u.search}` };
  }
  if (authority !== undefined && authority !== "") {
    const host = hostOnly(authority);
    if (!isLoopbackHost(host)) return { service: host, path: url };
  }
  const m = /^\/([^/?]+)(.*)$/.exec(url);
  if (m === null) return undefined;
  const rest = m[2] === "" ? "/" : m[2]!.startsWith("?") ? `/${m[2]}` : m[2]!;
  return { service: decodeURIComponent(m[1]!), path: rest };
}

function routeRequest(
  method: string,
  path: string,
  headers: Record<string, string | string[] | undefined>,
): RouteRequest {
  return { method, path, headers };
}

export class Outbound {
  constructor(private readonly d: OutboundDeps) {}

  private record(
    trace: Trace,
    target: Target | undefined,
    method: string,
    start: number,
    r: Partial<CallRecord> & { status: number },
  ): void {
    const rec: CallRecord = {
      traceId: trace.traceId,
      requestId: trace.requestId,
      direction: "outbound",
      caller: this.d.service ?? "",
      callee: target?.service ?? "",
      method,
      path: target?.path ?? "",
      attempts: 0,
      durationMs: performance.now() - start,
      at: new Date().toISOString(),
      ...r,
    };
    this.d.observer.record(rec, Date.now());
    this.d.logger.info(
      {
        access: true,
        traceId: rec.traceId,
        requestId: rec.requestId,
        caller: rec.caller,
        callee: rec.callee,
        method,
        path: rec.path,
        status: rec.status,
        grpcStatus: rec.grpcStatus,
        instance: rec.instance,
        attempts: rec.attempts,
        reason: rec.reason,
        ms: Math.round(rec.durationMs * 100) / 100,
      },
      "outbound",
    );
  }

  private async ready(service: string): Promise<void> {
    if (this.d.mesh.snapshot(service) === undefined)
      await this.d.mesh.ready(service, this.d.resolveTimeoutMs);
  }

  private upstreamHeaders(
    base: Record<string, string | string[]>,
    trace: Trace,
    target: Target,
  ): Record<string, string | string[]> {
    const h: Record<string, string | string[]> = { ...base };
    delete h["x-mesher-target"];
    delete h[TOKEN_HEADER];
    h.traceparent = trace.traceparent;
    h["x-request-id"] = trace.requestId;
    if (this.d.service !== undefined) h["x-mesher-caller"] = this.d.service;
    if (this.d.auth !== undefined) h[TOKEN_HEADER] = this.d.auth.token(target.service);
    return h;
  }

  // -------------------------------------------------------------------------------------------
  // HTTP/1.1

  async handleH1(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const start = performance.now();
    const trace = traceOf(req.headers);
    const method = req.method ?? "GET";
    const target = targetOf(req.headers, req.url ?? "/", req.headers.host);
    if (target === undefined) {
      answerH1(
        res,
        "no-target",
        "name the service with the Host header, x-mesher-target or /<service>/path",
        trace,
      );
      this.record(trace, target, method, start, { status: 400, reason: "no-target" });
      return;
    }
    this.d.inFlight.n++;
    try {
      await this.forwardH1(req, res, target, trace, method, start);
    } finally {
      this.d.inFlight.n--;
    }
  }

  private async forwardH1(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    target: Target,
    trace: Trace,
    method: string,
    start: number,
  ): Promise<void> {
    const triesLog: TryEntry[] = [];
    const fail = (reason: Reason, message: string, attempts: number, instance?: string): void => {
      answerH1(res, reason, message, trace);
      this.record(trace, target, method, start, {
        status: res.statusCode,
        reason,
        attempts,
        instance,
        tries: triesLog,
      });
    };
    // The body: buffered when small enough (retries possible), streamed otherwise.
    const hasBody =
      req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined;
    const length = Number(req.headers["content-length"] ?? 0);
    let body: Buffer | NodeJS.ReadableStream | undefined;
    let replayable = true;
    if (!hasBody || length === 0) body = hasBody ? Buffer.alloc(0) : undefined;
    else if (req.headers["content-length"] !== undefined && length <= this.d.maxRetryBodyBytes) {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      body = Buffer.concat(chunks);
    } else {
      body = req;
      replayable = false;
    }
    try {
      await this.ready(target.service);
    } catch {
      // resolve errors are answered by pick below
    }
    const rr = routeRequest(method, target.path, req.headers);
    const fallback = IDEMPOTENT.has(method) ? RETRY_IDEMPOTENT : RETRY_OTHER;
    const headers = this.upstreamHeaders(endToEnd(req.headers), trace, target);
    headers.host = target.service;
    const tried = new Set<string>();
    const deadline =
      performance.now() + (this.d.mesh.policy(target.service).policy.timeoutMs ?? Number.POSITIVE_INFINITY);
    for (let tries = 1; ; tries++) {
      const p = this.d.mesh.pick(target.service, rr, tried);
      if (!p.ok) return fail(p.reason, p.message, tries - 1);
      const a = p.attempt;
      tried.add(a.instance.id);
      if (a.instance.protocol === "grpc" || a.instance.protocol === "h2c") {
        a.end({ kind: "response", status: 200 });
        return fail(
          "protocol-mismatch",
          `${target.service} speaks ${a.instance.protocol}; call it over HTTP/2`,
          tries,
          a.instance.id,
        );
      }
      const left = deadline - performance.now();
      const timeoutMs = Math.min(
        a.perTryTimeoutMs ?? a.timeoutMs ?? Number.POSITIVE_INFINITY,
        a.timeoutMs ?? Number.POSITIVE_INFINITY,
        left,
      );
      let retry = false;
      const logTry = tryLogger(triesLog, a.instance.id);
      const wants = (o: CallOutcome): boolean => {
        logTry(o);
        const failed = a.end(o);
        retry = failed && replayable && this.d.mesh.retry(target.service, tries, o, fallback).retry;
        return retry;
      };
      const r: TryResult = await this.d.h1.try({
        origin: originOf(a.instance),
        method,
        path: target.path,
        headers,
        body,
        res,
        timeoutMs: Number.isFinite(timeoutMs) ? Math.max(1, timeoutMs) : undefined,
        wantsRetry: wants,
        responseHeaders: { "x-request-id": trace.requestId },
      });
      if (r.outcome.kind !== "response") wants(r.outcome);
      if (r.committed) {
        logTry(r.outcome);
        this.record(trace, target, method, start, {
          status: r.status ?? 502,
          attempts: tries,
          instance: a.instance.id,
          tries: triesLog,
        });
        return;
      }
      if (retry) continue;
      if (r.outcome.kind === "response") {
        // A final answer that was drained for a retry no longer allowed: should not happen (the
        // decision was taken with the status); answer as an upstream failure with its status.
        return fail(
          "upstream-failure",
          `${target.service}/${a.instance.id} answered ${r.outcome.status}`,
          tries,
          a.instance.id,
        );
      }
      if (r.outcome.kind === "timeout") {
        return fail(
          "upstream-timeout",
          `${target.service}/${a.instance.id} did not answer in time`,
          tries,
          a.instance.id,
        );
      }
      return fail(
        "upstream-failure",
        `${target.service}/${a.instance.id}: ${r.outcome.kind}${r.error === undefined ? "" : ` (${r.error.message})`}`,
        tries,
        a.instance.id,
      );
    }
  }

  // -------------------------------------------------------------------------------------------
  // HTTP/2 and gRPC

  async handleH2(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): Promise<void> {
    const start = performance.now();
    const h = headers as Record<string, string | string[] | undefined>;
    const trace = traceOf(h);
    const method = String(headers[":method"] ?? "GET");
    const path = String(headers[":path"] ?? "/");
    const grpc = String(headers["content-type"] ?? "").startsWith("application/grpc");
    const explicit = first(h["x-mesher-target"]);
    const authority = String(headers[":authority"] ?? "");
    let target: Target | undefined;
    if (explicit !== undefined && explicit !== "") target = { service: explicit, path };
    else if (authority !== "" && !isLoopbackHost(hostOnly(authority)))
      target = { service: hostOnly(authority), path };
    else if (!grpc) target = targetOf(h, path, undefined);
    if (target === undefined) {
      answerH2(stream, grpc, "no-target", "name the service with :authority or x-mesher-target", trace);
      this.record(trace, target, method, start, { status: 400, reason: "no-target" });
      return;
    }
    this.d.inFlight.n++;
    try {
      await this.forwardH2(stream, h, target, trace, method, grpc, start);
    } finally {
      this.d.inFlight.n--;
    }
  }

  private async forwardH2(
    stream: http2.ServerHttp2Stream,
    h: Record<string, string | string[] | undefined>,
    target: Target,
    trace: Trace,
    method: string,
    grpc: boolean,
    start: number,
  ): Promise<void> {
    const triesLog: TryEntry[] = [];
    const fail = (reason: Reason, message: string, attempts: number, instance?: string): void => {
      answerH2(stream, grpc, reason, message, trace);
      this.record(trace, target, method, start, {
        tries: triesLog,
        status: 200,
        grpcStatus: grpc ? (reasonGrpc[reason] ?? 14) : undefined,
        reason,
        attempts,
        instance,
      });
    };
    try {
      await this.ready(target.service);
    } catch {
      // answered by pick
    }
    const rr = routeRequest(method, target.path, h);
    const deadlineMs = grpcTimeoutMs(first(h["grpc-timeout"]));
    const deadline =
      performance.now() +
      (deadlineMs ?? this.d.mesh.policy(target.service).policy.timeoutMs ?? Number.POSITIVE_INFINITY);
    const base = this.upstreamHeaders(endToEnd(h), trace, target);
    const tried = new Set<string>();
    const kept: Buffer[] = [];
    let keptBytes = 0;
    let overflow = false;
    let bodyEnded = false;
    stream.once("end", () => (bodyEnded = true));
    const tee = (c: Buffer): void => {
      if (overflow) return;
      keptBytes += c.length;
      if (keptBytes > this.d.maxRetryBodyBytes) {
        overflow = true;
        kept.length = 0;
      } else kept.push(c);
    };
    const fallback = grpc || IDEMPOTENT.has(method) ? RETRY_IDEMPOTENT : RETRY_OTHER;
    for (let tries = 1; ; tries++) {
      const p = this.d.mesh.pick(target.service, rr, tried);
      if (!p.ok) return fail(p.reason, p.message, tries - 1);
      const a = p.attempt;
      tried.add(a.instance.id);
      const left = deadline - performance.now();
      if (left <= 0) {
        a.end({ kind: "response", status: 200 });
        return fail("upstream-timeout", `deadline passed before a try on ${target.service}`, tries);
      }
      const timeoutMs = Math.min(a.perTryTimeoutMs ?? Number.POSITIVE_INFINITY, left);
      const headers: http2.OutgoingHttpHeaders = {
        ...base,
        ":method": method,
        ":path": target.path,
        ":authority": target.service,
        ":scheme": "http",
      };
      if (grpc && Number.isFinite(timeoutMs)) headers["grpc-timeout"] = grpcTimeoutHeader(timeoutMs);
      let retry = false;
      const logTry = tryLogger(triesLog, a.instance.id);
      const wants = (o: CallOutcome): boolean => {
        logTry(o);
        const failed = a.end(o);
        retry =
          failed && bodyEnded && !overflow && this.d.mesh.retry(target.service, tries, o, fallback).retry;
        return retry;
      };
      const r = await this.d.h2.try({
        origin: originOf(a.instance),
        headers,
        app: stream,
        body: tries === 1 ? undefined : Buffer.concat(kept),
        tee: tries === 1 ? tee : undefined,
        timeoutMs: Number.isFinite(timeoutMs) ? timeoutMs : undefined,
        grpc,
        wantsRetry: wants,
        responseHeaders: { "x-request-id": trace.requestId },
      });
      if (!r.committed && r.outcome.kind !== "response" && r.outcome.kind !== "grpc") wants(r.outcome);
      else if (r.committed) a.end(r.outcome);
      if (r.committed) {
        logTry(r.outcome);
        this.record(trace, target, method, start, {
          tries: triesLog,
          status: r.status ?? 200,
          grpcStatus: r.grpcStatus,
          attempts: tries,
          instance: a.instance.id,
        });
        return;
      }
      if (retry) {
        if (tries === 1 && !bodyEnded) await new Promise<void>((res) => stream.once("end", res));
        continue;
      }
      if (r.outcome.kind === "grpc" || r.outcome.kind === "response") {
        return fail("upstream-failure", `${target.service}/${a.instance.id} failed`, tries, a.instance.id);
      }
      if (r.outcome.kind === "timeout")
        return fail(
          "upstream-timeout",
          `${target.service}/${a.instance.id} did not answer in time`,
          tries,
          a.instance.id,
        );
      return fail(
        "upstream-failure",
        `${target.service}/${a.instance.id}: ${r.outcome.kind}`,
        tries,
        a.instance.id,
      );
    }
  }
}

const reasonGrpc: Partial<Record<Reason, number>> = {
  "rate-limited": 8,
  "caller-not-allowed": 7,
  unauthorized: 7,
  "upstream-timeout": 4,
};

function outcomeName(o: CallOutcome): string {
  return o.kind === "response" ? String(o.status) : o.kind === "grpc" ? `grpc:${o.code}` : o.kind;
}

type TryEntry = { instance: string; outcome: string; atMs: number; endMs: number };

/** Records one try in the call's log the first time its outcome is known. */
function tryLogger(log: TryEntry[], instance: string): (o: CallOutcome) => void {
  const atMs = Date.now();
  let logged = false;
  return (o) => {
    if (logged) return;
    logged = true;
    log.push({ instance, outcome: outcomeName(o), atMs, endMs: Date.now() });
  };
}

/** Metadata an instance registers when its inbound port speaks TLS (--tls-*). */
export const TLS_METADATA = "mesher.tls";

export function originOf(i: Instance): string {
  const host = i.address.includes(":") ? `[${i.address}]` : i.address;
  return `${i.metadata[TLS_METADATA] === "true" ? "https" : "http"}://${host}:${i.port}`;
}
