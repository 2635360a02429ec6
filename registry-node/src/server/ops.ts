// The requests that go through the Raft log, and their encoding in log entries:
// 1 byte kind, 8 bytes request id (big-endian), then the request's protobuf bytes.
// Reads never go through the log (they use ReadIndex); keep-alives never do either (the
// leader's lessor renews without consensus, as etcd's does).

import { etcdserverpb } from "@regmesh/proto";

export type Op =
  | { kind: "put"; req: etcdserverpb.PutRequest }
  | { kind: "deleteRange"; req: etcdserverpb.DeleteRangeRequest }
  | { kind: "txn"; req: etcdserverpb.TxnRequest }
  | { kind: "compaction"; req: etcdserverpb.CompactionRequest }
  | { kind: "leaseGrant"; req: etcdserverpb.LeaseGrantRequest }
  | { kind: "leaseRevoke"; req: etcdserverpb.LeaseRevokeRequest }
  | { kind: "alarm"; req: etcdserverpb.AlarmRequest }
  /** A member announces its name and client URLs (etcd's publish of member attributes). */
  | { kind: "publish"; req: etcdserverpb.Member }
  /** New peer URLs of a member (etcd's ConfChangeUpdateNode; not a Raft configuration change). */
  | { kind: "memberUpdate"; req: etcdserverpb.Member }
  | { kind: "authEnable"; req: etcdserverpb.AuthEnableRequest }
  | { kind: "authDisable"; req: etcdserverpb.AuthDisableRequest }
  /** `password` carries the issued token, never the password. */
  | { kind: "authenticate"; req: etcdserverpb.AuthenticateRequest }
  /** `password` carries the bcrypt hash, never the password. */
  | { kind: "userAdd"; req: etcdserverpb.AuthUserAddRequest }
  | { kind: "userDelete"; req: etcdserverpb.AuthUserDeleteRequest }
  /** `password` carries the bcrypt hash, never the password. */
  | { kind: "userChangePassword"; req: etcdserverpb.AuthUserChangePasswordRequest }
  | { kind: "userGrantRole"; req: etcdserverpb.AuthUserGrantRoleRequest }
  | { kind: "userRevokeRole"; req: etcdserverpb.AuthUserRevokeRoleRequest }
  | { kind: "roleAdd"; req: etcdserverpb.AuthRoleAddRequest }
  | { kind: "roleDelete"; req: etcdserverpb.AuthRoleDeleteRequest }
  | { kind: "roleGrantPermission"; req: etcdserverpb.AuthRoleGrantPermissionRequest }
  | { kind: "roleRevokePermission"; req: etcdserverpb.AuthRoleRevokePermissionRequest };

const codecs = {
  put: [1, etcdserverpb.PutRequest],
  deleteRange: [2, etcdserverpb.DeleteRangeRequest],
  txn: [3, etcdserverpb.TxnRequest],
  compaction: [4, etcdserverpb.CompactionRequest],
  leaseGrant: [5, etcdserverpb.LeaseGrantRequest],
  leaseRevoke: [6, etcdserverpb.LeaseRevokeRequest],
  alarm: [7, etcdserverpb.AlarmRequest],
  publish: [8, etcdserverpb.Member],
  memberUpdate: [9, etcdserverpb.Member],
  authEnable: [10, etcdserverpb.AuthEnableRequest],
  authDisable: [11, etcdserverpb.AuthDisableRequest],
  authenticate: [12, etcdserverpb.AuthenticateRequest],
  userAdd: [13, etcdserverpb.AuthUserAddRequest],
  userDelete: [14, etcdserverpb.AuthUserDeleteRequest],
  userChangePassword: [15, etcdserverpb.AuthUserChangePasswordRequest],
  userGrantRole: [16, etcdserverpb.AuthUserGrantRoleRequest],
  userRevokeRole: [17, etcdserverpb.AuthUserRevokeRoleRequest],
  roleAdd: [18, etcdserverpb.AuthRoleAddRequest],
  roleDelete: [19, etcdserverpb.AuthRoleDeleteRequest],
  roleGrantPermission: [20, etcdserverpb.AuthRoleGrantPermissionRequest],
  roleRevokePermission: [21, etcdserverpb.AuthRoleRevokePermissionRequest],
} as const;
type Kind = keyof typeof codecs;
const byTag = new Map<number, Kind>(Object.entries(codecs).map(([k, [tag]]) => [tag, k as Kind]));

export function encodeOp(id: bigint, op: Op): Uint8Array {
  const [tag, codec] = codecs[op.kind];
  // biome-ignore lint/suspicious/noExplicitAny: the codec matches op.kind by construction
  const body = (codec as any).encode(op.req).finish() as Uint8Array;
  const out = new Uint8Array(9 + body.length);
  out[0] = tag;
  new DataView(out.buffer).setBigUint64(1, id);
  out.set(body, 9);
  return out;
}

export function decodeOp(data: Uint8Array): { id: bigint; op: Op } {
  if (data.length < 9) throw new Error(`server: log entry of ${data.length} bytes is not a request`);
  const kind = byTag.get(data[0]!);
  if (kind === undefined) throw new Error(`server: unknown request kind ${data[0]} in log entry`);
  const id = new DataView(data.buffer, data.byteOffset, data.byteLength).getBigUint64(1);
  const [, codec] = codecs[kind];
  const req = codec.decode(data.subarray(9));
  return { id, op: { kind, req } as Op };
}
