// etcd's client-facing errors (etcdserver/api/v3rpc/rpctypes/error.go, etcd 3.4): the exact
// message and gRPC status code of each, so clients that match on them (etcdctl, clientv3,
// the etcd3 npm package) behave as they do against etcd. The API edge turns an EtcdError
// into a gRPC status, or an HTTP status on the JSON gateway.

/** gRPC status codes (grpc/codes). */
export const Code = {
  OK: 0,
  Canceled: 1,
  Unknown: 2,
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  FailedPrecondition: 9,
  Aborted: 10,
  OutOfRange: 11,
  Unimplemented: 12,
  Internal: 13,
  Unavailable: 14,
  DataLoss: 15,
  Unauthenticated: 16,
} as const;
export type GrpcCode = (typeof Code)[keyof typeof Code];

export class EtcdError extends Error {
  constructor(
    readonly grpcCode: GrpcCode,
    message: string,
  ) {
    super(message);
    this.name = "EtcdError";
  }
}

const e = (code: GrpcCode, message: string) => () => new EtcdError(code, message);

export const errors = {
  emptyKey: e(Code.InvalidArgument, "etcdserver: key is not provided"),
  keyNotFound: e(Code.InvalidArgument, "etcdserver: key not found"),
  valueProvided: e(Code.InvalidArgument, "etcdserver: value is provided"),
  leaseProvided: e(Code.InvalidArgument, "etcdserver: lease is provided"),
  tooManyOps: e(Code.InvalidArgument, "etcdserver: too many operations in txn request"),
  duplicateKey: e(Code.InvalidArgument, "etcdserver: duplicate key given in txn request"),
  invalidSortOption: e(Code.InvalidArgument, "etcdserver: invalid sort option"),
  compacted: e(Code.OutOfRange, "etcdserver: mvcc: required revision has been compacted"),
  futureRev: e(Code.OutOfRange, "etcdserver: mvcc: required revision is a future revision"),
  noSpace: e(Code.ResourceExhausted, "etcdserver: mvcc: database space exceeded"),
  leaseNotFound: e(Code.NotFound, "etcdserver: requested lease not found"),
  leaseExist: e(Code.FailedPrecondition, "etcdserver: lease already exists"),
  leaseTTLTooLarge: e(Code.OutOfRange, "etcdserver: too large lease TTL"),
  memberExist: e(Code.FailedPrecondition, "etcdserver: member ID already exist"),
  peerURLExist: e(Code.FailedPrecondition, "etcdserver: Peer URLs already exists"),
  memberNotEnoughStarted: e(
    Code.FailedPrecondition,
    "etcdserver: re-configuration failed due to not enough started members",
  ),
  memberBadURLs: e(Code.InvalidArgument, "etcdserver: given member URLs are invalid"),
  memberNotFound: e(Code.NotFound, "etcdserver: member not found"),
  memberNotLearner: e(Code.FailedPrecondition, "etcdserver: can only promote a learner member"),
  learnerNotReady: e(
    Code.FailedPrecondition,
    "etcdserver: can only promote a learner member which is in sync with leader",
  ),
  tooManyLearners: e(Code.FailedPrecondition, "etcdserver: too many learner members in cluster"),
  requestTooLarge: e(Code.InvalidArgument, "etcdserver: request is too large"),
  tooManyRequests: e(Code.ResourceExhausted, "etcdserver: too many requests"),
  rootUserNotExist: e(Code.FailedPrecondition, "etcdserver: root user does not exist"),
  rootRoleNotExist: e(Code.FailedPrecondition, "etcdserver: root user does not have root role"),
  userAlreadyExist: e(Code.FailedPrecondition, "etcdserver: user name already exists"),
  userEmpty: e(Code.InvalidArgument, "etcdserver: user name is empty"),
  userNotFound: e(Code.FailedPrecondition, "etcdserver: user name not found"),
  roleAlreadyExist: e(Code.FailedPrecondition, "etcdserver: role name already exists"),
  roleNotFound: e(Code.FailedPrecondition, "etcdserver: role name not found"),
  roleEmpty: e(Code.InvalidArgument, "etcdserver: role name is empty"),
  authFailed: e(Code.InvalidArgument, "etcdserver: authentication failed, invalid user ID or password"),
  permissionDenied: e(Code.PermissionDenied, "etcdserver: permission denied"),
  roleNotGranted: e(Code.FailedPrecondition, "etcdserver: role is not granted to the user"),
  permissionNotGranted: e(Code.FailedPrecondition, "etcdserver: permission is not granted to the role"),
  authNotEnabled: e(Code.FailedPrecondition, "etcdserver: authentication is not enabled"),
  invalidAuthToken: e(Code.Unauthenticated, "etcdserver: invalid auth token"),
  invalidAuthMgmt: e(Code.InvalidArgument, "etcdserver: invalid auth management"),
  noLeader: e(Code.Unavailable, "etcdserver: no leader"),
  notLeader: e(Code.FailedPrecondition, "etcdserver: not leader"),
  leaderChanged: e(Code.Unavailable, "etcdserver: leader changed"),
  notCapable: e(Code.Unavailable, "etcdserver: not capable"),
  stopped: e(Code.Unavailable, "etcdserver: server stopped"),
  timeout: e(Code.Unavailable, "etcdserver: request timed out"),
  timeoutDueToLeaderFail: e(
    Code.Unavailable,
    "etcdserver: request timed out, possibly due to previous leader failure",
  ),
  timeoutDueToConnectionLost: e(
    Code.Unavailable,
    "etcdserver: request timed out, possibly due to connection lost",
  ),
  unhealthy: e(Code.Unavailable, "etcdserver: unhealthy cluster"),
  corrupt: e(Code.DataLoss, "etcdserver: corrupt cluster"),
  notSupportedForLearner: e(Code.Unavailable, "etcdserver: rpc not supported for learner"),
  badLeaderTransferee: e(Code.FailedPrecondition, "etcdserver: bad leader transferee"),
  timeoutLeaderTransfer: e(Code.Unavailable, "etcdserver: request timed out, leader transfer took too long"),
} as const;
