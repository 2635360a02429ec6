// The error catalogue of the SDK's shells (etcd client, registration, discovery, disk cache).
// The pure cores keep theirs in ../core/errors.ts. Codes are stable: match on `code`, never on
// the message. etcd's own errors arrive as gRPC statuses whose details are etcd's fixed
// strings (etcd 3.4 api/v3rpc/rpctypes/error.go); fromGrpcError maps them to codes here.

import { status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";

export const EtcdErrorCode = {
  /** No endpoint answered within the retry deadline (connection refused, reset, no leader...). */
  UNAVAILABLE: "SDK_ERR_UNAVAILABLE",
  /** One attempt passed its deadline. Retried on another endpoint; surfaced when retries run out. */
  TIMEOUT: "SDK_ERR_TIMEOUT",
  /** "etcdserver: no leader": the member is partitioned from a quorum. */
  NO_LEADER: "SDK_ERR_NO_LEADER",
  /** The revision asked for has been compacted away; re-list at the current revision. */
  COMPACTED: "SDK_ERR_COMPACTED",
  /** The revision asked for is ahead of the store. */
  FUTURE_REVISION: "SDK_ERR_FUTURE_REVISION",
  /** "etcdserver: requested lease not found": revoked or expired. */
  LEASE_NOT_FOUND: "SDK_ERR_LEASE_NOT_FOUND",
  /** The keep-alive did not get an answer before the lease's deadline, or the lease is gone. */
  LEASE_LOST: "SDK_ERR_LEASE_LOST",
  /** Authenticate was called on a server without auth; the client then goes on without a token. */
  AUTH_NOT_ENABLED: "SDK_ERR_AUTH_NOT_ENABLED",
  /** Authenticate failed: wrong user or password. */
  AUTH_FAILED: "SDK_ERR_AUTH_FAILED",
  /** The token expired or the server restarted; the client re-authenticates once and retries. */
  INVALID_AUTH_TOKEN: "SDK_ERR_INVALID_AUTH_TOKEN",
  PERMISSION_DENIED: "SDK_ERR_PERMISSION_DENIED",
  /** Auth is enabled on the server and the client sent no credentials ("user name is empty"). */
  AUTH_REQUIRED: "SDK_ERR_AUTH_REQUIRED",
  /** More operations in one Txn than the server allows (--max-txn-ops). */
  TOO_MANY_OPS: "SDK_ERR_TOO_MANY_OPS",
  /** The request is larger than the server allows (--max-request-bytes). */
  REQUEST_TOO_LARGE: "SDK_ERR_REQUEST_TOO_LARGE",
  /** A response larger than the client's gRPC receive limit. Listings page to avoid it. */
  RESPONSE_TOO_LARGE: "SDK_ERR_RESPONSE_TOO_LARGE",
  /** The server rejected an argument (a bug in the caller or the client). */
  BAD_REQUEST: "SDK_ERR_BAD_REQUEST",
  /** The client, watcher or registration was closed. */
  CLOSED: "SDK_ERR_CLOSED",
  /** The server canceled a watch for a reason other than compaction. */
  WATCH_CANCELED: "SDK_ERR_WATCH_CANCELED",
  /** A disk cache file failed its length or checksum check and was ignored. */
  CACHE_CORRUPT: "SDK_ERR_CACHE_CORRUPT",
  /** A service could not be resolved: the registry is unreachable and no cached copy exists. */
  NOT_RESOLVED: "SDK_ERR_NOT_RESOLVED",
  /** A compare-and-set lost: the key changed since the revision the writer read. */
  CONFLICT: "SDK_ERR_CONFLICT",
  /**
   * The client moved to another registry group (groups.ts). Leases and revisions of the old group
   * mean nothing in the new one: leases are declared lost (and re-granted by the Registrar),
   * watchers are closed and must re-list.
   */
  GROUP_SWITCHED: "SDK_ERR_GROUP_SWITCHED",
  /** Any other error from etcd; `grpcCode` and `details` carry what the server said. */
  ETCD: "SDK_ERR_ETCD",
} as const;
export type EtcdErrorCode = (typeof EtcdErrorCode)[keyof typeof EtcdErrorCode];

export class EtcdError extends Error {
  readonly code: EtcdErrorCode;
  /** The gRPC status code, when the error came from the wire. */
  readonly grpcCode: number | undefined;
  /** The server's message (etcd's fixed string), when there was one. */
  readonly details: string | undefined;
  constructor(
    code: EtcdErrorCode,
    message: string,
    opts: { grpcCode?: number; details?: string; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "EtcdError";
    this.code = code;
    this.grpcCode = opts.grpcCode;
    this.details = opts.details;
  }
}

// etcd 3.4 rpctypes strings the client acts on.
export const ETCD_MSG = {
  compacted: "etcdserver: mvcc: required revision has been compacted",
  futureRev: "etcdserver: mvcc: required revision is a future revision",
  leaseNotFound: "etcdserver: requested lease not found",
  noLeader: "etcdserver: no leader",
  invalidAuthToken: "etcdserver: invalid auth token",
  authFailed: "etcdserver: authentication failed, invalid user ID or password",
  permissionDenied: "etcdserver: permission denied",
  userEmpty: "etcdserver: user name is empty",
  authNotEnabled: "etcdserver: authentication is not enabled",
  tooManyOps: "etcdserver: too many operations in txn request",
  requestTooLarge: "etcdserver: request is too large",
} as const;

function isServiceError(err: unknown): err is ServiceError {
  return typeof err === "object" && err !== null && typeof (err as { code?: unknown }).code === "number";
}

/** Maps a grpc-js error (or anything thrown) to an EtcdError with a stable code. */
export function fromGrpcError(err: unknown, what: string): EtcdError {
  if (err instanceof EtcdError) return err;
  if (!isServiceError(err)) {
    return new EtcdError(EtcdErrorCode.ETCD, `${what}: ${String(err)}`, { cause: err });
  }
  const details = err.details ?? err.message;
  const grpcCode = err.code;
  const mk = (code: EtcdErrorCode) =>
    new EtcdError(code, `${what}: ${details}`, { grpcCode, details, cause: err });
  if (details.includes(ETCD_MSG.compacted)) return mk(EtcdErrorCode.COMPACTED);
  if (details.includes(ETCD_MSG.futureRev)) return mk(EtcdErrorCode.FUTURE_REVISION);
  if (details.includes(ETCD_MSG.leaseNotFound)) return mk(EtcdErrorCode.LEASE_NOT_FOUND);
  if (details.includes(ETCD_MSG.noLeader)) return mk(EtcdErrorCode.NO_LEADER);
  if (details.includes(ETCD_MSG.invalidAuthToken)) return mk(EtcdErrorCode.INVALID_AUTH_TOKEN);
  if (details.includes(ETCD_MSG.authFailed)) return mk(EtcdErrorCode.AUTH_FAILED);
  if (details.includes(ETCD_MSG.authNotEnabled)) return mk(EtcdErrorCode.AUTH_NOT_ENABLED);
  if (details.includes(ETCD_MSG.userEmpty)) return mk(EtcdErrorCode.AUTH_REQUIRED);
  if (details.includes(ETCD_MSG.tooManyOps)) return mk(EtcdErrorCode.TOO_MANY_OPS);
  if (details.includes(ETCD_MSG.requestTooLarge)) return mk(EtcdErrorCode.REQUEST_TOO_LARGE);
  // Refused before it was proposed: the server is overloaded; safe to retry after a pause.
  if (details.includes("etcdserver: too many requests")) return mk(EtcdErrorCode.UNAVAILABLE);
  // A member shutting down ends in-flight streams with RST_STREAM NO_ERROR and no status, which
  // grpc-js reports as INTERNAL: a transport failure like UNAVAILABLE (the request may or may
  // not have been applied, as after a timeout).
  if (grpcCode === GrpcStatus.INTERNAL && /RST_STREAM|Call ended without gRPC status/.test(details)) {
    return mk(EtcdErrorCode.UNAVAILABLE);
  }
  switch (grpcCode) {
    case GrpcStatus.UNAVAILABLE:
      return mk(EtcdErrorCode.UNAVAILABLE);
    case GrpcStatus.DEADLINE_EXCEEDED:
      return mk(EtcdErrorCode.TIMEOUT);
    case GrpcStatus.PERMISSION_DENIED:
      return mk(EtcdErrorCode.PERMISSION_DENIED);
    case GrpcStatus.UNAUTHENTICATED:
      return mk(EtcdErrorCode.INVALID_AUTH_TOKEN);
    case GrpcStatus.RESOURCE_EXHAUSTED:
      // grpc-js: "Received message larger than max"; etcd: "too many requests" is also here.
      return mk(/larger than max/i.test(details) ? EtcdErrorCode.RESPONSE_TOO_LARGE : EtcdErrorCode.ETCD);
    case GrpcStatus.CANCELLED:
      return mk(EtcdErrorCode.CLOSED);
    case GrpcStatus.INVALID_ARGUMENT:
    case GrpcStatus.FAILED_PRECONDITION:
      return mk(EtcdErrorCode.BAD_REQUEST);
    default:
      return mk(EtcdErrorCode.ETCD);
  }
}

/** Errors worth another attempt on the next endpoint: the request may not have reached a leader. */
export function isRetryable(err: EtcdError): boolean {
  return (
    err.code === EtcdErrorCode.UNAVAILABLE ||
    err.code === EtcdErrorCode.NO_LEADER ||
    err.code === EtcdErrorCode.TIMEOUT
  );
}
