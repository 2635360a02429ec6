// gRPC over node:http2, written here rather than taken from @grpc/grpc-js's server so that
// one port serves gRPC, the JSON gateway and /health, /version, /metrics (HTTP/1.1 and
// HTTP/2), as etcd's client port does, and so the watch stream's flow control is ours:
// a congested watch stream tells the watchable store to stop pushing (see api/watch.ts).
//
// Wire format (gRPC over HTTP/2 spec): a POST to /<package>.<Service>/<Method> with
// content-type application/grpc; each message is framed as 1 byte compressed-flag, 4 bytes
// big-endian length, payload; the status goes in trailers (grpc-status, grpc-message), or
// alone in the response headers when there is no message ("trailers-only").

import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { constants } from "node:http2";
import { Code, EtcdError, type GrpcCode } from "../server/errors.js";

/** The shape ts-proto emits for each method of a service (the grpc-js definition form). */
export type MethodDefinition<Req, Res> = {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestDeserialize: (b: Buffer) => Req;
  responseSerialize: (r: Res) => Buffer;
};

/**
 * etcd's grpcOverheadBytes (v3rpc/grpc.go): its gRPC server accepts messages this much
 * larger than --max-request-bytes, and its watch server splits responses (when asked to)
 * only above --max-request-bytes plus this.
 */
export const grpcOverheadBytes = 512 * 1024;

export type CallContext = {
  headers: IncomingHttpHeaders;
  /** Absolute deadline in ms (from grpc-timeout), or undefined. */
  deadlineMs: number | undefined;
  /** Aborted when the client cancels or the connection goes. */
  signal: AbortSignal;
  peer: string;
};

export type UnaryHandler<Req, Res> = (req: Req, ctx: CallContext) => Promise<Res> | Res;

/** A bidirectional stream as a handler sees it. */
export interface BidiStream<Req, Res> {
  onMessage(f: (req: Req) => void): void;
  /** The call ended (finished, canceled by the client, or the connection went). */
  onEnd(f: () => void): void;
  /** The client closed its sending side (the call may go on). */
  onHalfClose(f: () => void): void;
  /** Writes a message; false when the stream's buffer is over its mark (wait for onDrain). */
  write(res: Res): boolean;
  onDrain(f: () => void): void;
  /** Ends the call with a status (OK by default). */
  end(err?: EtcdError): void;
  readonly ctx: CallContext;
}

export type StreamHandler<Req, Res> = (stream: BidiStream<Req, Res>) => void;

type Route = {
  def: MethodDefinition<unknown, unknown>;
  unary?: UnaryHandler<unknown, unknown>;
  stream?: StreamHandler<unknown, unknown>;
};

/** grpc-message is percent-encoded: bytes outside printable ASCII, and '%' itself. */
export function encodeGrpcMessage(message: string): string {
  const bytes = Buffer.from(message, "utf8");
  let out = "";
  for (const b of bytes) {
    if (b >= 0x20 && b <= 0x7e && b !== 0x25) out += String.fromCharCode(b);
    else out += `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** Parses grpc-timeout ("100m", "5S", ...) into milliseconds. */
export function parseGrpcTimeout(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(v);
  if (!m) return undefined;
  const n = Number(m[1]);
  const unitMs: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };
  return n * unitMs[m[2]!]!;
}

/** Splits an HTTP/2 body into gRPC messages as bytes arrive. */
class MessageReader {
  private buf: Buffer = Buffer.alloc(0);

  constructor(private readonly maxMessageBytes: number) {}

  /** Returns complete messages; throws EtcdError for a compressed or oversized message. */
  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Buffer[] = [];
    while (this.buf.length >= 5) {
      const compressed = this.buf[0]!;
      const len = this.buf.readUInt32BE(1);
      if (compressed !== 0)
        throw new EtcdError(Code.Unimplemented, "grpc: compressed messages are not supported");
      if (len > this.maxMessageBytes) {
        throw new EtcdError(
          Code.ResourceExhausted,
          `grpc: received message larger than max (${len} vs. ${this.maxMessageBytes})`,
        );
      }
      if (this.buf.length < 5 + len) break;
      out.push(this.buf.subarray(5, 5 + len));
      this.buf = this.buf.subarray(5 + len);
    }
    return out;
  }
}

function frame(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + payload.length);
  out[0] = 0;
  out.writeUInt32BE(payload.length, 1);
  payload.copy(out, 5);
  return out;
}

/**
 * The call's context. Its signal and peer are made only when a handler asks (campaign and
 * lock do; reads and writes do not): aborting an AbortController builds a DOMException with
 * a stack trace, which profiled as the largest single cost of a small unary call when every
 * stream's close aborted one.
 */
function callContext(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  deadlineMs: number | undefined,
): CallContext {
  let controller: AbortController | undefined;
  let gone = false;
  const onGone = () => {
    gone = true;
    controller?.abort();
  };
  stream.on("close", onGone);
  stream.on("error", onGone);
  return {
    headers,
    deadlineMs,
    get signal(): AbortSignal {
      if (controller === undefined) {
        controller = new AbortController();
        if (gone) controller.abort();
      }
      return controller.signal;
    },
    get peer(): string {
      const socket = stream.session?.socket;
      return `${socket?.remoteAddress ?? ""}:${socket?.remotePort ?? ""}`;
    },
  };
}

function toEtcdError(err: unknown): EtcdError {
  if (err instanceof EtcdError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new EtcdError(Code.Unknown, msg);
}

export type GrpcServerOptions = {
  /** Largest request message accepted (etcd: --max-request-bytes + 512 KiB of gRPC overhead). */
  maxRecvMessageBytes: number;
  onError?: (err: unknown, path: string) => void;
};

/** Routes gRPC calls by path to handlers. Hook `handle` into an http2 server's 'stream' or request path. */
export class GrpcRouter {
  private readonly routes = new Map<string, Route>();

  constructor(private readonly opts: GrpcServerOptions) {}

  unary<Req, Res>(def: MethodDefinition<Req, Res>, handler: UnaryHandler<Req, Res>): void {
    if (def.requestStream || def.responseStream) throw new Error(`${def.path} is a streaming method`);
    this.routes.set(def.path, {
      def: def as MethodDefinition<unknown, unknown>,
      unary: handler as UnaryHandler<unknown, unknown>,
    });
  }

  bidi<Req, Res>(def: MethodDefinition<Req, Res>, handler: StreamHandler<Req, Res>): void {
    this.routes.set(def.path, {
      def: def as MethodDefinition<unknown, unknown>,
      stream: handler as StreamHandler<unknown, unknown>,
    });
  }

  /** Server-streaming methods (one request, many responses) use the bidi machinery. */
  serverStream<Req, Res>(def: MethodDefinition<Req, Res>, handler: StreamHandler<Req, Res>): void {
    this.bidi(def, handler);
  }

  isGrpc(headers: IncomingHttpHeaders): boolean {
    const ct = headers["content-type"];
    return typeof ct === "string" && ct.startsWith("application/grpc");
  }

  /** Serves one gRPC call on an HTTP/2 stream. */
  handle(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    const path = headers[":path"] ?? "";
    const route = this.routes.get(path);
    const timeoutMs = parseGrpcTimeout(headers["grpc-timeout"] as string | undefined);
    const ctx = callContext(stream, headers, timeoutMs === undefined ? undefined : Date.now() + timeoutMs);
    if (route === undefined) {
      this.trailersOnly(stream, new EtcdError(Code.Unimplemented, `unknown method ${path}`));
      stream.resume();
      return;
    }
    const reader = new MessageReader(this.opts.maxRecvMessageBytes);
    if (route.unary) this.serveUnary(stream, route, reader, ctx);
    else this.serveStream(stream, route, reader, ctx);
  }

  private serveUnary(stream: ServerHttp2Stream, route: Route, reader: MessageReader, ctx: CallContext): void {
    const parts: Buffer[] = [];
    let failed = false;
    stream.on("data", (chunk: Buffer) => {
      if (failed) return;
      try {
        parts.push(...reader.push(chunk));
      } catch (err) {
        failed = true;
        this.trailersOnly(stream, toEtcdError(err));
      }
    });
    stream.on("end", () => {
      if (failed || stream.destroyed) return;
      if (parts.length !== 1) {
        this.trailersOnly(
          stream,
          new EtcdError(Code.Internal, `grpc: expected one request message, got ${parts.length}`),
        );
        return;
      }
      let req: unknown;
      try {
        req = route.def.requestDeserialize(parts[0]!);
      } catch (err) {
        this.trailersOnly(
          stream,
          new EtcdError(Code.Internal, `grpc: error unmarshalling request: ${(err as Error).message}`),
        );
        return;
      }
      Promise.resolve()
        .then(() => route.unary!(req, ctx))
        .then(
          (res) => {
            if (stream.destroyed || stream.closed) return;
            const body = frame(route.def.responseSerialize(res));
            stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
            stream.once("wantTrailers", () =>
              stream.sendTrailers({ "grpc-status": "0", "grpc-message": "" }),
            );
            stream.end(body);
          },
          (err) => {
            const e = toEtcdError(err);
            if (e.grpcCode === Code.Unknown) this.opts.onError?.(err, route.def.path);
            this.trailersOnly(stream, e);
          },
        );
    });
  }

  private serveStream(
    stream: ServerHttp2Stream,
    route: Route,
    reader: MessageReader,
    ctx: CallContext,
  ): void {
    const onMessage: ((m: unknown) => void)[] = [];
    const onEnd: (() => void)[] = [];
    const onHalfClose: (() => void)[] = [];
    let ended = false;
    let responded = false;
    const respond = () => {
      // A stream reset before we answer (a client that cancelled while the link was cut, its
      // RST arriving with the request after the heal) cannot be answered: respond() would throw
      // ERR_HTTP2_INVALID_STREAM out of the event loop.
      if (responded || stream.destroyed || stream.closed) return;
      responded = true;
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    };
    const finish = () => {
      if (ended) return;
      ended = true;
      for (const f of onEnd) f();
    };
    const bidi: BidiStream<unknown, unknown> = {
      ctx,
      onMessage: (f) => onMessage.push(f),
      onEnd: (f) => onEnd.push(f),
      onHalfClose: (f) => onHalfClose.push(f),
      onDrain: (f) => stream.on("drain", f),
      write: (res) => {
        if (stream.destroyed || stream.closed || ended) return true;
        respond();
        return stream.write(frame(route.def.responseSerialize(res)));
      },
      end: (err) => {
        if (stream.destroyed || stream.closed) return finish();
        const status: GrpcCode = err?.grpcCode ?? Code.OK;
        if (!responded) {
          this.trailersOnly(stream, err ?? new EtcdError(Code.OK, ""));
        } else {
          stream.once("wantTrailers", () =>
            stream.sendTrailers({
              "grpc-status": String(status),
              "grpc-message": encodeGrpcMessage(err?.message ?? ""),
            }),
          );
          stream.end();
        }
        finish();
      },
    };
    stream.on("data", (chunk: Buffer) => {
      let msgs: Buffer[];
      try {
        msgs = reader.push(chunk);
      } catch (err) {
        bidi.end(toEtcdError(err));
        return;
      }
      for (const m of msgs) {
        let req: unknown;
        try {
          req = route.def.requestDeserialize(m);
        } catch (err) {
          bidi.end(
            new EtcdError(Code.Internal, `grpc: error unmarshalling request: ${(err as Error).message}`),
          );
          return;
        }
        for (const f of onMessage) f(req);
      }
    });
    stream.on("close", finish);
    // A client's half-close does not end the call by itself: etcd goes on sending watch
    // events until the client cancels, while a keep-alive stream ends on EOF.
    stream.on("end", () => {
      for (const f of onHalfClose) f();
    });
    // Streams open their response right away, as grpc-go servers do for watch.
    respond();
    try {
      route.stream!(bidi);
    } catch (err) {
      bidi.end(toEtcdError(err));
    }
  }

  private trailersOnly(stream: ServerHttp2Stream, err: EtcdError): void {
    if (stream.destroyed || stream.closed) return;
    if (stream.headersSent) {
      stream.close(constants.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    stream.respond(
      {
        ":status": 200,
        "content-type": "application/grpc",
        "grpc-status": String(err.grpcCode),
        "grpc-message": encodeGrpcMessage(err.message),
      },
      { endStream: true },
    );
  }
}
