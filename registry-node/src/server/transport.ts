// The peer transport: Raft messages between members over HTTP/2 on the peer URLs.
//
// Each member keeps, per peer, one outgoing long-lived stream (POST /raft/stream) on which
// it writes length-prefixed messages (4 bytes little-endian, then raft-codec bytes).
// Messages queued in one turn of the event loop go out together (batching). A peer that
// is down or slow loses messages rather than stalling the sender: Raft retries through its
// own heartbeats and probes, and the sender is told the peer is unreachable, as etcd's
// rafthttp does. Connections are retried with exponential back-off.
//
// The cluster id travels in a header; a member of another cluster is refused (HTTP 412).

import http2 from "node:http2";
import type { Message } from "../raft/types.js";
import { decodeMessage, encodeMessage } from "./raft-codec.js";

export const transportLimits = {
  /** Messages queued for one peer before new ones are dropped. */
  queuedMessagesMax: 4096,
  /** Largest frame accepted from a peer (snapshots included, until they stream separately). */
  frameBytesMax: 512 * 1024 * 1024,
  reconnectBackoffMsMin: 50,
  reconnectBackoffMsMax: 1000,
};

export type TransportOptions = {
  localId: number;
  clusterId: bigint;
  onMessage: (m: Message) => void;
  onUnreachable?: (peer: number) => void;
  /** Whether a peer id was removed from the cluster: its streams are refused with 410 Gone. */
  isRemoved?: (peer: number) => boolean;
  /** A peer answered 410 Gone: this member was removed from the cluster (etcd's rafthttp). */
  onRemoved?: () => void;
  log?: { warn(obj: object, msg?: string): void };
};

const clusterHeader = "x-regmesh-cluster-id";
const fromHeader = "x-regmesh-from";

class Peer {
  private session: http2.ClientHttp2Session | undefined;
  private stream: http2.ClientHttp2Stream | undefined;
  private queue: Buffer[] = [];
  private flushing = false;
  private backoffMs = transportLimits.reconnectBackoffMsMin;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Set once a connection was made and then lost; reported once per outage. */
  private reportedDown = false;

  constructor(
    readonly id: number,
    private urls: string[],
    private readonly t: Transport,
  ) {}

  setUrls(urls: string[]): void {
    this.urls = urls;
  }

  /** Whether the outgoing stream is open and was accepted (used to report snapshot delivery). */
  get connected(): boolean {
    return (
      this.stream !== undefined &&
      !this.stream.destroyed &&
      !this.reportedDown &&
      this.retryTimer === undefined
    );
  }

  send(m: Message): void {
    if (this.closed) return;
    if (this.queue.length >= transportLimits.queuedMessagesMax) {
      this.t.unreachable(this.id);
      return;
    }
    const body = encodeMessage(m);
    const frame = Buffer.allocUnsafe(4 + body.length);
    frame.writeUInt32LE(body.length, 0);
    body.copy(frame, 4);
    this.queue.push(frame);
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushing = false;
    if (this.closed || this.queue.length === 0) return;
    const stream = this.connect();
    if (stream === undefined) return; // connecting; flushed on 'ready'
    const batch = this.queue.length === 1 ? this.queue[0]! : Buffer.concat(this.queue);
    this.queue = [];
    stream.write(batch);
  }

  private connect(): http2.ClientHttp2Stream | undefined {
    if (this.stream && !this.stream.destroyed && !this.stream.closed) return this.stream;
    if (this.retryTimer) return undefined;
    const url = this.urls[0];
    if (url === undefined) return undefined;
    const session = http2.connect(url);
    this.session = session;
    // Events of an older connection can arrive after a new one was opened (a refused
    // connection's 'close' comes late): they must not tear down the new one.
    const current = () => this.session === session;
    session.on("error", () => current() && this.lost());
    session.on("close", () => current() && this.lost());
    const stream = session.request({
      ":method": "POST",
      ":path": "/raft/stream",
      [clusterHeader]: this.t.opts.clusterId.toString(16),
      [fromHeader]: String(this.t.opts.localId),
    });
    this.stream = stream;
    stream.on("response", (headers) => {
      if (!current()) return;
      if (headers[":status"] === 410) {
        this.t.opts.onRemoved?.();
        this.lost();
        return;
      }
      if (headers[":status"] !== 200) {
        this.t.opts.log?.warn({ peer: this.id, status: headers[":status"] }, "peer refused the raft stream");
        this.lost();
        return;
      }
      this.backoffMs = transportLimits.reconnectBackoffMsMin;
      this.reportedDown = false;
    });
    stream.on("error", () => current() && this.lost());
    stream.on("close", () => current() && this.lost());
    stream.resume();
    return stream;
  }

  private lost(): void {
    if (this.stream === undefined && this.session === undefined) return;
    this.stream?.destroy();
    this.session?.destroy();
    this.stream = undefined;
    this.session = undefined;
    this.queue = [];
    if (!this.reportedDown) {
      this.reportedDown = true;
      this.t.unreachable(this.id);
    }
    if (this.closed || this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.connect();
    }, this.backoffMs);
    this.retryTimer.unref();
    this.backoffMs = Math.min(this.backoffMs * 2, transportLimits.reconnectBackoffMsMax);
  }

  /** One request/response exchange with the peer (lease forwarding), on its own session. */
  call(path: string, body: Buffer, timeoutMs: number): Promise<Buffer> {
    const url = this.urls[0];
    if (url === undefined) return Promise.reject(new Error(`peer ${this.id} has no URL`));
    return new Promise((resolve, reject) => {
      const session = http2.connect(url);
      const done = (err: Error | undefined, out?: Buffer) => {
        clearTimeout(timer);
        session.close();
        if (err) reject(err);
        else resolve(out!);
      };
      const timer = setTimeout(() => {
        session.destroy();
        reject(new Error(`peer ${this.id}: ${path} timed out`));
      }, timeoutMs);
      session.on("error", (e) => done(e));
      const req = session.request({
        ":method": "POST",
        ":path": path,
        [clusterHeader]: this.t.opts.clusterId.toString(16),
        [fromHeader]: String(this.t.opts.localId),
      });
      const parts: Buffer[] = [];
      let status = 0;
      req.on("response", (h) => {
        status = Number(h[":status"]);
      });
      req.on("data", (c: Buffer) => parts.push(c));
      req.on("end", () => {
        const out = Buffer.concat(parts);
        if (status === 200) done(undefined, out);
        else done(new PeerCallError(status, out.toString()));
      });
      req.on("error", (e) => done(e));
      req.end(body);
    });
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.stream?.destroy();
    this.session?.destroy();
  }
}

/** A peer answered a call with an error status. */
export class PeerCallError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export type CallHandler = (body: Buffer) => Promise<Buffer>;

export class Transport {
  private readonly peers = new Map<number, Peer>();
  private readonly handlers = new Map<string, { f: CallHandler; anyCluster: boolean }>();
  private server: http2.Http2Server | undefined;
  private readonly inbound = new Set<http2.ServerHttp2Session>();

  constructor(readonly opts: TransportOptions) {}

  /** Serves incoming peer streams on `host:port`. */
  async listen(host: string, port: number): Promise<void> {
    const server = http2.createServer();
    server.on("session", (s) => {
      this.inbound.add(s);
      s.on("close", () => this.inbound.delete(s));
      s.on("error", () => {});
    });
    server.on("stream", (stream, headers) => this.onStream(stream, headers));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host, port }, () => resolve());
    });
    this.server = server;
  }

  get address(): { port: number } {
    return this.server?.address() as { port: number };
  }

  addPeer(id: number, urls: string[]): void {
    if (id === this.opts.localId) return;
    const p = this.peers.get(id);
    if (p) p.setUrls(urls);
    else this.peers.set(id, new Peer(id, urls, this));
  }

  removePeer(id: number): void {
    this.peers.get(id)?.close();
    this.peers.delete(id);
  }

  /** Queues messages for their peers; messages to unknown peers are dropped. */
  send(messages: Message[]): void {
    for (const m of messages) {
      const p = this.peers.get(m.to);
      if (p) p.send(m);
      else this.unreachable(m.to);
    }
  }

  /** Serves `path` for peers' calls; a handler throwing answers 500 with its message. */
  handle(path: string, f: CallHandler, opts: { anyCluster?: boolean } = {}): void {
    this.handlers.set(path, { f, anyCluster: opts.anyCluster ?? false });
  }

  isConnected(peer: number): boolean {
    return this.peers.get(peer)?.connected ?? false;
  }

  call(peer: number, path: string, body: Buffer, timeoutMs: number): Promise<Buffer> {
    const p = this.peers.get(peer);
    if (p === undefined) return Promise.reject(new Error(`unknown peer ${peer}`));
    return p.call(path, body, timeoutMs);
  }

  unreachable(peer: number): void {
    this.opts.onUnreachable?.(peer);
  }

  async close(): Promise<void> {
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
    for (const s of this.inbound) s.destroy();
    if (this.server) await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    const handler = this.handlers.get(String(headers[":path"]));
    if (handler !== undefined) {
      if (!handler.anyCluster && headers[clusterHeader] !== this.opts.clusterId.toString(16)) {
        stream.respond({ ":status": 412 });
        stream.end();
        return;
      }
      const parts: Buffer[] = [];
      stream.on("data", (c: Buffer) => parts.push(c));
      stream.on("error", () => {});
      stream.on("end", () => {
        handler.f(Buffer.concat(parts)).then(
          (out) => {
            if (stream.destroyed) return;
            stream.respond({ ":status": 200 });
            stream.end(out);
          },
          (err: Error) => {
            if (stream.destroyed) return;
            stream.respond({ ":status": 500 });
            stream.end(err.message);
          },
        );
      });
      return;
    }
    if (headers[":path"] !== "/raft/stream") {
      stream.respond({ ":status": 404 });
      stream.end();
      return;
    }
    if (headers[clusterHeader] !== this.opts.clusterId.toString(16)) {
      // A member of another cluster (or started with another --initial-cluster-token).
      stream.respond({ ":status": 412 });
      stream.end();
      return;
    }
    if (this.opts.isRemoved?.(Number(headers[fromHeader]))) {
      // A removed member still talking (it missed the commit of its removal): tell it.
      stream.respond({ ":status": 410 });
      stream.end();
      return;
    }
    stream.respond({ ":status": 200 });
    let buf: Buffer = Buffer.alloc(0);
    stream.on("data", (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      let off = 0;
      while (buf.length - off >= 4) {
        const len = buf.readUInt32LE(off);
        if (len > transportLimits.frameBytesMax) {
          stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
          return;
        }
        if (buf.length - off < 4 + len) break;
        let m: Message;
        try {
          m = decodeMessage(buf.subarray(off + 4, off + 4 + len));
        } catch (err) {
          this.opts.log?.warn({ err }, "dropping a malformed raft message");
          stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
          return;
        }
        off += 4 + len;
        if (this.opts.isRemoved?.(m.from)) {
          // Its removal was committed without it: end the stream; reconnecting gets 410 Gone.
          stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
          return;
        }
        this.opts.onMessage(m);
      }
      buf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off);
    });
    stream.on("error", () => {});
  }
}

/** One call to a peer URL outside the cluster's transport (a joining member asking for the membership). */
export function callUrl(url: string, path: string, body: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`${url}${path}: timed out`));
    }, timeoutMs);
    const done = (err: Error | undefined, out?: Buffer) => {
      clearTimeout(timer);
      session.close();
      if (err) reject(err);
      else resolve(out!);
    };
    session.on("error", (e) => done(e));
    const req = session.request({ ":method": "POST", ":path": path });
    const parts: Buffer[] = [];
    let status = 0;
    req.on("response", (h) => {
      status = Number(h[":status"]);
    });
    req.on("data", (c: Buffer) => parts.push(c));
    req.on("end", () =>
      status === 200
        ? done(undefined, Buffer.concat(parts))
        : done(new PeerCallError(status, `${url}${path}: ${status}`)),
    );
    req.on("error", (e) => done(e));
    req.end(body);
  });
}
