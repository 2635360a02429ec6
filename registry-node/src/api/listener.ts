// One client port for gRPC (HTTP/2) and for the JSON gateway, /health, /version and
// /metrics (HTTP/1.1), as etcd 3.4 serves both on --listen-client-urls (it uses cmux).
//
// Node cannot peek at a socket, and its HTTP/2 session reads the socket's native handle,
// so bytes already read cannot be handed back to it. We read the first chunk: an HTTP/1.1
// request goes to Node's HTTP server with the chunk unshifted; an HTTP/2 connection (its
// preface starts "PRI * HTTP/2.0") goes to the HTTP/2 server through a small JavaScript
// duplex that replays the first chunk. That duplex costs throughput (measured about 2-3x
// fewer small requests per second than a native HTTP/2 socket), so, as in etcd 3.5,
// `--listen-client-http-urls` moves HTTP/1.1 to its own port and the client port then hands
// sockets to HTTP/2 natively, with no sniffing.

import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { Duplex } from "node:stream";
import tls from "node:tls";

const preface = Buffer.from("PRI * HTTP/2.0");

/** Replays `first`, then relays the socket, so an HTTP/2 session can start on bytes already read. */
function replaying(socket: net.Socket, first: Buffer): Duplex {
  const d = new Duplex({
    read() {
      socket.resume();
    },
    writev(chunks, cb) {
      socket.cork();
      for (const { chunk } of chunks) socket.write(chunk);
      socket.uncork();
      cb();
    },
    final(cb) {
      socket.end(cb);
    },
    destroy(err, cb) {
      socket.destroy(err ?? undefined);
      cb(err);
    },
  });
  d.push(first);
  socket.on("data", (c: Buffer) => {
    if (!d.push(c)) socket.pause();
  });
  socket.on("end", () => d.push(null));
  socket.on("error", (e) => d.destroy(e));
  socket.on("close", () => d.destroy());
  Object.assign(d, {
    remoteAddress: socket.remoteAddress,
    remotePort: socket.remotePort,
    setNoDelay: () => d,
  });
  return d;
}

export type ClientListenerOptions = {
  onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;
  /** HTTP/1.1 handler; undefined makes the port HTTP/2 only (native sockets). */
  onHttp1?: http.RequestListener;
  /**
   * TLS (https URLs). ALPN picks HTTP/2 or HTTP/1.1, so both go to their server natively;
   * with `requestCert` a client without a certificate signed by `ca` is refused in the
   * handshake (etcd's --client-cert-auth).
   */
  tls?: { cert: Buffer; key: Buffer; ca?: Buffer; requestCert: boolean };
};

export type ClientListener = {
  server: net.Server;
  http2Server: http2.Http2Server;
  http1Server: http.Server | undefined;
  close(): Promise<void>;
};

export function createClientListener(opts: ClientListenerOptions): ClientListener {
  const h2 = http2.createServer({
    // etcd's gRPC server allows many concurrent streams (watchers, keep-alives) per connection.
    settings: { maxConcurrentStreams: 4294967295 },
  });
  h2.on("stream", opts.onStream);
  h2.on("sessionError", () => {});
  const h1 = opts.onHttp1 ? http.createServer({ keepAliveTimeout: 60_000 }, opts.onHttp1) : undefined;
  const sockets = new Set<net.Socket>();
  // Closing stops accepting and ends the open connections (streams in flight included).
  const listening = (server: net.Server): ClientListener => ({
    server,
    http2Server: h2,
    http1Server: h1,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  });
  if (opts.tls) {
    const t = opts.tls;
    const server = tls.createServer(
      {
        cert: t.cert,
        key: t.key,
        ca: t.ca,
        requestCert: t.requestCert,
        rejectUnauthorized: t.requestCert,
        ALPNProtocols: h1 ? ["h2", "http/1.1"] : ["h2"],
      },
      (socket) => {
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
        if (socket.alpnProtocol === "h2" || h1 === undefined) h2.emit("connection", socket);
        else h1.emit("connection", socket);
      },
    );
    server.on("tlsClientError", () => {});
    return listening(server);
  }
  const server = net.createServer({ pauseOnConnect: h1 !== undefined, noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    if (h1 === undefined) {
      h2.emit("connection", socket);
      return;
    }
    socket.once("data", (chunk: Buffer) => {
      socket.pause();
      const n = Math.min(chunk.length, preface.length);
      if (chunk.subarray(0, n).equals(preface.subarray(0, n))) {
        h2.emit("connection", replaying(socket, chunk));
      } else {
        socket.unshift(chunk);
        h1.emit("connection", socket);
      }
      socket.resume();
    });
    socket.on("error", () => socket.destroy());
    socket.resume();
  });
  return listening(server);
}
