// Users, roles, key-range permissions and tokens, as etcd 3.4's auth store (auth/store.go)
// keeps them, in the same buckets and formats: `auth` holds authEnabled (1 byte) and
// authRevision (8 bytes big-endian); `authUsers` maps a name to an authpb.User whose
// password is a bcrypt hash; `authRoles` maps a name to an authpb.Role with its sorted
// permissions. Every change to users or roles bumps the auth revision; a token issued
// before the change is then refused with "revision of auth store is old", and clients
// re-authenticate, as with etcd.
//
// Passwords are hashed before the change is proposed, so every member stores the same
// hash and no password ever reaches the log or the logs.

import { authpb } from "@regmesh/proto";
import { type BufferedBackend, buckets } from "../mvcc/backend.js";
import { Code, EtcdError, errors } from "../server/errors.js";

export const rootUser = "root";
export const rootRole = "root";
const enableKey = Buffer.from("authEnabled");
const revisionKey = Buffer.from("authRevision");
const P = authpb.Permission_Type;

export const errAuthOldRevision = () =>
  new EtcdError(Code.InvalidArgument, "etcdserver: revision of auth store is old");

/** Who a request runs as: the user and the auth revision its token was issued at. */
export type AuthInfo = { username: string; revision: number };

const cmp = (a: Buffer, b: Buffer) => Buffer.compare(a, b);

/** A half-open byte interval; `end` undefined means a single key, an empty end means +infinity. */
type Interval = { begin: Buffer; end: Buffer | undefined };

function permInterval(p: authpb.Permission): Interval {
  if (p.rangeEnd.length === 0) return { begin: p.key, end: undefined };
  if (p.rangeEnd.length === 1 && p.rangeEnd[0] === 0) return { begin: p.key, end: Buffer.alloc(0) };
  return { begin: p.key, end: p.rangeEnd };
}

/** Whether the union of `perms` contains every key of [key, end) (etcd's range permission cache). */
function covers(perms: Interval[], key: Buffer, end: Buffer | undefined): boolean {
  if (end === undefined) {
    return perms.some((iv) =>
      iv.end === undefined
        ? iv.begin.equals(key)
        : cmp(key, iv.begin) >= 0 && (iv.end.length === 0 || cmp(key, iv.end) < 0),
    );
  }
  const infinite = end.length === 0;
  // Sweep: from `key`, extend the covered prefix with intervals that start at or before it.
  const ranges = perms.filter((iv) => iv.end !== undefined).sort((a, b) => cmp(a.begin, b.begin)) as {
    begin: Buffer;
    end: Buffer;
  }[];
  let at = key;
  for (const iv of ranges) {
    if (cmp(iv.begin, at) > 0) break;
    if (iv.end.length === 0) return true;
    if (cmp(iv.end, at) > 0) at = iv.end;
    if (!infinite && cmp(at, end) >= 0) return true;
  }
  return false;
}

export class AuthStore {
  private enabled = false;
  private rev = 0;
  /** Simple tokens: token -> who, and when it expires (refreshed on use). */
  private readonly tokens = new Map<string, { info: AuthInfo; expiresMs: number }>();

  constructor(
    private readonly backend: BufferedBackend,
    /** Simple tokens expire after this long unused (etcd: 5 minutes). */
    readonly tokenTTLMs = 5 * 60 * 1000,
  ) {
    for (const b of [buckets.auth, buckets.authUsers, buckets.authRoles]) backend.createBucket(b);
  }

  restore(): void {
    const en = this.backend.get(buckets.auth, enableKey);
    this.enabled = en !== undefined && en[0] === 1;
    const r = this.backend.get(buckets.auth, revisionKey);
    this.rev = r === undefined ? 0 : Number(Buffer.from(r).readBigUInt64BE(0));
  }

  get isEnabled(): boolean {
    return this.enabled;
  }

  get revision(): number {
    return this.rev;
  }

  private bump(): void {
    this.rev += 1;
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(this.rev));
    this.backend.put(buckets.auth, revisionKey, b);
  }

  getUser(name: string): authpb.User | undefined {
    const v = this.backend.get(buckets.authUsers, Buffer.from(name));
    return v === undefined ? undefined : authpb.User.decode(v);
  }

  private putUser(u: authpb.User): void {
    this.backend.put(buckets.authUsers, u.name, authpb.User.encode(u).finish());
  }

  getRole(name: string): authpb.Role | undefined {
    const v = this.backend.get(buckets.authRoles, Buffer.from(name));
    return v === undefined ? undefined : authpb.Role.decode(v);
  }

  private putRole(r: authpb.Role): void {
    this.backend.put(buckets.authRoles, r.name, authpb.Role.encode(r).finish());
  }

  private names(bucket: string): string[] {
    const out: string[] = [];
    this.backend.scan(bucket, new Uint8Array(0), undefined, (k) => {
      out.push(Buffer.from(k).toString());
      return true;
    });
    return out;
  }

  userNames(): string[] {
    return this.names(buckets.authUsers);
  }

  roleNames(): string[] {
    return this.names(buckets.authRoles);
  }

  // Changes, applied from the log on every member.

  enable(): void {
    if (this.enabled) return;
    const root = this.getUser(rootUser);
    if (root === undefined) throw errors.rootUserNotExist();
    if (!root.roles.includes(rootRole)) throw errors.rootRoleNotExist();
    this.backend.put(buckets.auth, enableKey, Buffer.from([1]));
    this.enabled = true;
    this.tokens.clear();
    this.bump();
  }

  disable(): void {
    if (!this.enabled) return;
    this.backend.put(buckets.auth, enableKey, Buffer.from([0]));
    this.enabled = false;
    this.tokens.clear();
    this.bump();
  }

  userAdd(name: string, passwordHash: Buffer, noPassword: boolean): void {
    if (name === "") throw errors.userEmpty();
    if (this.getUser(name) !== undefined) throw errors.userAlreadyExist();
    this.putUser({
      name: Buffer.from(name),
      password: noPassword ? Buffer.alloc(0) : passwordHash,
      roles: [],
      options: { noPassword },
    });
    this.bump();
  }

  userDelete(name: string): void {
    if (this.enabled && name === rootUser) throw errors.invalidAuthMgmt();
    if (this.getUser(name) === undefined) throw errors.userNotFound();
    this.backend.delete(buckets.authUsers, Buffer.from(name));
    this.dropTokensOf(name);
    this.bump();
  }

  userChangePassword(name: string, passwordHash: Buffer): void {
    const u = this.getUser(name);
    if (u === undefined) throw errors.userNotFound();
    this.putUser({ ...u, password: passwordHash });
    this.dropTokensOf(name);
    this.bump();
  }

  userGrantRole(name: string, role: string): void {
    const u = this.getUser(name);
    if (u === undefined) throw errors.userNotFound();
    if (role !== rootRole && this.getRole(role) === undefined) throw errors.roleNotFound();
    if (u.roles.includes(role)) return;
    this.putUser({ ...u, roles: [...u.roles, role].sort() });
    this.bump();
  }

  userRevokeRole(name: string, role: string): void {
    if (this.enabled && name === rootUser && role === rootRole) throw errors.invalidAuthMgmt();
    const u = this.getUser(name);
    if (u === undefined) throw errors.userNotFound();
    if (!u.roles.includes(role)) throw errors.roleNotGranted();
    this.putUser({ ...u, roles: u.roles.filter((r) => r !== role) });
    this.bump();
  }

  roleAdd(name: string): void {
    if (name === "") throw errors.roleEmpty();
    if (this.getRole(name) !== undefined) throw errors.roleAlreadyExist();
    this.putRole({ name: Buffer.from(name), keyPermission: [] });
    this.bump();
  }

  roleDelete(name: string): void {
    if (this.enabled && name === rootRole) throw errors.invalidAuthMgmt();
    if (this.getRole(name) === undefined) throw errors.roleNotFound();
    this.backend.delete(buckets.authRoles, Buffer.from(name));
    for (const user of this.userNames()) {
      const u = this.getUser(user)!;
      if (u.roles.includes(name)) this.putUser({ ...u, roles: u.roles.filter((r) => r !== name) });
    }
    this.bump();
  }

  roleGrantPermission(name: string, perm: authpb.Permission): void {
    const r = this.getRole(name);
    if (r === undefined) throw errors.roleNotFound();
    const perms = r.keyPermission.filter(
      (p) => !(p.key.equals(perm.key) && p.rangeEnd.equals(perm.rangeEnd)),
    );
    perms.push({ permType: perm.permType, key: perm.key, rangeEnd: perm.rangeEnd });
    perms.sort((a, b) => cmp(a.key, b.key) || cmp(a.rangeEnd, b.rangeEnd));
    this.putRole({ ...r, keyPermission: perms });
    this.bump();
  }

  roleRevokePermission(name: string, key: Buffer, rangeEnd: Buffer): void {
    const r = this.getRole(name);
    if (r === undefined) throw errors.roleNotFound();
    const perms = r.keyPermission.filter((p) => !(p.key.equals(key) && p.rangeEnd.equals(rangeEnd)));
    if (perms.length === r.keyPermission.length) throw errors.permissionNotGranted();
    this.putRole({ ...r, keyPermission: perms });
    this.bump();
  }

  /** Records a token issued to `name` (Authenticate, applied from the log so every member knows it). */
  assignToken(name: string, token: string, nowMs: number): void {
    if (!this.enabled) throw errors.authNotEnabled();
    if (this.getUser(name) === undefined) throw errors.authFailed();
    this.tokens.set(token, {
      info: { username: name, revision: this.rev },
      expiresMs: nowMs + this.tokenTTLMs,
    });
  }

  private dropTokensOf(name: string): void {
    for (const [t, v] of this.tokens) if (v.info.username === name) this.tokens.delete(t);
  }

  /** Who a token speaks for; refreshes its TTL. Throws "invalid auth token" when unknown or expired. */
  authInfoFromToken(token: string, nowMs: number): AuthInfo {
    const t = this.tokens.get(token);
    if (t === undefined || t.expiresMs <= nowMs) {
      this.tokens.delete(token);
      throw errors.invalidAuthToken();
    }
    t.expiresMs = nowMs + this.tokenTTLMs;
    return t.info;
  }

  // Permission checks (etcd's isOpPermitted).

  private check(ai: AuthInfo | undefined, key: Buffer, rangeEnd: Buffer, type: "read" | "write"): void {
    if (!this.enabled) return;
    if (ai === undefined) throw errors.userEmpty();
    if (ai.revision < this.rev) throw errAuthOldRevision();
    const u = this.getUser(ai.username);
    if (u === undefined) throw errors.permissionDenied();
    if (u.roles.includes(rootRole)) return;
    const perms: Interval[] = [];
    for (const roleName of u.roles) {
      for (const p of this.getRole(roleName)?.keyPermission ?? []) {
        const ok =
          p.permType === P.READWRITE || (type === "read" ? p.permType === P.READ : p.permType === P.WRITE);
        if (ok) perms.push(permInterval(p));
      }
    }
    let end: Buffer | undefined = rangeEnd.length === 0 ? undefined : rangeEnd;
    if (end !== undefined && end.length === 1 && end[0] === 0) end = Buffer.alloc(0);
    if (!covers(perms, key, end)) throw errors.permissionDenied();
  }

  checkRange(ai: AuthInfo | undefined, key: Buffer, rangeEnd: Buffer): void {
    this.check(ai, key, rangeEnd, "read");
  }

  checkPut(ai: AuthInfo | undefined, key: Buffer): void {
    this.check(ai, key, Buffer.alloc(0), "write");
  }

  checkDeleteRange(ai: AuthInfo | undefined, key: Buffer, rangeEnd: Buffer): void {
    this.check(ai, key, rangeEnd, "write");
  }

  /** User and role management needs the root role (etcd's IsAdminPermitted). */
  checkAdmin(ai: AuthInfo | undefined): void {
    if (!this.enabled) return;
    if (ai === undefined) throw errors.userEmpty();
    const u = this.getUser(ai.username);
    if (u === undefined || !u.roles.includes(rootRole)) throw errors.permissionDenied();
  }
}
