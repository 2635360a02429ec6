// Small pieces of the wire shared by the outbound and inbound proxies: one port for HTTP/1.1 and
// cleartext HTTP/2 (prior knowledge, as gRPC channels use), trace context, hop-by-hop headers,
// gRPC timeouts, and the JSON error body apps get when the mesher answers itself.

import { randomFillSync } from "node:crypto";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";

/** The HTTP/2 connection preface (RFC 9113 §3.4). */
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export interface DualServer {
  readonly tcp: net.Server;
  readonly h1: http.Server;
  readonly h2: http2.Http2Server;
  /** Open connections, so a drain can wait for them and a stop can end them. */
  readonly sockets: Set<net.Socket>;
}

/**
 * A TCP server that sniffs each connection's first bytes: the HTTP/2 preface goes to `h2`,
 * anything else to `h1`. Both share the port, so HTTP/1.1 apps and gRPC channels use one address.
 */
export function dualServer(
  onH1: (req: http.IncomingMessage, res: http.ServerResponse) => void,
  onH2: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void,
  tlsOptions?: tls.TlsOptions,
): DualServer {
  const h1 = http.createServer({ keepAliveTimeout: 65_000, requestTimeout: 0 }, onH1);
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: 1_000 } });
  h2.on("stream", onH2);
  h2.on("sessionError", () => {});
  const sockets = new Set<net.Socket>();
  if (tlsOptions !== undefined) {
    // With TLS, ALPN says which protocol the connection speaks: no sniffing, native sockets.
    const server = tls.createServer({ ...tlsOptions, ALPNProtocols: ["h2", "http/1.1"] }, (socket) => {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {});
      (socket.alpnProtocol === "h2" ? h2 : h1).emit("connection", socket);
    });
    server.on("tlsClientError", () => {});
    return { tcp: server, h1, h2, sockets };
  }
  const tcp = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let seen = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      seen = Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, PREFACE.length);
      const isH2 = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
      if (isH2 && seen.length < PREFACE.length) return; // need more bytes to decide
      socket.off("data", onData);
      socket.pause();
      // Node cannot peek: the bytes read to decide go back with unshift, and both servers read
      // the native handle; an HTTP/2 session first feeds itself what the socket had buffered
      // (Node >= 15; registry-node's listener does the same, the mesher cannot import it).
      socket.unshift(seen);
      if (isH2) {
        h2.emit("connection", socket);
        return;
      }
      h1.emit("connection", socket);
      socket.resume();
    };
    socket.on("data", onData);
  });
  return { tcp, h1, h2, sockets };
}

export function listen(server: net.Server, addr: { host: string; port: number }): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(addr.port, addr.host, () => {
      server.off("error", reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Trace context (W3C traceparent) and request ids.

export interface Trace {
  readonly traceId: string;
  /** The traceparent to send upstream: same trace, a new span as parent. */
  readonly traceparent: string;
  readonly requestId: string;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

// Random ids from a pool refilled 4 KiB at a time: one randomFillSync per ~100 calls instead of
// three crypto calls per call (they showed in the proxy's profile).
const POOL = Buffer.alloc(4096);
let poolAt = POOL.length;

function randomHex(bytes: number): string {
  if (poolAt + bytes > POOL.length) {
    randomFillSync(POOL);
    poolAt = 0;
  }
  const s = POOL.toString("hex", poolAt, poolAt + bytes);
  poolAt += bytes;
  return s;
}

/** A random (version 4) UUID from the pool. */
function randomId(): string {
  const h = randomHex(16);
  const v = ((Number.parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${v}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export function traceOf(headers: Record<string, string | string[] | undefined>): Trace {
  const tp = first(headers.traceparent);
  const m = tp === undefined ? null : TRACEPARENT.exec(tp.trim());
  const valid = m !== null && !/^0+$/.test(m[1]!) && !/^0+$/.test(m[2]!);
  const traceId = valid ? m[1]! : randomHex(16);
  const flags = valid ? m[3]! : "01";
  const requestId = first(headers["x-request-id"]) ?? randomId();
  return { traceId, traceparent: `00-${traceId}-${randomHex(8)}-${flags}`, requestId };
}

export function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

// ---------------------------------------------------------------------------------------------
// Headers.

/** Hop-by-hop headers (RFC 9110 §7.6.1) and the ones undici or HTTP/2 refuse to carry. */
const HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "expect",
  "host",
  "http2-settings",
]);

/** Copies end-to-end headers, dropping hop-by-hop ones and those named in `Connection`. */
export function endToEnd(
  headers: Record<string, string | string[] | undefined>,
  dropAlso: readonly string[] = [],
): Record<string, string | string[]> {
  const named = new Set<string>();
  const conn = headers.connection;
  for (const v of Array.isArray(conn) ? conn : conn === undefined ? [] : [conn]) {
    for (const n of v.split(",")) named.add(n.trim().toLowerCase());
  }
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || k.startsWith(":")) continue;
    const lk = k.toLowerCase();
    if (HOP.has(lk) || named.has(lk) || dropAlso.includes(lk)) continue;
    out[lk] = v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// gRPC.

const GRPC_TIMEOUT = /^(\d{1,8})([HMSmun])$/;
const GRPC_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 1e-3, n: 1e-6 };

/** grpc-timeout (PROTOCOL-HTTP2.md: TimeoutValue TimeoutUnit) in ms; undefined when absent or bad. */
export function grpcTimeoutMs(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const m = GRPC_TIMEOUT.exec(v);
  return m === null ? undefined : Number(m[1]) * GRPC_UNIT_MS[m[2]!]!;
}

export function grpcTimeoutHeader(ms: number): string {
  return `${Math.max(1, Math.ceil(ms))}m`;
}

export const GRPC = {
  OK: 0,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

// ---------------------------------------------------------------------------------------------
// The mesher's own answers.

/** Why the mesher answered instead of an instance, with the HTTP status and gRPC code it uses. */
export const REASONS = {
  "no-instance": { status: 503, grpc: GRPC.UNAVAILABLE },
  "not-resolved": { status: 503, grpc: GRPC.UNAVAILABLE },
  "breaker-open": { status: 503, grpc: GRPC.UNAVAILABLE },
  "rate-limited": { status: 429, grpc: GRPC.RESOURCE_EXHAUSTED },
  "caller-not-allowed": { status: 403, grpc: GRPC.PERMISSION_DENIED },
  unauthorized: { status: 403, grpc: GRPC.PERMISSION_DENIED },
  "upstream-timeout": { status: 504, grpc: GRPC.DEADLINE_EXCEEDED },
  "upstream-failure": { status: 502, grpc: GRPC.UNAVAILABLE },
  "no-target": { status: 400, grpc: GRPC.INTERNAL },
  "protocol-mismatch": { status: 502, grpc: GRPC.INTERNAL },
  draining: { status: 503, grpc: GRPC.UNAVAILABLE },
} as const;

export type Reason = keyof typeof REASONS;

export function errorBody(reason: Reason, message: string, trace: Trace): string {
  return JSON.stringify({ error: { reason, message, traceId: trace.traceId, requestId: trace.requestId } });
}

export function answerH1(res: http.ServerResponse, reason: Reason, message: string, trace: Trace): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = errorBody(reason, message, trace);
  res.writeHead(REASONS[reason].status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    "x-mesher-reason": reason,
    "x-request-id": trace.requestId,
    traceparent: trace.traceparent,
  });
  res.end(body);
}

export function answerH2(
  stream: http2.ServerHttp2Stream,
  grpc: boolean,
  reason: Reason,
  message: string,
  trace: Trace,
): void {
  if (stream.destroyed || stream.closed) return;
  if (stream.headersSent) {
    stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  if (grpc) {
    // Trailers-only response (PROTOCOL-HTTP2.md).
    stream.respond(
      {
        ":status": 200,
        "content-type": "application/grpc",
        "grpc-status": String(REASONS[reason].grpc),
        "grpc-message": encodeURIComponent(`${reason}: ${message} (trace ${trace.traceId})`),
        "x-mesher-reason": reason,
        "x-request-id": trace.requestId,
      },
      { endStream: true },
    );
    return;
  }
  const body = errorBody(reason, message, trace);
  stream.respond({
    ":status": REASONS[reason].status,
    "content-type": "application/json",
    "x-mesher-reason": reason,
    "x-request-id": trace.requestId,
  });
  stream.end(body);
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  return h === "localhost" || h === "::1" || h.startsWith("127.") || h === "0.0.0.0" || h === "::";
}

/** host[:port] -> host, for Host and :authority values. */
export function hostOnly(hostport: string): string {
  if (hostport.startsWith("[")) return hostport.slice(0, hostport.indexOf("]") + 1);
  const i = hostport.lastIndexOf(":");
  return i < 0 ? hostport : hostport.slice(0, i);
}
