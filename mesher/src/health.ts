// Health checks of the local app: HTTP GET of a path (2xx/3xx healthy), a TCP connect, or the
// gRPC health protocol (grpc.health.v1.Health/Check, SERVING). After `unhealthyThreshold`
// failures in a row the instance is marked unhealthy in the registry (routing skips it); after
// `healthyThreshold` successes in a row it is marked healthy again.

import http from "node:http";
import http2 from "node:http2";
import net from "node:net";

export type CheckKind =
  | { kind: "none" }
  | { kind: "tcp" }
  | { kind: "grpc" }
  | { kind: "http"; path: string };

export function parseCheck(spec: string): CheckKind {
  if (spec === "none" || spec === "tcp" || spec === "grpc") return { kind: spec };
  return { kind: "http", path: spec.slice("http:".length) };
}

function tcp(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => s.destroy(new Error("timeout")), timeoutMs);
    s.once("connect", () => {
      clearTimeout(t);
      s.end();
      resolve();
    });
    s.once("error", (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

function httpGet(host: string, port: number, path: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path, timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      const code = res.statusCode ?? 0;
      if (code >= 200 && code < 400) resolve();
      else reject(new Error(`status ${code}`));
    });
    req.once("timeout", () => req.destroy(new Error("timeout")));
    req.once("error", reject);
  });
}

/** grpc.health.v1.Health/Check with an empty service name; SERVING (1) is healthy. */
function grpcHealth(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${host.includes(":") ? `[${host}]` : host}:${port}`);
    const t = setTimeout(() => session.destroy(new Error("timeout")), timeoutMs);
    const done = (err?: Error): void => {
      clearTimeout(t);
      session.close();
      if (err === undefined) resolve();
      else reject(err);
    };
    session.once("error", done);
    const req = session.request({
      ":method": "POST",
      ":path": "/grpc.health.v1.Health/Check",
      "content-type": "application/grpc",
      te: "trailers",
    });
    // A length-prefixed message of 0 bytes: HealthCheckRequest{service: ""}.
    req.end(Buffer.from([0, 0, 0, 0, 0]));
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.once("error", done);
    req.once("end", () => {
      const b = Buffer.concat(chunks);
      // HealthCheckResponse: field 1 (status) varint; SERVING = 1 -> bytes 0x08 0x01.
      const msg = b.subarray(5);
      if (msg.length >= 2 && msg[0] === 0x08 && msg[1] === 0x01) done();
      else done(new Error("not SERVING"));
    });
  });
}

export interface HealthCheckerOptions {
  check: CheckKind;
  host: string;
  port: number;
  intervalMs: number;
  timeoutMs: number;
  unhealthyThreshold: number;
  healthyThreshold: number;
  /** Called when the verdict flips (and once at the first verdict). */
  onChange: (healthy: boolean, why: string) => void;
}

export class HealthChecker {
  private timer: NodeJS.Timeout | undefined;
  private okRun = 0;
  private failRun = 0;
  healthy: boolean | undefined;
  lastError = "";

  constructor(private readonly o: HealthCheckerOptions) {}

  start(): void {
    if (this.o.check.kind === "none") {
      this.healthy = true;
      this.o.onChange(true, "no health check");
      return;
    }
    const loop = async (): Promise<void> => {
      await this.once();
      this.timer = setTimeout(loop, this.o.intervalMs);
      this.timer.unref();
    };
    void loop();
  }

  async once(): Promise<void> {
    const { host, port, timeoutMs, check } = this.o;
    try {
      if (check.kind === "tcp") await tcp(host, port, timeoutMs);
      else if (check.kind === "http") await httpGet(host, port, check.path, timeoutMs);
      else if (check.kind === "grpc") await grpcHealth(host, port, timeoutMs);
      this.okRun += 1;
      this.failRun = 0;
      if (this.healthy !== true && (this.okRun >= this.o.healthyThreshold || this.healthy === undefined)) {
        this.healthy = true;
        this.o.onChange(true, "checks pass");
      }
    } catch (err) {
      this.lastError = (err as Error).message;
      this.failRun += 1;
      this.okRun = 0;
      if (this.healthy !== false && this.failRun >= this.o.unhealthyThreshold) {
        this.healthy = false;
        this.o.onChange(false, this.lastError);
      }
    }
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}
