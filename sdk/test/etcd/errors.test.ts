import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { EtcdError, EtcdErrorCode, fromGrpcError, isRetryable } from "../../src/etcd/errors.js";

const grpcErr = (code: number, details: string) => Object.assign(new Error(details), { code, details });

describe("fromGrpcError: etcd 3.4's statuses map to stable codes", () => {
  it.each([
    [status.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted", EtcdErrorCode.COMPACTED],
    [
      status.OUT_OF_RANGE,
      "etcdserver: mvcc: required revision is a future revision",
      EtcdErrorCode.FUTURE_REVISION,
    ],
    [status.NOT_FOUND, "etcdserver: requested lease not found", EtcdErrorCode.LEASE_NOT_FOUND],
    [status.UNAVAILABLE, "etcdserver: no leader", EtcdErrorCode.NO_LEADER],
    [status.UNAVAILABLE, "etcdserver: leader changed", EtcdErrorCode.UNAVAILABLE],
    [status.UNAVAILABLE, "etcdserver: request timed out", EtcdErrorCode.UNAVAILABLE],
    [status.UNAUTHENTICATED, "etcdserver: invalid auth token", EtcdErrorCode.INVALID_AUTH_TOKEN],
    [
      status.INVALID_ARGUMENT,
      "etcdserver: authentication failed, invalid user ID or password",
      EtcdErrorCode.AUTH_FAILED,
    ],
    [status.FAILED_PRECONDITION, "etcdserver: authentication is not enabled", EtcdErrorCode.AUTH_NOT_ENABLED],
    [status.INVALID_ARGUMENT, "etcdserver: user name is empty", EtcdErrorCode.AUTH_REQUIRED],
    [status.PERMISSION_DENIED, "etcdserver: permission denied", EtcdErrorCode.PERMISSION_DENIED],
    [status.INVALID_ARGUMENT, "etcdserver: too many operations in txn request", EtcdErrorCode.TOO_MANY_OPS],
    [status.INVALID_ARGUMENT, "etcdserver: request is too large", EtcdErrorCode.REQUEST_TOO_LARGE],
    [
      status.RESOURCE_EXHAUSTED,
      "Received message larger than max (5000000 vs. 4194304)",
      EtcdErrorCode.RESPONSE_TOO_LARGE,
    ],
    [status.DEADLINE_EXCEEDED, "Deadline exceeded", EtcdErrorCode.TIMEOUT],
    [status.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request", EtcdErrorCode.BAD_REQUEST],
    [status.INTERNAL, "something else", EtcdErrorCode.ETCD],
    // A member shutting down: grpc-js reports the stream reset without status as INTERNAL.
    [
      status.INTERNAL,
      "Received RST_STREAM with code 0 (Call ended without gRPC status)",
      EtcdErrorCode.UNAVAILABLE,
    ],
    [status.RESOURCE_EXHAUSTED, "etcdserver: too many requests", EtcdErrorCode.UNAVAILABLE],
  ])("%i %s -> %s", (code, details, want) => {
    const e = fromGrpcError(grpcErr(code, details), "op");
    expect(e).toBeInstanceOf(EtcdError);
    expect(e.code).toBe(want);
    expect(e.grpcCode).toBe(code);
    expect(e.details).toBe(details);
  });

  it("retries only what may not have reached a leader", () => {
    expect(isRetryable(fromGrpcError(grpcErr(status.UNAVAILABLE, "x"), "op"))).toBe(true);
    expect(isRetryable(fromGrpcError(grpcErr(status.UNAVAILABLE, "etcdserver: no leader"), "op"))).toBe(true);
    expect(isRetryable(fromGrpcError(grpcErr(status.DEADLINE_EXCEEDED, "x"), "op"))).toBe(true);
    expect(
      isRetryable(
        fromGrpcError(
          grpcErr(status.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
          "op",
        ),
      ),
    ).toBe(false);
  });
});
