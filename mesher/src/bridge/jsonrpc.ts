// JSON-RPC 2.0 (https://www.jsonrpc.org/specification) over `POST /jsonrpc`.
//
// - A request has "jsonrpc": "2.0", a string "method", optional "params" (an object: the
//   bridge's methods take named parameters only) and an "id" (string, number or null). Without
//   an "id" it is a notification: it runs, and nothing is answered for it.
// - A batch is an array of requests, answered by an array of the responses, in request order,
//   without the notifications'. The requests run one after another, so a batch may register and
//   then heartbeat. An empty array is one Invalid Request error; a batch of notifications only
//   gets no body (HTTP 204), as does a single notification.
// - Errors: -32700 parse error, -32600 invalid request, -32601 method not found, -32602 invalid
//   params (data.field names the field), -32603 internal error; registry errors use -32000..-32005
//   (errors.ts RPC). A request that fails validation never reaches the registry.
// - HTTP status: 200 whenever there is a JSON-RPC response, errors included (the error is in the
//   body); 204 when there is none; 413 for a body over the limit.

import type http from "node:http";
import type { Logger } from "pino";
import { BridgeError, BridgeErrorCode, rpcErrorObject, toBridgeError } from "./errors.js";
import { discardBody, parseJson, readBody, sendJson } from "./http.js";
import { JSONRPC_BATCH_MAX } from "./limits.js";
import type { Ops } from "./ops.js";
import { idParams, isObject, pickParams, registerInput, reportInput, serviceParams } from "./validate.js";

type RpcId = string | number | null;

interface RpcResponse {
  jsonrpc: "2.0";
  id: RpcId;
  result?: unknown;
  error?: ReturnType<typeof rpcErrorObject>;
}

type Method = (params: unknown) => Promise<unknown>;

export function rpcMethods(ops: Ops, maxTtlS: number): Record<string, Method> {
  return {
    register: async (p) => {
      const { instance, ttlS } = registerInput(p, "params", maxTtlS);
      return ops.register(instance, ttlS);
    },
    deregister: async (p) => ops.deregister(idParams(p)),
    heartbeat: async (p) => ops.heartbeat(idParams(p)),
    resolve: async (p) => ops.resolve(serviceParams(p)),
    pick: async (p) => {
      const { service, request } = pickParams(p);
      return ops.pick(service, request);
    },
    report: async (p) => {
      const r = reportInput(p, "params");
      return ops.report(r.service, r.instanceId, r.outcome, r.latencyMs);
    },
    getPolicy: async (p) => ops.getPolicy(serviceParams(p)),
  };
}

function errorResponse(id: RpcId, e: BridgeError): RpcResponse {
  return { jsonrpc: "2.0", id, error: rpcErrorObject(e) };
}

function isRpcId(v: unknown): v is RpcId {
  return v === null || typeof v === "string" || (typeof v === "number" && Number.isFinite(v));
}

export class JsonRpc {
  constructor(
    private readonly methods: Record<string, Method>,
    private readonly logger: Logger,
  ) {}

  /** One request object; undefined for a notification. */
  async call(msg: unknown): Promise<RpcResponse | undefined> {
    if (!isObject(msg)) {
      return errorResponse(
        null,
        new BridgeError(BridgeErrorCode.INVALID_REQUEST, "request: must be a JSON object"),
      );
    }
    const hasId = "id" in msg;
    const id: RpcId = hasId && isRpcId(msg.id) ? msg.id : null;
    const invalid = (field: string, why: string) =>
      errorResponse(id, new BridgeError(BridgeErrorCode.INVALID_REQUEST, `${field}: ${why}`, { field }));
    if (hasId && !isRpcId(msg.id)) return invalid("id", "must be a string, a number or null");
    if (msg.jsonrpc !== "2.0") return invalid("jsonrpc", 'must be "2.0"');
    if (typeof msg.method !== "string") return invalid("method", "must be a string");
    for (const k of Object.keys(msg)) {
      if (!["jsonrpc", "method", "params", "id"].includes(k)) return invalid(k, "unknown member");
    }
    if (msg.params !== undefined && !isObject(msg.params)) {
      return hasId
        ? errorResponse(
            id,
            new BridgeError(BridgeErrorCode.BAD_REQUEST, "params: must be an object (named parameters)", {
              field: "params",
            }),
          )
        : undefined;
    }
    const method = Object.hasOwn(this.methods, msg.method) ? this.methods[msg.method] : undefined;
    if (method === undefined) {
      if (!hasId) return undefined;
      return errorResponse(
        id,
        new BridgeError(
          BridgeErrorCode.METHOD_NOT_FOUND,
          `method ${JSON.stringify(msg.method)} not found (methods: ${Object.keys(this.methods).join(", ")})`,
          { field: "method" },
        ),
      );
    }
    try {
      const result = await method(msg.params ?? {});
      return hasId ? { jsonrpc: "2.0", id, result } : undefined;
    } catch (err) {
      const e = toBridgeError(err);
      if (e.code === BridgeErrorCode.INTERNAL) {
        this.logger.error({ err, method: msg.method }, "bridge: JSON-RPC method failed");
      }
      return hasId ? errorResponse(id, e) : undefined;
    }
  }

  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let body: unknown;
    try {
      body = parseJson(await readBody(req));
    } catch (err) {
      const e = toBridgeError(err);
      if (e.code === BridgeErrorCode.TOO_LARGE) {
        discardBody(req);
        sendJson(res, 413, errorResponse(null, e));
        return;
      }
      sendJson(res, 200, errorResponse(null, e));
      return;
    }
    if (!Array.isArray(body)) {
      const r = await this.call(body);
      if (r === undefined) res.writeHead(204).end();
      else sendJson(res, 200, r);
      return;
    }
    if (body.length === 0) {
      sendJson(
        res,
        200,
        errorResponse(null, new BridgeError(BridgeErrorCode.INVALID_REQUEST, "batch: must not be empty")),
      );
      return;
    }
    if (body.length > JSONRPC_BATCH_MAX) {
      sendJson(
        res,
        200,
        errorResponse(
          null,
          new BridgeError(BridgeErrorCode.INVALID_REQUEST, `batch: at most ${JSONRPC_BATCH_MAX} requests`),
        ),
      );
      return;
    }
    const out: RpcResponse[] = [];
    for (const msg of body) {
      const r = await this.call(msg);
      if (r !== undefined) out.push(r);
    }
    if (out.length === 0) res.writeHead(204).end();
    else sendJson(res, 200, out);
  }
}
