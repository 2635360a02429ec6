// The bridge's error catalogue (STYLE.md §4). Every failure is a BridgeError with a stable
// `code`; the HTTP status and the JSON-RPC error code are derived from it here, at the edge,
// and nowhere else. Bodies are always JSON:
//   REST:     {"error": {"code", "message", "field"?, "reason"?}}
//   JSON-RPC: {"jsonrpc": "2.0", "id", "error": {"code": <number>, "message", "data": {"code", "field"?, "reason"?}}}

import { EtcdError, EtcdErrorCode, SdkError } from "@regmesh/sdk";

export const BridgeErrorCode = {
  /** The body is not JSON (JSON-RPC -32700). */
  BAD_JSON: "BRIDGE_ERR_BAD_JSON",
  /** A JSON-RPC message that is not a valid request object (-32600). */
  INVALID_REQUEST: "BRIDGE_ERR_INVALID_REQUEST",
  /** A JSON-RPC method the bridge does not have (-32601). */
  METHOD_NOT_FOUND: "BRIDGE_ERR_METHOD_NOT_FOUND",
  /** A field is missing or invalid; `field` names it (400, -32602). */
  BAD_REQUEST: "BRIDGE_ERR_BAD_REQUEST",
  /** The body exceeds BODY_BYTES_MAX (413). */
  TOO_LARGE: "BRIDGE_ERR_TOO_LARGE",
  /** No such path (404). */
  NO_ROUTE: "BRIDGE_ERR_NO_ROUTE",
  /** The path exists, the HTTP method does not (405). */
  METHOD_NOT_ALLOWED: "BRIDGE_ERR_METHOD_NOT_ALLOWED",
  /** The registration id is unknown to this bridge or its lease expired (404, -32001). */
  NOT_REGISTERED: "BRIDGE_ERR_NOT_REGISTERED",
  /** The instance id is taken (409, -32002). */
  CONFLICT: "BRIDGE_ERR_CONFLICT",
  /** The router found no instance; `reason` is the route decision's (503, -32003). */
  NO_INSTANCE: "BRIDGE_ERR_NO_INSTANCE",
  /** The registry did not answer (503, -32004). */
  UNAVAILABLE: "BRIDGE_ERR_UNAVAILABLE",
  /** A bound from limits.ts was reached (429, -32005). */
  LIMIT: "BRIDGE_ERR_LIMIT",
  /** The registry refused the request for another reason (502, -32000). */
  REGISTRY: "BRIDGE_ERR_REGISTRY",
  /** A bug in the bridge (500, -32603). */
  INTERNAL: "BRIDGE_ERR_INTERNAL",
} as const;
export type BridgeErrorCode = (typeof BridgeErrorCode)[keyof typeof BridgeErrorCode];

/** JSON-RPC 2.0 error codes: the standard ones, then the bridge's server-error range. */
export const RPC = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
  // -32000..-32099 is "reserved for implementation-defined server-errors" (JSON-RPC 2.0 §5.1).
  REGISTRY_ERROR: -32000,
  NOT_REGISTERED: -32001,
  CONFLICT: -32002,
  NO_INSTANCE: -32003,
  UNAVAILABLE: -32004,
  LIMIT: -32005,
} as const;

const HTTP_STATUS: Record<BridgeErrorCode, number> = {
  BRIDGE_ERR_BAD_JSON: 400,
  BRIDGE_ERR_INVALID_REQUEST: 400,
  BRIDGE_ERR_METHOD_NOT_FOUND: 404,
  BRIDGE_ERR_BAD_REQUEST: 400,
  BRIDGE_ERR_TOO_LARGE: 413,
  BRIDGE_ERR_NO_ROUTE: 404,
  BRIDGE_ERR_METHOD_NOT_ALLOWED: 405,
  BRIDGE_ERR_NOT_REGISTERED: 404,
  BRIDGE_ERR_CONFLICT: 409,
  BRIDGE_ERR_NO_INSTANCE: 503,
  BRIDGE_ERR_UNAVAILABLE: 503,
  BRIDGE_ERR_LIMIT: 429,
  BRIDGE_ERR_REGISTRY: 502,
  BRIDGE_ERR_INTERNAL: 500,
};

const RPC_CODE: Record<BridgeErrorCode, number> = {
  BRIDGE_ERR_BAD_JSON: RPC.PARSE_ERROR,
  BRIDGE_ERR_INVALID_REQUEST: RPC.INVALID_REQUEST,
  BRIDGE_ERR_METHOD_NOT_FOUND: RPC.METHOD_NOT_FOUND,
  BRIDGE_ERR_BAD_REQUEST: RPC.INVALID_PARAMS,
  BRIDGE_ERR_TOO_LARGE: RPC.INVALID_REQUEST,
  BRIDGE_ERR_NO_ROUTE: RPC.METHOD_NOT_FOUND,
  BRIDGE_ERR_METHOD_NOT_ALLOWED: RPC.INVALID_REQUEST,
  BRIDGE_ERR_NOT_REGISTERED: RPC.NOT_REGISTERED,
  BRIDGE_ERR_CONFLICT: RPC.CONFLICT,
  BRIDGE_ERR_NO_INSTANCE: RPC.NO_INSTANCE,
  BRIDGE_ERR_UNAVAILABLE: RPC.UNAVAILABLE,
  BRIDGE_ERR_LIMIT: RPC.LIMIT,
  BRIDGE_ERR_REGISTRY: RPC.REGISTRY_ERROR,
  BRIDGE_ERR_INTERNAL: RPC.INTERNAL_ERROR,
};

export class BridgeError extends Error {
  readonly code: BridgeErrorCode;
  /** The request field at fault, e.g. `port` or `outcome.status`. */
  readonly field: string | undefined;
  /** The route decision's reason, for NO_INSTANCE. */
  readonly reason: string | undefined;
  constructor(
    code: BridgeErrorCode,
    message: string,
    opts: { field?: string; reason?: string; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "BridgeError";
    this.code = code;
    this.field = opts.field;
    this.reason = opts.reason;
  }

  get httpStatus(): number {
    return HTTP_STATUS[this.code];
  }

  get rpcCode(): number {
    return RPC_CODE[this.code];
  }
}

/** A bad field: the message always starts with the field's name. */
export function badField(field: string, why: string): BridgeError {
  return new BridgeError(BridgeErrorCode.BAD_REQUEST, `${field}: ${why}`, { field });
}

/** Maps anything thrown by the SDK or the bridge to a BridgeError. */
export function toBridgeError(err: unknown): BridgeError {
  if (err instanceof BridgeError) return err;
  if (err instanceof EtcdError) {
    switch (err.code) {
      case EtcdErrorCode.UNAVAILABLE:
      case EtcdErrorCode.TIMEOUT:
      case EtcdErrorCode.NO_LEADER:
      case EtcdErrorCode.NOT_RESOLVED:
      case EtcdErrorCode.CLOSED:
        return new BridgeError(BridgeErrorCode.UNAVAILABLE, `registry unavailable: ${err.message}`, {
          cause: err,
        });
      case EtcdErrorCode.LEASE_NOT_FOUND:
      case EtcdErrorCode.LEASE_LOST:
        return new BridgeError(BridgeErrorCode.NOT_REGISTERED, `lease is gone: ${err.message}`, {
          cause: err,
        });
      default:
        return new BridgeError(BridgeErrorCode.REGISTRY, `registry error: ${err.message}`, { cause: err });
    }
  }
  if (err instanceof SdkError) {
    return new BridgeError(BridgeErrorCode.BAD_REQUEST, err.message, { cause: err });
  }
  return new BridgeError(BridgeErrorCode.INTERNAL, "internal error", { cause: err });
}

/** The REST error body. */
export function restErrorBody(e: BridgeError): { error: Record<string, string> } {
  const error: Record<string, string> = { code: e.code, message: e.message };
  if (e.field !== undefined) error.field = e.field;
  if (e.reason !== undefined) error.reason = e.reason;
  return { error };
}

/** The JSON-RPC error object. */
export function rpcErrorObject(e: BridgeError): {
  code: number;
  message: string;
  data: Record<string, string>;
} {
  const data: Record<string, string> = { code: e.code };
  if (e.field !== undefined) data.field = e.field;
  if (e.reason !== undefined) data.reason = e.reason;
  return { code: e.rpcCode, message: e.message, data };
}
