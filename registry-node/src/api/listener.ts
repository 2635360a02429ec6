// One client port for gRPC (HTTP/2) and for the JSON gateway, /health, /version and
// /metrics (HTTP/1.1), as etcd 3.4 serves both on --listen-client-urls (it uses cmux).
//
// Node cannot peek at a socket, so a plaintext connection's first chunk is read to tell the
// protocols apart, then put back with `socket.unshift` and the socket handed to its server.
// Both servers then read the socket's native handle: Node's HTTP/2 session takes over the
// handle and first feeds itself what the socket already buffered (Node >= 15, nodejs/node
// issues 34532 and 35475). An earlier version relayed HTTP/2 through a JavaScript duplex
// instead; Node wraps such a stream in a JSStreamSocket, which finishes every write in a
// setImmediate, so each unary call paid several extra event-loop turns (measured: about
// 0.5 ms more per call at one request in flight, and 2-3x fewer small requests per second).
// TLS connections choose by ALPN and need no sniffing.

import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";

const preface = Buffer.from("PRI * HTTP/2.0");

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
      socket.unshift(chunk);
      const n = Math.min(chunk.length, preface.length);
      if (chunk.subarray(0, n).equals(preface.subarray(0, n))) {
        // The session consumes the native handle and reads the unshifted chunk itself.
        h2.emit("connection", socket);
        return;
      }
      h1.emit("connection", socket);
      socket.resume();
    });
    socket.on("error", () => socket.destroy());
    socket.resume();
  });
  return listening(server);
}
