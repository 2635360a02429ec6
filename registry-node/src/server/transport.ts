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
//
// Snapshots (MsgSnap) do not go on the message stream: as etcd's rafthttp snapshot sender,
// each is one request of its own (POST /raft/snapshot) whose body is the message without
// its data (4-byte length, then raft-codec bytes), the data streamed in chunks (from the
// file the leader copied its backend to), then the data's SHA-256. The receiver writes
// the data to a temporary file as it comes, checks its length and digest, fsyncs it and
// renames it into place, and only then hands the message to Raft, with the file's path;
// it answers 200 once done, and that answer is the outcome Raft is told
// (ReportSnapshot). Neither side holds the whole backend in memory.

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import http2 from "node:http2";
import { join } from "node:path";
import { Readable } from "node:stream";
import { type Message, MessageType } from "../raft/types.js";
import { decodeMessage, encodeMessage } from "./raft-codec.js";

export const transportLimits = {
  /** Messages queued for one peer before new ones are dropped. */
  queuedMessagesMax: 4096,
  /** Largest message frame accepted from a peer (snapshot data travels separately). */
  frameBytesMax: 512 * 1024 * 1024,
  reconnectBackoffMsMin: 50,
  reconnectBackoffMsMax: 1000,
  /** Chunk size of snapshot data read from its file and written to the peer. */
  snapshotChunkBytes: 1024 * 1024,
  /** Largest snapshot accepted (etcd's backend quota is at most 8 GiB). */
  snapshotBytesMax: 16 * 1024 * 1024 * 1024,
  /** A snapshot transfer that moves no byte for this long is abandoned (and reported failed). */
  snapshotIdleTimeoutMs: 30_000,
};

/** The data of an outgoing snapshot, in a file; released once the transfer ends either way. */
export type SnapshotFile = { path: string; bytes: number; release(): void };

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
  /** Where received snapshot data is written (the member's snap directory). */
  snapshotDir?: string;
  /** The data of an outgoing MsgSnap as a file; undefined sends the message's own data. */
  snapshotData?: (m: Message) => SnapshotFile | undefined;
  /** A received snapshot: its data is durably in `path`, verified; the message carries none. */
  onSnapshot?: (m: Message, path: string) => void;
  /** How sending a snapshot to a peer ended (Raft's ReportSnapshot). */
  onSnapshotSent?: (peer: number, ok: boolean) => void;
};

const clusterHeader = "x-regmesh-cluster-id";
const fromHeader = "x-regmesh-from";
const snapshotBytesHeader = "x-regmesh-snapshot-bytes";
const sha256Bytes = 32;

/** The 4-byte length and the message without its snapshot data. */
function snapshotHead(m: Message): Buffer {
  const body = encodeMessage({ ...m, snapshot: { ...m.snapshot!, data: new Uint8Array(0) } });
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32LE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

class Peer {
  private session: http2.ClientHttp2Session | undefined;
  private stream: http2.ClientHttp2Stream | undefined;
  private queue: Buffer[] = [];
  private flushing = false;
  private backoffMs = transportLimits.reconnectBackoffMsMin;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** A snapshot transfer is under way (one at a time per peer; Raft waits for its outcome). */
  private sendingSnapshot = false;
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

  send(m: Message): void {
    if (this.closed) return;
    if (m.type === MessageType.MsgSnap) {
      this.sendSnapshot(m);
      return;
    }
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

  /** Streams a snapshot on a request of its own; reports the outcome when the peer answers. */
  private sendSnapshot(m: Message): void {
    const file = this.t.opts.snapshotData?.(m);
    const url = this.urls[0];
    if (this.sendingSnapshot) {
      // Raft sends one at a time per follower; a duplicate waits on the first's outcome.
      file?.release();
      return;
    }
    if (url === undefined || (file === undefined && m.snapshot!.data.length === 0)) {
      // No address, or no data to send (its file is gone): Raft will ask for a new one.
      file?.release();
      this.t.snapshotSent(this.id, false);
      return;
    }
    this.sendingSnapshot = true;
    const bytes = file !== undefined ? file.bytes : m.snapshot!.data.length;
    const session = http2.connect(url);
    let status = 0;
    let finished = false;
    const done = (ok: boolean, err?: unknown) => {
      if (finished) return;
      finished = true;
      this.sendingSnapshot = false;
      file?.release();
      if (ok) session.close();
      else session.destroy();
      if (!ok) this.t.opts.log?.warn({ peer: this.id, status, err }, "sending a snapshot failed");
      this.t.snapshotSent(this.id, ok);
    };
    session.on("error", (err) => done(false, err));
    const req = session.request({
      ":method": "POST",
      ":path": "/raft/snapshot",
      [clusterHeader]: this.t.opts.clusterId.toString(16),
      [fromHeader]: String(this.t.opts.localId),
      [snapshotBytesHeader]: String(bytes),
    });
    req.setTimeout(transportLimits.snapshotIdleTimeoutMs, () =>
      done(false, new Error("snapshot transfer stalled")),
    );
    req.on("response", (h) => {
      status = Number(h[":status"]);
    });
    req.on("error", (err) => done(false, err));
    req.on("data", () => {});
    req.on("end", () => done(status === 200));
    req.on("close", () => done(status === 200));
    req.write(snapshotHead(m));
    const source: Readable =
      file !== undefined
        ? createReadStream(file.path, { highWaterMark: transportLimits.snapshotChunkBytes })
        : Readable.from(chunks(m.snapshot!.data, transportLimits.snapshotChunkBytes));
    const hash = createHash("sha256");
    source.on("data", (chunk: Buffer) => {
      hash.update(chunk);
      if (!req.write(chunk)) {
        source.pause();
        req.once("drain", () => source.resume());
      }
    });
    source.on("end", () => req.end(hash.digest()));
    source.on("error", (err: Error) => {
      req.close(http2.constants.NGHTTP2_CANCEL);
      done(false, err);
    });
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

function* chunks(data: Uint8Array, size: number): Generator<Buffer> {
  for (let off = 0; off < data.length; off += size)
    yield Buffer.from(data.buffer, data.byteOffset + off, Math.min(size, data.length - off));
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
      else {
        this.unreachable(m.to);
        if (m.type === MessageType.MsgSnap) {
          this.opts.snapshotData?.(m)?.release();
          this.snapshotSent(m.to, false);
        }
      }
    }
  }

  /** Reports a snapshot's outcome to Raft, outside of the caller's turn. */
  snapshotSent(peer: number, ok: boolean): void {
    setImmediate(() => this.opts.onSnapshotSent?.(peer, ok));
  }

  /** Serves `path` for peers' calls; a handler throwing answers 500 with its message. */
  handle(path: string, f: CallHandler, opts: { anyCluster?: boolean } = {}): void {
    this.handlers.set(path, { f, anyCluster: opts.anyCluster ?? false });
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

  private receiving = 0;

  private onSnapshotStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on("error", () => {});
    const expected = Number(headers[snapshotBytesHeader]);
    const refusal = ((): [number, string] | undefined => {
      if (headers[clusterHeader] !== this.opts.clusterId.toString(16)) return [412, "cluster id mismatch"];
      if (this.opts.isRemoved?.(Number(headers[fromHeader]))) return [410, "removed"];
      if (this.opts.snapshotDir === undefined || this.opts.onSnapshot === undefined)
        return [404, "snapshots are not received here"];
      if (!Number.isSafeInteger(expected) || expected < 0 || expected > transportLimits.snapshotBytesMax)
        return [400, "bad snapshot size"];
      return undefined;
    })();
    const refuse = ([status, why]: [number, string]) => {
      stream.respond({ ":status": status });
      stream.end(why);
    };
    if (refusal !== undefined) {
      refuse(refusal);
      return;
    }
    stream.setTimeout(transportLimits.snapshotIdleTimeoutMs, () =>
      stream.close(http2.constants.NGHTTP2_CANCEL),
    );
    const tmp = join(this.opts.snapshotDir!, `recv-${process.pid}-${++this.receiving}.snap.tmp`);
    receiveSnapshot(this.opts.snapshotDir!, stream, expected, tmp).then(
      ({ m, path }) => {
        this.opts.onSnapshot!(m, path);
        if (!stream.destroyed) {
          stream.respond({ ":status": 200 });
          stream.end();
        }
      },
      (err: Error) => {
        this.opts.log?.warn({ err, from: headers[fromHeader] }, "receiving a snapshot failed");
        if (!stream.destroyed) refuse([400, err.message]);
      },
    );
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
    if (headers[":path"] === "/raft/snapshot") {
      this.onSnapshotStream(stream, headers);
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

/**
 * Receives one snapshot transfer into `tmpPath`: the message, then exactly `expectedBytes`
 * of data, then their SHA-256. Checked, fsynced and renamed to `<index>.snap.db` in the
 * snapshot directory (its entry fsynced too) before the message is returned.
 */
async function receiveSnapshot(
  dir: string,
  stream: http2.ServerHttp2Stream,
  expectedBytes: number,
  tmpPath: string,
): Promise<{ m: Message; path: string }> {
  const fh = await open(tmpPath, "w");
  let renamed = false;
  try {
    let head: Buffer = Buffer.alloc(0);
    let m: Message | undefined;
    let dataBytes = 0;
    const digest: Buffer[] = [];
    const hash = createHash("sha256");
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let c = chunk;
      if (m === undefined) {
        head = head.length === 0 ? c : Buffer.concat([head, c]);
        if (head.length < 4) continue;
        const len = head.readUInt32LE(0);
        if (len > transportLimits.frameBytesMax) throw new Error("snapshot message too large");
        if (head.length < 4 + len) continue;
        m = decodeMessage(head.subarray(4, 4 + len));
        if (m.type !== MessageType.MsgSnap || m.snapshot === undefined)
          throw new Error("not a snapshot message");
        c = head.subarray(4 + len);
      }
      const take = Math.min(c.length, expectedBytes - dataBytes);
      if (take > 0) {
        const d = c.subarray(0, take);
        hash.update(d);
        await fh.write(d);
        dataBytes += take;
      }
      if (c.length > take) {
        digest.push(c.subarray(take));
        if (digest.reduce((n, b) => n + b.length, 0) > sha256Bytes)
          throw new Error("snapshot longer than announced");
      }
    }
    if (m === undefined) throw new Error("snapshot stream ended before its message");
    if (dataBytes !== expectedBytes)
      throw new Error(`snapshot truncated: ${dataBytes} of ${expectedBytes} bytes`);
    const sum = Buffer.concat(digest);
    if (sum.length !== sha256Bytes || !sum.equals(hash.digest())) throw new Error("snapshot digest mismatch");
    await fh.sync();
    // etcd's name for a received backend: the snapshot index, 16 hex digits.
    const path = join(dir, `${m.snapshot!.metadata.index.toString(16).padStart(16, "0")}.snap.db`);
    await rename(tmpPath, path);
    renamed = true;
    const d = await open(dir, "r");
    try {
      await d.sync();
    } finally {
      await d.close();
    }
    return { m, path };
  } finally {
    await fh.close().catch(() => {});
    if (!renamed) await rm(tmpPath, { force: true });
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
