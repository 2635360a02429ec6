// The inbound port, in front of the local app: other meshers call it. Before the app sees a
// request it checks who calls (a valid token from the caller's mesher when --auth-tokens is on,
// else the x-mesher-caller header as a claim), the app's policy allow-list and the app's rate
// limit (a token bucket for this instance). Then one try to the app, no retries (the caller's
// mesher retries elsewhere).

import type http from "node:http";
import type http2 from "node:http2";
import { TLSSocket } from "node:tls";
import { createTokenBucket, type Mesh, rateLimitParams, type TokenBucket, tryAcquire } from "@regmesh/sdk";
import type { Logger } from "pino";
import { TOKEN_HEADER, type TokenAuthority } from "../auth.js";
import type { Observer } from "../observe.js";
import { APP_UNREACHABLE, type H1Forwarder, type H2Forwarder } from "./forward.js";
import { answerH1, answerH2, endToEnd, first, type Reason, type Trace, traceOf } from "./wire.js";

export interface InboundDeps {
  mesh: Mesh;
  h1: H1Forwarder;
  h2: H2Forwarder;
  observer: Observer;
  logger: Logger;
  service: string;
  appOrigin: string;
  auth: TokenAuthority | undefined;
  inFlight: { n: number };
}

/** The service a TLS peer's verified certificate names (its CN), if the connection is TLS. */
function peerService(socket: unknown): string | undefined {
  if (!(socket instanceof TLSSocket) || !socket.authorized) return undefined;
  const cn = socket.getPeerCertificate()?.subject?.CN;
  return typeof cn === "string" && cn !== "" ? cn : undefined;
}

export class Inbound {
  private bucket: TokenBucket | undefined;
  private bucketKey = "";

  constructor(private readonly d: InboundDeps) {}

  /**
   * Who is calling, or why the call is refused. With TLS the caller is the CN of its verified
   * client certificate (the handshake already refused missing or untrusted ones); with
   * --auth-tokens, the issuer of a valid token (both must agree when both are on).
   */
  private async admit(
    h: Record<string, string | string[] | undefined>,
    socket: unknown,
  ): Promise<{ caller: string } | { reason: Reason; message: string }> {
    let caller = first(h["x-mesher-caller"]) ?? "";
    const certCaller = peerService(socket);
    if (certCaller !== undefined) caller = certCaller;
    if (this.d.auth !== undefined) {
      const v = await this.d.auth.verify(first(h[TOKEN_HEADER]));
      if (!v.ok) return { reason: "unauthorized", message: v.why };
      if (certCaller !== undefined && certCaller !== v.caller) {
        return { reason: "unauthorized", message: `token of ${v.caller} on a connection of ${certCaller}` };
      }
      caller = v.caller;
    }
    const policy = this.d.mesh.policy(this.d.service).policy;
    if (policy.allowedCallers !== undefined && !policy.allowedCallers.includes(caller)) {
      return {
        reason: "caller-not-allowed",
        message: `caller ${caller || "(unknown)"} is not allowed to call ${this.d.service}`,
      };
    }
    if (policy.rateLimit !== undefined) {
      const now = performance.now();
      const k = `${policy.rateLimit.requestsPerSecond}/${policy.rateLimit.burst ?? ""}`;
      if (this.bucket === undefined || this.bucketKey !== k) {
        const p = rateLimitParams(policy.rateLimit);
        this.bucket = createTokenBucket(p.ratePerSecond, p.burst, now);
        this.bucketKey = k;
      }
      if (!tryAcquire(this.bucket, now).ok) {
        return {
          reason: "rate-limited",
          message: `${this.d.service} admits ${policy.rateLimit.requestsPerSecond}/s per instance`,
        };
      }
    }
    return { caller };
  }

  private record(
    trace: Trace,
    caller: string,
    method: string,
    path: string,
    start: number,
    status: number,
    extra: { reason?: string; grpcStatus?: number } = {},
  ): void {
    this.d.observer.record(
      {
        traceId: trace.traceId,
        requestId: trace.requestId,
        direction: "inbound",
        caller,
        callee: this.d.service,
        method,
        path,
        status,
        attempts: 1,
        durationMs: performance.now() - start,
        at: new Date().toISOString(),
        ...extra,
      },
      Date.now(),
    );
    this.d.logger.info(
      {
        access: true,
        traceId: trace.traceId,
        requestId: trace.requestId,
        caller,
        method,
        path,
        status,
        ...extra,
      },
      "inbound",
    );
  }

  async handleH1(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const start = performance.now();
    const trace = traceOf(req.headers);
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    const a = await this.admit(req.headers, req.socket);
    if ("reason" in a) {
      req.resume();
      answerH1(res, a.reason, a.message, trace);
      this.record(trace, first(req.headers["x-mesher-caller"]) ?? "", method, path, start, res.statusCode, {
        reason: a.reason,
      });
      return;
    }
    this.d.inFlight.n++;
    try {
      const headers = endToEnd(req.headers, [TOKEN_HEADER]);
      headers.host = req.headers.host ?? this.d.service;
      headers.traceparent = trace.traceparent;
      headers["x-request-id"] = trace.requestId;
      const hasBody =
        req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined;
      const r = await this.d.h1.try({
        origin: this.d.appOrigin,
        method,
        path,
        headers,
        body: hasBody ? req : undefined,
        res,
        timeoutMs: undefined,
        wantsRetry: () => false,
      });
      if (!r.committed) {
        if (r.outcome.kind === "connect-failure") {
          res.writeHead(502, { "content-type": "application/json", "x-mesher-reason": APP_UNREACHABLE });
          res.end(
            JSON.stringify({
              error: {
                reason: APP_UNREACHABLE,
                message: "the local app refused the connection",
                traceId: trace.traceId,
              },
            }),
          );
          this.record(trace, a.caller, method, path, start, 502, { reason: APP_UNREACHABLE });
          return;
        }
        answerH1(res, "upstream-failure", `the local app did not answer: ${r.outcome.kind}`, trace);
        this.record(trace, a.caller, method, path, start, 502, { reason: "upstream-failure" });
        return;
      }
      this.record(trace, a.caller, method, path, start, r.status ?? 0);
    } finally {
      this.d.inFlight.n--;
    }
  }

  async handleH2(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): Promise<void> {
    const start = performance.now();
    const h = headers as Record<string, string | string[] | undefined>;
    const trace = traceOf(h);
    const method = String(headers[":method"] ?? "GET");
    const path = String(headers[":path"] ?? "/");
    const grpc = String(headers["content-type"] ?? "").startsWith("application/grpc");
    const a = await this.admit(h, stream.session?.socket);
    if ("reason" in a) {
      answerH2(stream, grpc, a.reason, a.message, trace);
      this.record(trace, first(h["x-mesher-caller"]) ?? "", method, path, start, grpc ? 200 : 403, {
        reason: a.reason,
      });
      return;
    }
    this.d.inFlight.n++;
    try {
      const r = await this.d.h2.try({
        origin: this.d.appOrigin,
        headers: {
          ...endToEnd(h, [TOKEN_HEADER]),
          ":method": method,
          ":path": path,
          ":authority": String(headers[":authority"] ?? this.d.service),
          ":scheme": "http",
          traceparent: trace.traceparent,
          "x-request-id": trace.requestId,
        },
        app: stream,
        body: undefined,
        tee: undefined,
        timeoutMs: undefined,
        grpc,
        wantsRetry: () => false,
      });
      if (!r.committed) {
        answerH2(stream, grpc, "upstream-failure", `the local app did not answer: ${r.outcome.kind}`, trace);
        this.record(trace, a.caller, method, path, start, 502, { reason: "upstream-failure" });
        return;
      }
      this.record(trace, a.caller, method, path, start, r.status ?? 200, { grpcStatus: r.grpcStatus });
    } finally {
      this.d.inFlight.n--;
    }
  }
}
