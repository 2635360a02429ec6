// mvcc's errors, with etcd's messages. The API layer adds etcd's "etcdserver: " prefix and
// gRPC status codes (OutOfRange for both) at the edge.

export class MvccError extends Error {
  constructor(
    readonly code: "REG_ERR_COMPACTED" | "REG_ERR_FUTURE_REV",
    message: string,
  ) {
    super(message);
    this.name = "MvccError";
  }
}

export const errCompacted = () =>
  new MvccError("REG_ERR_COMPACTED", "mvcc: required revision has been compacted");
export const errFutureRev = () =>
  new MvccError("REG_ERR_FUTURE_REV", "mvcc: required revision is a future revision");
