// Caller identity between meshers: a signed, expiring token the caller's mesher attaches to each
// outbound call (header x-mesher-auth), checked by the callee's mesher before the app sees the
// request.
//
// Keys: each service has an Ed25519 key pair. The public key is at `<prefix>/mesh/keys/<service>`
// (readable by every mesher); the private key at `<prefix>/mesh/secrets/<service>` (readable and
// writable only by that service's registry user: see docs/mesher.md for the etcd roles). The
// first mesher of a service creates the pair with a create-only Txn; the others read it.
//
// Token: base64url(JSON {iss: caller, aud: callee, iat, exp}) "." base64url(Ed25519 signature of
// the first part). A token is valid when its signature verifies with iss's public key, aud is
// this mesher's service and now is within [iat - skew, exp].

import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from "node:crypto";
import { compare, type EtcdClient, normalizePrefix, op } from "@regmesh/sdk";

export const TOKEN_HEADER = "x-mesher-auth";
export const TOKEN_TTL_MS = 60_000;
const CLOCK_SKEW_MS = 5_000;
const PUBLIC_KEY_CACHE_MS = 30_000;

export function keysPrefix(prefix: string): string {
  return `${normalizePrefix(prefix)}/mesh/keys/`;
}
export function secretKey(prefix: string, service: string): string {
  return `${normalizePrefix(prefix)}/mesh/secrets/${service}`;
}

export type Verified = { ok: true; caller: string } | { ok: false; why: string };

export class TokenAuthority {
  private privateKey: KeyObject | undefined;
  private readonly issued = new Map<string, { token: string; untilMs: number }>();
  private readonly publicKeys = new Map<string, { key: KeyObject | undefined; atMs: number }>();

  constructor(
    private readonly client: EtcdClient,
    private readonly prefix: string,
    private readonly service: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** Reads this service's key pair, creating it if no mesher of the service has yet. */
  async init(): Promise<void> {
    const sk = secretKey(this.prefix, this.service);
    const pk = `${keysPrefix(this.prefix)}${this.service}`;
    const have = await this.client.get(sk);
    if (have !== undefined) {
      this.privateKey = createPrivateKey(have.value.toString());
      return;
    }
    const pair = generateKeyPairSync("ed25519");
    const privPem = pair.privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    const pubPem = pair.publicKey.export({ type: "spki", format: "pem" }).toString();
    const r = await this.client
      .txn()
      .if(compare.version(sk, "=", 0))
      .onSuccess(op.put(sk, privPem), op.put(pk, pubPem))
      .onFailure(op.get(sk))
      .commit();
    const pem = r.succeeded ? privPem : r.responses[0]?.responseRange?.kvs[0]?.value.toString();
    if (pem === undefined) throw new Error(`auth: could not read or create the key of ${this.service}`);
    this.privateKey = createPrivateKey(pem);
  }

  /** A token for calls to `callee`, reused until half its life is gone. */
  token(callee: string): string {
    const now = this.now();
    const have = this.issued.get(callee);
    if (have !== undefined && have.untilMs > now) return have.token;
    if (this.privateKey === undefined) throw new Error("auth: not initialised");
    const claims = { iss: this.service, aud: callee, iat: now, exp: now + TOKEN_TTL_MS };
    const body = Buffer.from(JSON.stringify(claims)).toString("base64url");
    const sig = sign(null, Buffer.from(body), this.privateKey).toString("base64url");
    const token = `${body}.${sig}`;
    this.issued.set(callee, { token, untilMs: now + TOKEN_TTL_MS / 2 });
    return token;
  }

  /** Checks a caller's token for a call to this service. */
  async verify(token: string | undefined): Promise<Verified> {
    if (token === undefined || token === "") return { ok: false, why: "no caller token" };
    const dot = token.indexOf(".");
    if (dot < 0) return { ok: false, why: "malformed token" };
    const body = token.slice(0, dot);
    let claims: { iss?: unknown; aud?: unknown; iat?: unknown; exp?: unknown };
    try {
      claims = JSON.parse(Buffer.from(body, "base64url").toString());
    } catch {
      return { ok: false, why: "malformed token" };
    }
    if (typeof claims.iss !== "string" || typeof claims.exp !== "number" || typeof claims.iat !== "number") {
      return { ok: false, why: "malformed token" };
    }
    if (claims.aud !== this.service)
      return { ok: false, why: `token is for ${String(claims.aud)}, not ${this.service}` };
    const now = this.now();
    if (now > claims.exp) return { ok: false, why: "token expired" };
    if (claims.iat > now + CLOCK_SKEW_MS) return { ok: false, why: "token issued in the future" };
    const key = await this.publicKey(claims.iss);
    if (key === undefined) return { ok: false, why: `no key for caller ${claims.iss}` };
    const good = verify(null, Buffer.from(body), key, Buffer.from(token.slice(dot + 1), "base64url"));
    return good ? { ok: true, caller: claims.iss } : { ok: false, why: "bad token signature" };
  }

  private async publicKey(service: string): Promise<KeyObject | undefined> {
    const now = this.now();
    const c = this.publicKeys.get(service);
    if (c !== undefined && now - c.atMs < PUBLIC_KEY_CACHE_MS) return c.key;
    let key: KeyObject | undefined;
    try {
      const kv = await this.client.get(`${keysPrefix(this.prefix)}${service}`);
      key = kv === undefined ? undefined : createPublicKey(kv.value.toString());
    } catch {
      key = c?.key; // registry down: keep what we had
    }
    this.publicKeys.set(service, { key, atMs: now });
    return key;
  }
}
