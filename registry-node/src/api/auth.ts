// The Auth service (etcd's v3rpc/auth.go over auth/store.go): authentication switched on and
// off, tokens, users and roles. Changes go through the log; passwords are hashed (bcrypt,
// etcd's default cost 10) before proposing and checked on the member that receives the
// Authenticate call, so neither the log nor the logs ever hold one.

import { randomBytes } from "node:crypto";
import { etcdserverpb } from "@regmesh/proto";
import bcrypt from "bcryptjs";
import { type AuthInfo, rootRole } from "../auth/store.js";
import { errors } from "../server/errors.js";
import type { Op } from "../server/ops.js";
import type { CallContext, GrpcRouter } from "./grpc.js";
import type { Services } from "./services.js";

/** etcd's default --bcrypt-cost. */
export const bcryptCost = 10;
const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/** A simple token as etcd makes them: 16 random letters, a dot, and a counter. */
function simpleToken(counter: number): string {
  const b = randomBytes(16);
  let s = "";
  for (const x of b) s += letters[x % letters.length];
  return `${s}.${counter}`;
}

export class AuthService {
  private tokens = 0;

  constructor(private readonly services: Services) {}

  private get store() {
    return this.services.server.auth;
  }

  private async change(op: Op, ai: AuthInfo | undefined): Promise<object> {
    this.store.checkAdmin(ai);
    await this.services.server.propose(op);
    return this.services.fill({});
  }

  async authenticate(r: etcdserverpb.AuthenticateRequest): Promise<etcdserverpb.AuthenticateResponse> {
    if (!this.store.isEnabled) throw errors.authNotEnabled();
    const u = this.store.getUser(r.name);
    if (u === undefined || u.options?.noPassword || u.password.length === 0) throw errors.authFailed();
    if (!(await bcrypt.compare(r.password, u.password.toString()))) throw errors.authFailed();
    const token = simpleToken(++this.tokens);
    await this.services.server.propose({ kind: "authenticate", req: { name: r.name, password: token } });
    return this.services.fill<etcdserverpb.AuthenticateResponse>({ token });
  }

  async userAdd(r: etcdserverpb.AuthUserAddRequest, ai?: AuthInfo) {
    if (r.name === "") throw errors.userEmpty();
    const hash = r.options?.noPassword ? "" : await bcrypt.hash(r.password, bcryptCost);
    return this.change({ kind: "userAdd", req: { ...r, password: hash } }, ai);
  }

  async userChangePassword(r: etcdserverpb.AuthUserChangePasswordRequest, ai?: AuthInfo) {
    const hash = await bcrypt.hash(r.password, bcryptCost);
    return this.change({ kind: "userChangePassword", req: { name: r.name, password: hash } }, ai);
  }

  userGet(r: etcdserverpb.AuthUserGetRequest, ai?: AuthInfo): etcdserverpb.AuthUserGetResponse {
    // A user may read its own record; anything else needs the root role (etcd's authApplier).
    if (ai?.username !== r.name) this.store.checkAdmin(ai);
    const u = this.store.getUser(r.name);
    if (u === undefined) throw errors.userNotFound();
    return this.services.fill<etcdserverpb.AuthUserGetResponse>({ roles: u.roles });
  }

  userList(ai?: AuthInfo): etcdserverpb.AuthUserListResponse {
    this.store.checkAdmin(ai);
    return this.services.fill<etcdserverpb.AuthUserListResponse>({ users: this.store.userNames() });
  }

  roleGet(r: etcdserverpb.AuthRoleGetRequest, ai?: AuthInfo): etcdserverpb.AuthRoleGetResponse {
    const own = ai !== undefined && (this.store.getUser(ai.username)?.roles.includes(r.role) ?? false);
    if (!own) this.store.checkAdmin(ai);
    const role = this.store.getRole(r.role);
    if (role === undefined) {
      if (r.role === rootRole) return this.services.fill<etcdserverpb.AuthRoleGetResponse>({ perm: [] });
      throw errors.roleNotFound();
    }
    return this.services.fill<etcdserverpb.AuthRoleGetResponse>({ perm: role.keyPermission });
  }

  roleList(ai?: AuthInfo): etcdserverpb.AuthRoleListResponse {
    this.store.checkAdmin(ai);
    return this.services.fill<etcdserverpb.AuthRoleListResponse>({ roles: this.store.roleNames() });
  }

  /** Needs the root role once auth is on (etcd's needAdminPermission covers AuthEnable too). */
  enable(ai?: AuthInfo) {
    return this.change({ kind: "authEnable", req: {} }, ai);
  }
  disable(ai?: AuthInfo) {
    return this.change({ kind: "authDisable", req: {} }, ai);
  }
  userDelete(r: etcdserverpb.AuthUserDeleteRequest, ai?: AuthInfo) {
    return this.change({ kind: "userDelete", req: r }, ai);
  }
  userGrantRole(r: etcdserverpb.AuthUserGrantRoleRequest, ai?: AuthInfo) {
    return this.change({ kind: "userGrantRole", req: r }, ai);
  }
  userRevokeRole(r: etcdserverpb.AuthUserRevokeRoleRequest, ai?: AuthInfo) {
    return this.change({ kind: "userRevokeRole", req: r }, ai);
  }
  roleAdd(r: etcdserverpb.AuthRoleAddRequest, ai?: AuthInfo) {
    return this.change({ kind: "roleAdd", req: r }, ai);
  }
  roleDelete(r: etcdserverpb.AuthRoleDeleteRequest, ai?: AuthInfo) {
    return this.change({ kind: "roleDelete", req: r }, ai);
  }
  roleGrantPermission(r: etcdserverpb.AuthRoleGrantPermissionRequest, ai?: AuthInfo) {
    return this.change({ kind: "roleGrantPermission", req: r }, ai);
  }
  roleRevokePermission(r: etcdserverpb.AuthRoleRevokePermissionRequest, ai?: AuthInfo) {
    return this.change({ kind: "roleRevokePermission", req: r }, ai);
  }

  register(router: GrpcRouter): void {
    const A = etcdserverpb.AuthService;
    const ai = (ctx: CallContext) => this.services.authInfo(ctx.headers);
    router.unary(A.authEnable, (_r, ctx) => this.enable(ai(ctx)));
    router.unary(A.authDisable, (_r, ctx) => this.disable(ai(ctx)));
    router.unary(A.authenticate, (r) => this.authenticate(r));
    router.unary(A.userAdd, (r, ctx) => this.userAdd(r, ai(ctx)));
    router.unary(A.userGet, (r, ctx) => this.userGet(r, ai(ctx)));
    router.unary(A.userList, (_r, ctx) => this.userList(ai(ctx)));
    router.unary(A.userDelete, (r, ctx) => this.userDelete(r, ai(ctx)));
    router.unary(A.userChangePassword, (r, ctx) => this.userChangePassword(r, ai(ctx)));
    router.unary(A.userGrantRole, (r, ctx) => this.userGrantRole(r, ai(ctx)));
    router.unary(A.userRevokeRole, (r, ctx) => this.userRevokeRole(r, ai(ctx)));
    router.unary(A.roleAdd, (r, ctx) => this.roleAdd(r, ai(ctx)));
    router.unary(A.roleGet, (r, ctx) => this.roleGet(r, ai(ctx)));
    router.unary(A.roleList, (_r, ctx) => this.roleList(ai(ctx)));
    router.unary(A.roleDelete, (r, ctx) => this.roleDelete(r, ai(ctx)));
    router.unary(A.roleGrantPermission, (r, ctx) => this.roleGrantPermission(r, ai(ctx)));
    router.unary(A.roleRevokePermission, (r, ctx) => this.roleRevokePermission(r, ai(ctx)));
  }
}
