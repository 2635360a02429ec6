import { createConnection, createServer, type Server, type Socket } from "node:net";

/**
 * What happens to bytes flowing one way through the proxy.
 * - pass: forwarded as they come (after any bytes still queued).
 * - delay: each chunk is held `ms` before it is forwarded; order is kept.
 * - blackhole: nothing is forwarded and reading stops, so TCP flow control backs up the
 *   sender as a real partition would; what was held flows once the mode changes.
 * - drop: bytes are read and thrown away (the stream is corrupted: a lossy link).
 */
export type DirectionMode =
  | { kind: "pass" }
  | { kind: "delay"; ms: number }
  | { kind: "blackhole" }
  | { kind: "drop" };

/** What happens to new connections: accepted, refused (closed at once), or reset (RST). */
export type AcceptMode = "accept" | "refuse" | "reset";

export type FaultState = {
  /** client -> target */
  up: DirectionMode;
  /** target -> client */
  down: DirectionMode;
  accept: AcceptMode;
};

export type FaultProxyOptions = {
  target: { host: string; port: number };
  listenHost?: string;
  /** 0 (default) picks a free port. */
  listenPort?: number;
};

const pass: DirectionMode = { kind: "pass" };
// A bound on what one direction of one connection queues in delay mode before it stops reading.
const queuedBytesMax = 8 * 1024 * 1024;

/** One direction of one proxied connection. */
class Pipe {
  private readonly queue: { releaseAtMs: number; chunk: Buffer }[] = [];
  private queuedBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private ended = false;
  bytes = 0;

  constructor(
    private readonly src: Socket,
    private readonly dst: Socket,
    private readonly mode: () => DirectionMode,
  ) {
    src.on("data", (chunk: Buffer) => this.onData(chunk));
    src.on("end", () => {
      this.ended = true;
      this.pump();
    });
    dst.on("drain", () => this.pump());
  }

  private onData(chunk: Buffer): void {
    const m = this.mode();
    if (m.kind === "drop") return;
    const delayMs = m.kind === "delay" ? m.ms : 0;
    this.queue.push({ releaseAtMs: Date.now() + delayMs, chunk });
    this.queuedBytes += chunk.length;
    if (this.queuedBytes > queuedBytesMax) this.src.pause();
    this.pump();
  }

  /** Forwards every chunk whose time has come, unless blackholed; re-arms the timer for the next. */
  pump(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const m = this.mode();
    if (m.kind === "blackhole") {
      this.src.pause();
      return;
    }
    if (this.dst.destroyed) return;
    const now = Date.now();
    while (this.queue.length > 0 && this.queue[0]!.releaseAtMs <= now) {
      const { chunk } = this.queue.shift()!;
      this.queuedBytes -= chunk.length;
      this.bytes += chunk.length;
      if (!this.dst.write(chunk)) {
        this.src.pause();
        return; // resumed on 'drain'
      }
    }
    if (this.queue.length > 0) {
      this.timer = setTimeout(() => this.pump(), Math.max(1, this.queue[0]!.releaseAtMs - now));
      return;
    }
    if (this.ended) {
      this.dst.end();
      return;
    }
    if (this.queuedBytes <= queuedBytesMax) this.src.resume();
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/**
 * A userspace TCP proxy that injects network faults for tests (this kernel has no netem).
 * Every setting takes effect at once, on open connections too, while traffic flows.
 */
export class FaultProxy {
  private state: FaultState = { up: pass, down: pass, accept: "accept" };
  private readonly conns = new Set<{ client: Socket; upstream: Socket; pipes: Pipe[] }>();
  private accepted = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    readonly host: string,
    readonly target: { host: string; port: number },
  ) {}

  static async start(opts: FaultProxyOptions): Promise<FaultProxy> {
    const host = opts.listenHost ?? "127.0.0.1";
    let proxy: FaultProxy | undefined;
    const server = createServer({ pauseOnConnect: true }, (client) => proxy?.onConnection(client));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host, port: opts.listenPort ?? 0 }, () => resolve());
    });
    const address = server.address();
    const port = typeof address === "object" && address !== null ? address.port : 0;
    proxy = new FaultProxy(server, port, host, opts.target);
    return proxy;
  }

  /** host:port of the proxy, to give to clients in place of the target's. */
  get endpoint(): string {
    return `${this.host}:${this.port}`;
  }

  get connections(): number {
    return this.conns.size;
  }

  stats(): { accepted: number; open: number; bytesUp: number; bytesDown: number } {
    let bytesUp = 0;
    let bytesDown = 0;
    for (const c of this.conns) {
      bytesUp += c.pipes[0]!.bytes;
      bytesDown += c.pipes[1]!.bytes;
    }
    return { accepted: this.accepted, open: this.conns.size, bytesUp, bytesDown };
  }

  /** Changes any part of the fault state; open connections follow at once. */
  set(change: Partial<FaultState>): void {
    this.state = { ...this.state, ...change };
    for (const c of this.conns) for (const p of c.pipes) p.pump();
  }

  getState(): FaultState {
    return this.state;
  }

  /** Everything back to normal: both directions pass, new connections accepted. */
  heal(): void {
    this.set({ up: pass, down: pass, accept: "accept" });
  }

  /** A full partition: nothing flows either way (connections stay open, as in a real partition). */
  partition(): void {
    this.set({ up: { kind: "blackhole" }, down: { kind: "blackhole" } });
  }

  /** A one-way partition: bytes in `direction` stop, the other way flows. */
  partitionOneWay(direction: "up" | "down"): void {
    this.set({ [direction]: { kind: "blackhole" } });
  }

  delay(ms: number, direction: "up" | "down" | "both" = "both"): void {
    const mode: DirectionMode = { kind: "delay", ms };
    if (direction === "up") this.set({ up: mode });
    else if (direction === "down") this.set({ down: mode });
    else this.set({ up: mode, down: mode });
  }

  /** Resets (RST) every open connection; new ones are still accepted unless `accept` says otherwise. */
  resetAll(): void {
    for (const c of this.conns) {
      c.client.resetAndDestroy();
      c.upstream.resetAndDestroy();
    }
  }

  async close(): Promise<void> {
    this.resetAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(client: Socket): void {
    this.accepted += 1;
    if (this.state.accept === "refuse") {
      client.destroy();
      return;
    }
    if (this.state.accept === "reset") {
      client.resetAndDestroy();
      return;
    }
    const upstream = createConnection({ host: this.target.host, port: this.target.port });
    upstream.setNoDelay(true);
    client.setNoDelay(true);
    const conn = {
      client,
      upstream,
      pipes: [
        new Pipe(client, upstream, () => this.state.up),
        new Pipe(upstream, client, () => this.state.down),
      ],
    };
    this.conns.add(conn);
    const teardown = (err?: Error) => {
      if (!this.conns.delete(conn)) return;
      for (const p of conn.pipes) p.close();
      // A reset on one side is passed on as a reset, so clients see what they would see directly.
      if (err && (err as NodeJS.ErrnoException).code === "ECONNRESET") {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      } else {
        client.destroy();
        upstream.destroy();
      }
    };
    client.on("error", teardown);
    upstream.on("error", teardown);
    client.on("close", () => teardown());
    upstream.on("close", () => teardown());
    client.resume();
  }
}

export function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  return FaultProxy.start(opts);
}
