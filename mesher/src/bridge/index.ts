// The mesher's HTTP/JSON-RPC bridge: apps in any language register, renew, deregister, resolve,
// pick and report over plain HTTP, without an SDK. The mesher mounts `handle` on its own port:
//
//   const bridge = createBridge({ client, prefix, discovery, router, logger });
//   http.createServer((req, res) => bridge.handle(req, res)).listen(port);
//   ... await bridge.close();   // before server.close(): it ends the SSE streams
//
// Routes (mesher/openapi.yaml documents each, with its schemas; a test holds the two equal):
//   POST   /v1/register                   register an instance under a new lease (201)
//   PUT    /v1/register/{id}/heartbeat    one LeaseKeepAlive for the registration
//   DELETE /v1/register/{id}              delete the key, revoke the lease
//   GET    /v1/services/{service}         the current set (SDK Discovery)
//   GET    /v1/services/{service}/pick    one instance chosen by the service's policy
//   GET    /v1/services/{service}/policy  the policy in force
//   POST   /v1/report                     the outcome of a call, for breakers and ejection
//   GET    /v1/watch/{service}            Server-Sent Events: snapshot, then changes (sse.ts)
//   POST   /jsonrpc                       JSON-RPC 2.0 with the same operations (jsonrpc.ts)

import type http from "node:http";
import type { Discovery, EtcdClient } from "@regmesh/sdk";
import type { Logger } from "pino";
import { BridgeError, BridgeErrorCode, badField, toBridgeError } from "./errors.js";
import { discardBody, parseJson, readBody, sendError, sendJson } from "./http.js";
import { JsonRpc, rpcMethods } from "./jsonrpc.js";
import { REGISTER_TTL_S_MAX_DEFAULT, SSE_HEARTBEAT_INTERVAL_MS_DEFAULT } from "./limits.js";
import { type BridgeRouter, Ops } from "./ops.js";
import { type KeepAliveOnce, keeperKeepAliveOnce, Registrations } from "./registrations.js";
import { SseHub } from "./sse.js";
import {
  expectObject,
  instanceId,
  registerInput,
  reportInput,
  routeRequest,
  serviceName,
} from "./validate.js";

export { BridgeError, BridgeErrorCode, RPC } from "./errors.js";
export * as bridgeLimits from "./limits.js";
export type { BridgeRouter, PickView, PolicyView, ServiceView } from "./ops.js";
export type { HeartbeatResult, KeepAliveOnce, RegisterResult } from "./registrations.js";

export interface BridgeOptions {
  client: EtcdClient;
  /** Key prefix of the registry layout, as the SDK's Registrar and Discovery take it. */
  prefix: string;
  discovery: Discovery;
  router: BridgeRouter;
  logger: Logger;
  /** Largest TTL a registration may ask for, in seconds (default REGISTER_TTL_S_MAX_DEFAULT). */
  maxTtlS?: number;
  /** SSE keep-alive comment period (default 15 s). */
  sseHeartbeatIntervalMs?: number;
  /** One LeaseKeepAlive (default: through the client's LeaseKeeper; see registrations.ts). */
  keepAliveOnce?: KeepAliveOnce;
}

export interface Bridge {
  handle(req: http.IncomingMessage, res: http.ServerResponse): void;
  /** Ends SSE streams and revokes the bridge's registrations (registrations.ts explains why). */
  close(): Promise<void>;
}

/** Every method and path the bridge serves, in OpenAPI's template syntax. */
export const BRIDGE_ROUTES: readonly { method: string; path: string }[] = [
  { method: "POST", path: "/v1/register" },
  { method: "PUT", path: "/v1/register/{id}/heartbeat" },
  { method: "DELETE", path: "/v1/register/{id}" },
  { method: "GET", path: "/v1/services/{service}" },
  { method: "GET", path: "/v1/services/{service}/pick" },
  { method: "GET", path: "/v1/services/{service}/policy" },
  { method: "POST", path: "/v1/report" },
  { method: "GET", path: "/v1/watch/{service}" },
  { method: "POST", path: "/jsonrpc" },
];

interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  url: URL;
  params: string[];
}

type Handler = (c: Ctx) => Promise<void> | void;

/** Route templates compiled to regexes; `{x}` is one non-empty path segment. */
function compile(path: string): RegExp {
  const body = path
    .split("/")
    .map((seg) => (seg.startsWith("{") ? "([^/]+)" : seg.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
    .join("/");
  return new RegExp(`^${body}$`);
}

function segment(raw: string, field: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw badField(field, "is not valid percent-encoding");
  }
}

/** Hop-by-hop and transport headers say nothing about the call the app is about to make. */
const NOT_ROUTING_HEADERS = new Set([
  "host",
  "connection",
  "content-length",
  "transfer-encoding",
  "keep-alive",
]);

export function createBridge(opts: BridgeOptions): Bridge {
  const maxTtlS = opts.maxTtlS ?? REGISTER_TTL_S_MAX_DEFAULT;
  const logger = opts.logger;
  const registrations = new Registrations(
    opts.client,
    opts.prefix,
    logger,
    opts.keepAliveOnce ?? keeperKeepAliveOnce(opts.client),
  );
  const ops = new Ops(registrations, opts.discovery, opts.router);
  const rpc = new JsonRpc(rpcMethods(ops, maxTtlS), logger);
  const sse = new SseHub(
    opts.client,
    opts.prefix,
    logger,
    opts.sseHeartbeatIntervalMs ?? SSE_HEARTBEAT_INTERVAL_MS_DEFAULT,
  );
  let closed = false;

  async function jsonBody(c: Ctx): Promise<unknown> {
    return parseJson(await readBody(c.req));
  }

  const handlers: Record<string, Handler> = {
    "POST /v1/register": async (c) => {
      const { instance, ttlS } = registerInput(expectObject(await jsonBody(c), "body"), "body", maxTtlS);
      sendJson(c.res, 201, await ops.register(instance, ttlS));
    },
    "PUT /v1/register/{id}/heartbeat": async (c) => {
      sendJson(c.res, 200, await ops.heartbeat(instanceId(segment(c.params[0]!, "id"))));
    },
    "DELETE /v1/register/{id}": async (c) => {
      sendJson(c.res, 200, await ops.deregister(instanceId(segment(c.params[0]!, "id"))));
    },
    "GET /v1/services/{service}": async (c) => {
      sendJson(c.res, 200, await ops.resolve(serviceName(segment(c.params[0]!, "service"))));
    },
    "GET /v1/services/{service}/pick": async (c) => {
      const service = serviceName(segment(c.params[0]!, "service"));
      const query: Record<string, string> = {};
      for (const [k, v] of c.url.searchParams) {
        if (!["method", "path", "hashKey"].includes(k)) {
          throw badField(k, "unknown query parameter (allowed: method, path, hashKey)");
        }
        query[k] = v;
      }
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(c.req.headers)) {
        if (v === undefined || NOT_ROUTING_HEADERS.has(k)) continue;
        headers[k] = Array.isArray(v) ? v.join(",") : v;
      }
      sendJson(c.res, 200, await ops.pick(service, routeRequest(query, headers)));
    },
    "GET /v1/services/{service}/policy": async (c) => {
      sendJson(c.res, 200, await ops.getPolicy(serviceName(segment(c.params[0]!, "service"))));
    },
    "POST /v1/report": async (c) => {
      const r = reportInput(await jsonBody(c), "body");
      sendJson(c.res, 200, ops.report(r.service, r.instanceId, r.outcome, r.latencyMs));
    },
    "GET /v1/watch/{service}": (c) => {
      sse.open(serviceName(segment(c.params[0]!, "service")), c.req, c.res);
    },
    "POST /jsonrpc": (c) => rpc.handle(c.req, c.res),
  };

  const table = BRIDGE_ROUTES.map((r) => ({
    ...r,
    re: compile(r.path),
    handler: handlers[`${r.method} ${r.path}`]!,
  }));

  async function dispatch(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (closed) throw new BridgeError(BridgeErrorCode.UNAVAILABLE, "the bridge is shutting down");
    const url = new URL(req.url ?? "/", "http://bridge.invalid");
    const method = req.method ?? "GET";
    const allowed: string[] = [];
    for (const r of table) {
      const m = r.re.exec(url.pathname);
      if (m === null) continue;
      if (r.method !== method) {
        allowed.push(r.method);
        continue;
      }
      await r.handler({ req, res, url, params: m.slice(1) });
      return;
    }
    if (allowed.length > 0) {
      sendError(
        res,
        new BridgeError(
          BridgeErrorCode.METHOD_NOT_ALLOWED,
          `${method} is not allowed on ${url.pathname} (allowed: ${allowed.join(", ")})`,
        ),
        { allow: allowed.join(", ") },
      );
      return;
    }
    throw new BridgeError(BridgeErrorCode.NO_ROUTE, `no such path: ${url.pathname}`);
  }

  return {
    handle(req, res) {
      dispatch(req, res).catch((err: unknown) => {
        const e = toBridgeError(err);
        if (e.code === BridgeErrorCode.INTERNAL)
          logger.error({ err, url: req.url }, "bridge: request failed");
        if (e.code === BridgeErrorCode.TOO_LARGE) {
          discardBody(req);
          sendError(res, e);
          return;
        }
        sendError(res, e);
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      sse.close();
      await registrations.close();
    },
  };
}
