// Forwarding one try of a call to one instance: HTTP/1.1 through undici's dispatcher `stream`
// API (pooled keep-alive connections per origin, the body written straight into the app's
// response), HTTP/2 and gRPC through node:http2 client sessions kept per origin.
//
// A try reports how it ended as a CallOutcome and whether any response byte reached the app,
// so the caller knows whether another try is possible. For HTTP/1.1 the decision is taken in
// the `stream` factory, when the status is known and nothing was written yet: a response that
// will be retried is drained into a sink instead of the app.

import type { ServerResponse } from "node:http";
import http2 from "node:http2";
import { Writable } from "node:stream";
import type { CallOutcome } from "@regmesh/sdk";
import { Agent } from "undici";
import { endToEnd } from "./wire.js";

export interface TryResult {
  readonly outcome: CallOutcome;
  /** True once any response byte (the status line) went to the app. */
  readonly committed: boolean;
  /** HTTP status given to the app, when committed. */
  readonly status?: number;
  readonly grpcStatus?: number;
  readonly error?: Error;
}

function outcomeOfError(err: unknown, timedOut: boolean): CallOutcome {
  if (timedOut) return { kind: "timeout" };
  const e = err as { code?: string; cause?: { code?: string } };
  const code = e.code ?? e.cause?.code;
  if (
    code === "ECONNREFUSED" ||
    code === "EHOSTUNREACH" ||
    code === "ENETUNREACH" ||
    code === "ENOTFOUND" ||
    code === "EAI_AGAIN" ||
    code === "UND_ERR_CONNECT_TIMEOUT" ||
    code === "ERR_HTTP2_SESSION_ERROR_CONNECT"
  ) {
    return { kind: "connect-failure" };
  }
  if (code === "ERR_HTTP2_STREAM_ERROR" && /REFUSED_STREAM/.test(String((err as Error).message))) {
    return { kind: "refused-stream" };
  }
  if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") return { kind: "timeout" };
  return { kind: "reset" };
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1

export interface H1Try {
  origin: string;
  method: string;
  path: string;
  headers: Record<string, string | string[]>;
  /** A buffered body (retries possible) or the app's request stream (single try). */
  body: Buffer | NodeJS.ReadableStream | undefined;
  res: ServerResponse;
  timeoutMs: number | undefined;
  /** Asked when the status is known: true means "do not give it to the app; I will retry". */
  wantsRetry: (outcome: CallOutcome) => boolean;
  /** Extra response headers for the app. */
  responseHeaders?: Record<string, string>;
}

/**
 * An inbound mesher that could not reach its app answers 502 with this reason: the request
 * never reached an app, so the caller's mesher treats it as a connection failure (retry-safe).
 */
export const APP_UNREACHABLE = "app-unreachable";

/**
 * Client side of mutual TLS between meshers: this mesher's certificate, and the mesh CA that
 * must have signed the instance's. The instance is trusted by its CA, not by its address:
 * instances register IPs, which their certificates need not name.
 */
export interface MeshTls {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer;
}

function clientTls(t: MeshTls) {
  return {
    cert: t.cert,
    key: t.key,
    ca: t.ca,
    rejectUnauthorized: true,
    checkServerIdentity: () => undefined,
  };
}

export class H1Forwarder {
  readonly agent: Agent;

  constructor(opts: { connections?: number; tls?: MeshTls } = {}) {
    this.agent = new Agent({
      connections: opts.connections ?? 256,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 600_000,
      connect: { timeout: 2_000, ...(opts.tls !== undefined ? clientTls(opts.tls) : {}) },
      headersTimeout: 0,
      bodyTimeout: 0,
    });
  }

  try(t: H1Try): Promise<TryResult> {
    const ac = new AbortController();
    let timedOut = false;
    const timer =
      t.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            ac.abort();
          }, t.timeoutMs);
    let committed = false;
    let status = 0;
    // The app went away (closed its connection): stop the upstream call too.
    const onAppGone = (): void => {
      if (!t.res.writableFinished) ac.abort();
    };
    t.res.once("close", onAppGone);
    return new Promise<TryResult>((resolve) => {
      this.agent
        .stream(
          {
            origin: t.origin,
            path: t.path,
            method: t.method as "GET",
            headers: t.headers,
            body: t.body as Buffer,
            signal: ac.signal,
          },
          ({ statusCode, headers }) => {
            status = statusCode;
            const unreachable = statusCode === 502 && headers["x-mesher-reason"] === APP_UNREACHABLE;
            if (
              t.wantsRetry(
                unreachable ? { kind: "connect-failure" } : { kind: "response", status: statusCode },
              )
            ) {
              return new Writable({ write: (_c, _e, cb) => cb() });
            }
            committed = true;
            const h = endToEnd(headers as Record<string, string | string[] | undefined>);
            t.res.writeHead(statusCode, { ...h, ...t.responseHeaders });
            return t.res;
          },
        )
        .then(
          () => {
            clearTimeout(timer);
            t.res.off("close", onAppGone);
            resolve({ outcome: { kind: "response", status }, committed, status });
          },
          (err: Error) => {
            clearTimeout(timer);
            t.res.off("close", onAppGone);
            if (committed && !t.res.writableEnded) t.res.destroy();
            const outcome: CallOutcome =
              status !== 0 && !committed ? { kind: "response", status } : outcomeOfError(err, timedOut);
            resolve({ outcome, committed, status: committed ? status : undefined, error: err });
          },
        );
    });
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 (gRPC and h2c)

export interface H2Try {
  origin: string;
  headers: http2.OutgoingHttpHeaders;
  /** The app's stream: its body is piped upstream; the response goes back to it. */
  app: http2.ServerHttp2Stream;
  /** When set, the body was buffered already (a retry): written instead of piping. */
  body: Buffer | undefined;
  /** Collects the piped body up to a cap, so a failed first try can be retried. */
  tee: ((chunk: Buffer) => void) | undefined;
  timeoutMs: number | undefined;
  grpc: boolean;
  wantsRetry: (outcome: CallOutcome) => boolean;
  responseHeaders?: Record<string, string>;
}

export class H2Forwarder {
  private readonly sessions = new Map<string, Promise<http2.ClientHttp2Session>>();

  constructor(private readonly tls?: MeshTls) {}

  private session(origin: string): Promise<http2.ClientHttp2Session> {
    let p = this.sessions.get(origin);
    if (p !== undefined) return p;
    p = new Promise<http2.ClientHttp2Session>((resolve, reject) => {
      const s = http2.connect(origin, {
        settings: { enablePush: false },
        ...(origin.startsWith("https:") && this.tls !== undefined ? clientTls(this.tls) : {}),
      });
      const drop = (): void => {
        if (this.sessions.get(origin) === p) this.sessions.delete(origin);
      };
      s.once("connect", () => resolve(s));
      s.once("error", (err) => {
        drop();
        reject(err);
      });
      s.once("close", drop);
      s.once("goaway", drop);
      s.setTimeout(120_000, () => s.close());
      s.unref();
    });
    p.catch(() => {});
    this.sessions.set(origin, p);
    return p;
  }

  async try(t: H2Try): Promise<TryResult> {
    let session: http2.ClientHttp2Session;
    try {
      session = await this.session(t.origin);
    } catch (err) {
      return { outcome: outcomeOfError(err, false), committed: false, error: err as Error };
    }
    return new Promise<TryResult>((resolve) => {
      let committed = false;
      let timedOut = false;
      let status = 0;
      let grpcStatus: number | undefined;
      let trailers: http2.IncomingHttpHeaders | undefined;
      let settled = false;
      const up = session.request(t.headers, { endStream: false });
      const timer =
        t.timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              timedOut = true;
              up.close(http2.constants.NGHTTP2_CANCEL);
            }, t.timeoutMs);
      const finish = (r: TryResult): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(r);
      };
      const onAppAbort = (): void => {
        if (!up.closed) up.close(http2.constants.NGHTTP2_CANCEL);
      };
      t.app.once("close", onAppAbort);
      if (t.body !== undefined) up.end(t.body);
      else {
        const onData = (chunk: Buffer): void => {
          t.tee?.(chunk);
          if (!up.closed && !up.destroyed && !up.write(chunk)) t.app.pause();
        };
        const onEnd = (): void => {
          if (!up.closed) up.end();
        };
        t.app.on("data", onData);
        t.app.once("end", onEnd);
        up.on("drain", () => t.app.resume());
        up.once("close", () => {
          // Keep reading (and teeing) the app's body for a retry; never leave it paused.
          t.app.off("end", onEnd);
          if (!committed) t.app.resume();
          else t.app.off("data", onData);
        });
      }
      up.on("response", (headers, flags) => {
        status = Number(headers[":status"] ?? 0);
        const trailersOnly =
          (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0 || headers["grpc-status"] !== undefined;
        if (t.grpc && trailersOnly) grpcStatus = Number(headers["grpc-status"] ?? 2);
        const outcome: CallOutcome =
          t.grpc && trailersOnly ? { kind: "grpc", code: grpcStatus ?? 2 } : { kind: "response", status };
        if ((trailersOnly || !t.grpc) && t.wantsRetry(outcome)) {
          up.close(http2.constants.NGHTTP2_CANCEL);
          finish({ outcome, committed: false, status, grpcStatus });
          return;
        }
        committed = true;
        const h = endToEnd(headers as Record<string, string | string[] | undefined>);
        if (t.app.destroyed || t.app.closed) return;
        if (t.grpc && trailersOnly) {
          t.app.respond({ ":status": status, ...h, ...t.responseHeaders }, { endStream: true });
          return;
        }
        t.app.respond({ ":status": status, ...h, ...t.responseHeaders }, { waitForTrailers: true });
        t.app.once("wantTrailers", () => {
          const tr =
            trailers === undefined ? {} : endToEnd(trailers as Record<string, string | string[] | undefined>);
          if (t.grpc && tr["grpc-status"] === undefined) tr["grpc-status"] = "0";
          try {
            t.app.sendTrailers(tr);
          } catch {
            // the app went away
          }
        });
        up.pipe(t.app);
      });
      up.on("trailers", (headers) => {
        trailers = headers;
        if (headers["grpc-status"] !== undefined) grpcStatus = Number(headers["grpc-status"]);
      });
      up.on("close", () => {
        t.app.off("close", onAppAbort);
        const code = up.rstCode;
        if (committed) {
          if (code !== undefined && code !== http2.constants.NGHTTP2_NO_ERROR && !t.app.closed) {
            t.app.close(timedOut ? http2.constants.NGHTTP2_CANCEL : http2.constants.NGHTTP2_INTERNAL_ERROR);
          }
          const outcome: CallOutcome = t.grpc
            ? { kind: "grpc", code: grpcStatus ?? (timedOut ? 4 : 2) }
            : code !== undefined && code !== 0
              ? { kind: "reset" }
              : { kind: "response", status };
          finish({ outcome, committed, status, grpcStatus });
          return;
        }
        if (code === http2.constants.NGHTTP2_REFUSED_STREAM) {
          finish({ outcome: { kind: "refused-stream" }, committed: false });
          return;
        }
        finish({ outcome: timedOut ? { kind: "timeout" } : { kind: "reset" }, committed: false });
      });
      up.on("error", () => {});
    });
  }

  close(): void {
    for (const p of this.sessions.values())
      void p.then(
        (s) => s.close(),
        () => {},
      );
    this.sessions.clear();
  }
}
