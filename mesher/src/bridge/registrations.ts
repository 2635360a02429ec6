// Registrations made through the bridge. Each one stands for one app process: it gets its own
// lease with the TTL the app asked for (etcd raises a TTL below its minimum, and the answer
// carries the TTL actually granted), and its instance key is written with that lease in the
// SDK's layout, so SDK Discovery sees it. The app renews with heartbeats (one LeaseKeepAlive
// each); without them etcd expires the lease at its TTL and deletes the key.
//
// Ids: the registry key makes an id unique per service. The bridge addresses its registrations
// by id alone (`/v1/register/{id}`), so it also refuses an id it already holds for any service.
// A register whose id is taken (held here, or present in the registry, e.g. written by an SDK
// process or a previous registration whose lease has not expired yet) is a 409 conflict; the
// write is a Txn guarded by the key's create revision, so two bridges cannot both win. Without
// an id the bridge picks a random UUID.
//
// The map is only a cache of what the registry says: an entry whose lease etcd has expired is
// dropped when its heartbeat is refused, when its id is registered again (register asks
// LeaseTimeToLive about an entry past its expected expiry before calling the id taken), or by a
// periodic sweep that asks the same. The table also remembers, per service, the revision of its
// last write, so that resolve and pick can wait for the discovery cache to reach it (ops.ts).

import { randomUUID } from "node:crypto";
import {
  compare,
  type EtcdClient,
  EtcdError,
  EtcdErrorCode,
  encodeInstance,
  type Instance,
  instanceKey,
  type Lease,
  op,
} from "@regmesh/sdk";
import type { Logger } from "pino";
import { BridgeError, BridgeErrorCode, toBridgeError } from "./errors.js";
import { HEARTBEAT_TIMEOUT_MS, REGISTRATIONS_MAX, SWEEP_CHECKS_MAX, SWEEP_INTERVAL_MS } from "./limits.js";

export interface Registration {
  readonly id: string;
  readonly service: string;
  readonly key: string;
  readonly leaseId: bigint;
  /** The TTL etcd granted (after its minimum), in seconds. */
  ttlS: number;
  /** Client clock time (client.clock) after which etcd may have expired the lease, absent a heartbeat. */
  expiresAtMs: number;
}

export interface RegisterResult {
  id: string;
  leaseId: string;
  ttl: number;
  key: string;
  instance: Instance;
}

export interface HeartbeatResult {
  id: string;
  leaseId: string;
  ttl: number;
}

/**
 * Sends one LeaseKeepAlive for `leaseId` and returns the TTL granted, or 0 when the lease is
 * gone. Pluggable, so tests can stand in for the registry.
 */
export type KeepAliveOnce = (leaseId: bigint, ttlS: number) => Promise<number>;

/** One keep-alive through the client (EtcdClient.keepAliveOnce), as a BridgeError when unanswered. */
export function keeperKeepAliveOnce(client: EtcdClient): KeepAliveOnce {
  return async (leaseId) => {
    try {
      return await client.keepAliveOnce(leaseId, HEARTBEAT_TIMEOUT_MS);
    } catch (err) {
      throw new BridgeError(
        BridgeErrorCode.UNAVAILABLE,
        `registry did not answer the keep-alive: ${(err as Error).message}`,
      );
    }
  };
}

export class Registrations {
  private readonly byId = new Map<string, Registration>();
  /** Ids being registered right now: reserved so that a concurrent register of the same id fails. */
  private readonly pending = new Set<string>();
  /** service -> revision of this bridge's last write to it, until the discovery cache has it. */
  private readonly written = new Map<string, bigint>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeping = false;
  private closed = false;

  constructor(
    private readonly client: EtcdClient,
    private readonly prefix: string,
    private readonly logger: Logger,
    private readonly keepAliveOnce: KeepAliveOnce,
  ) {
    this.sweepTimer = setInterval(() => void this.sweep(), SWEEP_INTERVAL_MS);
    this.sweepTimer.unref();
  }

  get size(): number {
    return this.byId.size;
  }

  get(id: string): Registration | undefined {
    return this.byId.get(id);
  }

  /** The revision of this bridge's last write to `service`'s instances, if it may be unseen. */
  lastWrite(service: string): bigint | undefined {
    return this.written.get(service);
  }

  /** The discovery cache has caught up with `revision` for `service`. */
  seen(service: string, revision: bigint): void {
    const w = this.written.get(service);
    if (w !== undefined && w <= revision) this.written.delete(service);
  }

  private noteWrite(service: string, revision: bigint | undefined): void {
    if (revision === undefined) return;
    this.written.delete(service); // re-inserted last: the map stays in write order
    this.written.set(service, revision);
    if (this.written.size > REGISTRATIONS_MAX) this.written.delete(this.written.keys().next().value!);
  }

  private checkOpen(): void {
    if (this.closed) throw new BridgeError(BridgeErrorCode.UNAVAILABLE, "the bridge is shutting down");
  }

  async register(input: Instance, ttlS: number): Promise<RegisterResult> {
    this.checkOpen();
    const id = input.id === "" ? randomUUID() : input.id;
    const instance: Instance = { ...input, id };
    const key = instanceKey(this.prefix, instance.service, id);
    const value = encodeInstance(instance);
    if (this.pending.has(id)) throw conflictHere(id, undefined);
    if (this.byId.size + this.pending.size >= REGISTRATIONS_MAX) {
      throw new BridgeError(
        BridgeErrorCode.LIMIT,
        `this bridge holds ${REGISTRATIONS_MAX} registrations already`,
      );
    }
    this.pending.add(id);
    try {
      const held = this.byId.get(id);
      // An entry past its expected expiry may be a lease etcd has already expired (its app
      // stopped heartbeating and the sweep has not run yet): ask before refusing the id.
      if (
        held !== undefined &&
        !(held.expiresAtMs < this.client.clock.now() && (await this.leaseGone(held)))
      ) {
        throw conflictHere(id, held.service);
      }
      return await this.grantAndWrite(instance, key, value, ttlS);
    } finally {
      this.pending.delete(id);
    }
  }

  private async leaseGone(reg: Registration): Promise<boolean> {
    const r = await this.client.timeToLive(reg.leaseId);
    if (r.TTL > 0n) return false;
    if (this.byId.get(reg.id) === reg) this.byId.delete(reg.id);
    return true;
  }

  private async grantAndWrite(
    instance: Instance,
    key: string,
    value: string,
    ttlS: number,
  ): Promise<RegisterResult> {
    const id = instance.id;
    let lease: Lease | undefined;
    try {
      lease = await this.client.grant(ttlS);
      const res = await this.client
        .txn()
        .if(compare.createRevision(key, "=", 0))
        .onSuccess(op.put(key, value, { lease: lease.id }))
        .commit();
      if (!res.succeeded) {
        throw new BridgeError(
          BridgeErrorCode.CONFLICT,
          `id ${JSON.stringify(id)}: service ${instance.service} already has an instance with this id in the ` +
            "registry; use another id, or wait for the old registration's TTL",
          { field: "id" },
        );
      }
      const reg: Registration = {
        id,
        service: instance.service,
        key,
        leaseId: lease.id,
        ttlS: lease.ttlS,
        expiresAtMs: lease.grantSentAtMs + lease.ttlS * 1000,
      };
      if (this.closed) throw new BridgeError(BridgeErrorCode.UNAVAILABLE, "the bridge is shutting down");
      this.byId.set(id, reg);
      this.noteWrite(reg.service, res.header?.revision);
      this.logger.info(
        { service: reg.service, id, lease: lease.id.toString(16), ttlS: lease.ttlS },
        "bridge: registered",
      );
      return { id, leaseId: lease.id.toString(), ttl: lease.ttlS, key, instance };
    } catch (err) {
      // Nothing may stay behind for a refused registration: the lease (and so any key) goes.
      if (lease !== undefined) {
        const leaseId = lease.id;
        await this.client
          .revoke(leaseId)
          .catch((e: unknown) =>
            this.logger.warn(
              { lease: leaseId.toString(16), err: (e as Error).message },
              "bridge: could not revoke a refused registration's lease; it expires at its TTL",
            ),
          );
      }
      throw toBridgeError(err);
    }
  }

  async heartbeat(id: string): Promise<HeartbeatResult> {
    this.checkOpen();
    const reg = this.byId.get(id);
    if (reg === undefined) throw notRegistered(id);
    const sentAtMs = this.client.clock.now();
    const ttlS = await this.keepAliveOnce(reg.leaseId, reg.ttlS);
    if (ttlS <= 0) {
      if (this.byId.get(id) === reg) this.byId.delete(id);
      this.logger.info({ service: reg.service, id }, "bridge: registration expired");
      throw new BridgeError(
        BridgeErrorCode.NOT_REGISTERED,
        `registration ${JSON.stringify(id)} expired (no heartbeat within its ${reg.ttlS}s TTL); register again`,
      );
    }
    reg.ttlS = ttlS;
    reg.expiresAtMs = sentAtMs + ttlS * 1000;
    return { id, leaseId: reg.leaseId.toString(), ttl: ttlS };
  }

  /** Deletes the key first (watchers see the instance go at once), then revokes the lease. */
  async deregister(id: string): Promise<{ id: string; deregistered: true }> {
    this.checkOpen();
    const reg = this.byId.get(id);
    if (reg === undefined) throw notRegistered(id);
    this.byId.delete(id);
    try {
      const del = await this.client.delete(reg.key);
      this.noteWrite(reg.service, del.header?.revision);
      await this.client.revoke(reg.leaseId).catch((err: unknown) => {
        if (!(err instanceof EtcdError && err.code === EtcdErrorCode.LEASE_NOT_FOUND)) throw err;
      });
    } catch (err) {
      // Keep the entry: the app may retry, and the lease still expires on its own.
      if (!this.byId.has(id)) this.byId.set(id, reg);
      throw toBridgeError(err);
    }
    this.logger.info({ service: reg.service, id }, "bridge: deregistered");
    return { id, deregistered: true };
  }

  /** Drops entries whose lease the registry no longer has (apps that stopped heartbeating). */
  async sweep(nowMs = this.client.clock.now()): Promise<number> {
    if (this.sweeping || this.closed) return 0;
    this.sweeping = true;
    let dropped = 0;
    try {
      const due = [...this.byId.values()].filter((r) => r.expiresAtMs < nowMs).slice(0, SWEEP_CHECKS_MAX);
      for (const reg of due) {
        const r = await this.client.timeToLive(reg.leaseId);
        if (r.TTL <= 0n && this.byId.get(reg.id) === reg) {
          this.byId.delete(reg.id);
          dropped += 1;
        }
      }
    } catch (err) {
      this.logger.debug({ err: (err as Error).message }, "bridge: sweep failed");
    } finally {
      this.sweeping = false;
    }
    return dropped;
  }

  /**
   * Revokes every registration. The map lives in memory only: after a restart the bridge could
   * not renew or delete these leases, and an app re-registering its id would be refused until
   * the old TTL ran out. Revoking makes the restart clean: heartbeats get 404, apps register again.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    const regs = [...this.byId.values()];
    this.byId.clear();
    await Promise.all(
      regs.map(async (reg) => {
        try {
          await this.client.delete(reg.key);
          await this.client.revoke(reg.leaseId);
        } catch (err) {
          this.logger.warn(
            { id: reg.id, err: (err as Error).message },
            "bridge: could not revoke a registration on close; it expires at its TTL",
          );
        }
      }),
    );
  }
}

function conflictHere(id: string, service: string | undefined): BridgeError {
  return new BridgeError(
    BridgeErrorCode.CONFLICT,
    `id ${JSON.stringify(id)} is already registered through this bridge` +
      (service === undefined ? "" : ` (service ${service})`) +
      "; deregister it first, or register without an id to get a fresh one",
    { field: "id" },
  );
}

function notRegistered(id: string): BridgeError {
  return new BridgeError(
    BridgeErrorCode.NOT_REGISTERED,
    `registration ${JSON.stringify(id)} is unknown to this bridge or has expired; register again`,
  );
}
