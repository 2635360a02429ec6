// What the example HTTP services share: a JSON server with `/health`, calls to other services
// through the local mesher's outbound port (`Host: <service>`), and a clean stop on SIGTERM.
// Nothing here knows about the registry: that is the mesher's job.

import http from "node:http";

export interface Reply {
  status: number;
  body: unknown;
}

/** Headers an app passes on from the request it serves to the calls it makes, so one trace spans them. */
const PROPAGATED = ["traceparent", "tracestate", "x-request-id"];

export function propagated(req: http.IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const h of PROPAGATED) {
    const v = req.headers[h];
    if (typeof v === "string") out[h] = v;
  }
  return out;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });

/**
 * GET `path` on `service` through the mesher at `outbound` (host:port). The Host header names the
 * service; the mesher picks an instance and sends the call straight to it.
 */
export function callService(
  outbound: string,
  service: string,
  path: string,
  headers: Record<string, string>,
  timeoutMs = 5_000,
): Promise<Reply> {
  const i = outbound.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: outbound.slice(0, i),
        port: Number(outbound.slice(i + 1)),
        path,
        method: "GET",
        headers: { ...headers, host: service, accept: "application/json" },
        agent,
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${service}${path}: no answer in ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end();
  });
}

/** Like callService, but a non-2xx answer is an error naming the service and status. */
export async function getJson<T>(
  outbound: string,
  service: string,
  path: string,
  headers: Record<string, string>,
): Promise<T> {
  const r = await callService(outbound, service, path, headers);
  if (r.status < 200 || r.status > 299) {
    throw new Error(`${service}${path} answered ${r.status}: ${JSON.stringify(r.body)}`);
  }
  return r.body as T;
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

export type Route = (url: URL, req: http.IncomingMessage) => Promise<[number, unknown]> | undefined;

/**
 * Serves `route` on 127.0.0.1:`port`, plus GET /health (200 while `healthy()` says so). A route
 * that throws answers 502 with the message. Prints one JSON line `{"listening": port}` when up;
 * on SIGTERM or SIGINT runs `onStop`, then stops after the requests in flight.
 */
export function serve(
  name: string,
  port: number,
  route: Route,
  opts: { healthy?: () => boolean; onStop?: () => Promise<void> } = {},
): http.Server {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://app");
    if (url.pathname === "/health") {
      const ok = opts.healthy?.() ?? true;
      sendJson(res, ok ? 200 : 503, { ok });
      return;
    }
    const p = route(url, req);
    if (p === undefined) {
      sendJson(res, 404, { error: `${name}: no route for ${req.method} ${url.pathname}` });
      return;
    }
    p.then(
      ([status, body]) => sendJson(res, status, body),
      (err: Error) => sendJson(res, 502, { error: `${name}: ${err.message}` }),
    );
  });
  // Longer than the mesher's pooled connections live, so the mesher always closes them first and
  // never sends a request on a connection this server is closing.
  server.keepAliveTimeout = 65_000;
  server.listen(port, "127.0.0.1", () => {
    const a = server.address() as { port: number };
    process.stdout.write(`${JSON.stringify({ service: name, listening: a.port })}\n`);
  });
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    setTimeout(() => process.exit(0), 3_000).unref();
    // First whatever the app must do before it stops serving (pricing deregisters, so callers
    // stop picking it), then the requests in flight finish.
    void (opts.onStop?.() ?? Promise.resolve())
      .catch((err: Error) => process.stderr.write(`${name}: stopping: ${err.message}\n`))
      .finally(() => {
        server.close(() => process.exit(0));
        server.closeIdleConnections();
      });
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  return server;
}

export function envPort(name: string): number {
  const v = Number(process.env[name]);
  if (!Number.isInteger(v) || v < 0 || v > 65_535) throw new Error(`${name}: want a port, got ${v}`);
  return v;
}
