// Registration (DESIGN.md "Data paths: Register"). One lease per process, shared by every
// instance it registers, so keep-alive traffic grows with processes, not instances. When the
// lease is lost (the keeper missed its deadline, or the lease was revoked), the registrar grants
// a new one, with back-off until the registry answers, and writes every instance again under it
// in Txns chunked within etcd's limits. close() deletes its keys first, then revokes the lease.

import { EventEmitter } from "node:events";
import { etcdserverpb } from "@regmesh/proto";
import { encodeInstance, type Instance, type InstanceHealth, instanceKey } from "../core/instance.js";
import { INSTANCE_WEIGHT_DEFAULT } from "../core/limits.js";
import { channels, publish } from "../etcd/channels.js";
import type { EtcdClient, Lease } from "../etcd/client.js";
import { backoffMs } from "../etcd/clock.js";
import { EtcdError, EtcdErrorCode } from "../etcd/errors.js";
import type { LeaseKeeper } from "../etcd/lease.js";
import { BACKOFF_INITIAL_MS, BACKOFF_MAX_MS, LEASE_TTL_S_DEFAULT } from "../etcd/limits.js";
import type { Logger } from "../etcd/logger.js";
import { op } from "../etcd/txn.js";
import { chunkOps } from "./chunk.js";

export interface RegisterInput {
  service: string;
  id: string;
  address: string;
  port: number;
  protocol?: string;
  weight?: number;
  zone?: string;
  version?: string;
  tags?: readonly string[];
  metadata?: Readonly<Record<string, string>>;
  health?: InstanceHealth;
}

export type InstanceUpdate = Partial<Omit<RegisterInput, "service" | "id">>;

export interface RegistrarOptions {
  client: EtcdClient;
  /** Key prefix; instances go to `<prefix>/services/<service>/<id>`. Default "" (the root). */
  prefix?: string;
  /** TTL of the process's lease in seconds. */
  ttlS?: number;
  logger?: Logger;
}

export interface RegistrarEvents {
  /** The lease was lost; re-registration has started. */
  lost: [EtcdError];
  /** Every instance was written again under a new lease. */
  reregistered: [{ leaseId: bigint; instances: number }];
  /** Something failed in the background (a re-registration attempt); it is retried. */
  error: [Error];
}

function toInstance(i: RegisterInput): Instance {
  const inst: { -readonly [K in keyof Instance]: Instance[K] } = {
    id: i.id,
    service: i.service,
    address: i.address,
    port: i.port,
    protocol: i.protocol ?? "http",
    weight: i.weight ?? INSTANCE_WEIGHT_DEFAULT,
    tags: [...(i.tags ?? [])],
    metadata: { ...(i.metadata ?? {}) },
  };
  if (i.zone !== undefined) inst.zone = i.zone;
  if (i.version !== undefined) inst.version = i.version;
  if (i.health !== undefined) inst.health = i.health;
  return inst;
}

export class Registrar extends EventEmitter<RegistrarEvents> {
  private readonly client: EtcdClient;
  private readonly prefix: string;
  private readonly ttlS: number;
  private readonly logger: Logger;
  /** key -> instance: everything this process has registered and not deregistered. */
  private readonly registered = new Map<string, Instance>();
  private lease: Lease | undefined;
  private keeper: LeaseKeeper | undefined;
  private leasePromise: Promise<Lease> | undefined;
  private generation = 0;
  private closed = false;

  constructor(opts: RegistrarOptions) {
    super();
    this.client = opts.client;
    this.prefix = opts.prefix ?? "";
    this.ttlS = opts.ttlS ?? LEASE_TTL_S_DEFAULT;
    this.logger = opts.logger ?? opts.client.logger;
  }

  /** The current lease id, once granted. */
  get leaseId(): bigint | undefined {
    return this.lease?.id;
  }

  instances(): Instance[] {
    return [...this.registered.values()];
  }

  private key(inst: { service: string; id: string }): string {
    return instanceKey(this.prefix, inst.service, inst.id);
  }

  /** The process's lease: granted on first use, re-granted (with back-off) after a loss. */
  private ensureLease(): Promise<Lease> {
    if (this.closed) return Promise.reject(new EtcdError(EtcdErrorCode.CLOSED, "registrar is closed"));
    if (this.lease !== undefined) return Promise.resolve(this.lease);
    if (this.leasePromise === undefined) {
      const gen = this.generation;
      this.leasePromise = this.grantWithRetry(gen).finally(() => {
        this.leasePromise = undefined;
      });
    }
    return this.leasePromise;
  }

  private async grantWithRetry(gen: number): Promise<Lease> {
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new EtcdError(EtcdErrorCode.CLOSED, "registrar is closed");
      try {
        const lease = await this.client.grant(this.ttlS);
        if (this.closed || gen !== this.generation) {
          void this.client.revoke(lease.id).catch(() => {});
          throw new EtcdError(EtcdErrorCode.CLOSED, "registrar closed while granting");
        }
        this.lease = lease;
        const keeper = this.client.keepAlive(lease);
        this.keeper = keeper;
        keeper.once("lost", (err) => this.onLeaseLost(keeper, err));
        return lease;
      } catch (err) {
        if (err instanceof EtcdError && err.code === EtcdErrorCode.CLOSED) throw err;
        this.logger.warn({ err: (err as Error).message, attempt }, "registrar: lease grant failed; retrying");
        await new Promise((r) =>
          this.client.clock.setTimer(
            () => r(undefined),
            backoffMs(attempt, BACKOFF_INITIAL_MS * 4, BACKOFF_MAX_MS),
          ),
        );
      }
    }
  }

  private onLeaseLost(keeper: LeaseKeeper, err: EtcdError): void {
    if (this.closed || keeper !== this.keeper) return;
    const old = this.lease;
    this.lease = undefined;
    this.keeper = undefined;
    this.generation += 1;
    this.emit("lost", err);
    void this.reregister(old);
  }

  /** Grants a new lease and writes every instance again under it, until it succeeds or closes. */
  private async reregister(old: Lease | undefined): Promise<void> {
    // One loop per loss: a newer loss (generation bump) starts its own loop and this one stops.
    const gen = this.generation;
    for (let attempt = 0; !this.closed && gen === this.generation; attempt++) {
      let lease: Lease | undefined;
      try {
        lease = await this.ensureLease();
        const instances = [...this.registered.values()];
        await this.writeAll(instances, lease.id);
        if (gen !== this.generation || this.lease?.id !== lease.id) return;
        if (old !== undefined) void this.client.revoke(old.id).catch(() => {});
        this.logger.info(
          { lease: lease.id.toString(16), instances: instances.length },
          "registrar: re-registered",
        );
        publish(channels.reregistered, { leaseId: lease.id, instances: instances.length });
        this.emit("reregistered", { leaseId: lease.id, instances: instances.length });
        return;
      } catch (err) {
        if (this.closed || gen !== this.generation) return;
        if (this.listenerCount("error") > 0) this.emit("error", err as Error);
        const keeper = this.keeper;
        if (
          err instanceof EtcdError &&
          err.code === EtcdErrorCode.LEASE_NOT_FOUND &&
          keeper !== undefined &&
          this.lease?.id === lease?.id
        ) {
          // The new lease is already gone: handle it as a new loss (which starts a new loop).
          keeper.close();
          this.onLeaseLost(keeper, new EtcdError(EtcdErrorCode.LEASE_LOST, err.message, { cause: err }));
          return;
        }
        await new Promise((r) =>
          this.client.clock.setTimer(
            () => r(undefined),
            backoffMs(attempt, BACKOFF_INITIAL_MS * 4, BACKOFF_MAX_MS),
          ),
        );
      }
    }
  }

  private async writeAll(instances: readonly Instance[], leaseId: bigint): Promise<void> {
    const ops = instances.map((i) => op.put(this.key(i), encodeInstance(i), { lease: leaseId }));
    for (const chunk of chunkOps(ops)) {
      await this.client.txnRequest(etcdserverpb.TxnRequest.create({ success: chunk }));
    }
  }

  /**
   * Writes instances under the current lease. A put that finds the lease gone ("requested lease
   * not found": revoked behind our back, before the keeper heard of it) starts the loss handling
   * at once and writes again under the new lease.
   */
  private async writeLive(instances: readonly Instance[]): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const lease = await this.ensureLease();
      try {
        await this.writeAll(instances, lease.id);
        return;
      } catch (err) {
        const gone = err instanceof EtcdError && err.code === EtcdErrorCode.LEASE_NOT_FOUND;
        if (!gone || attempt >= 2) throw err;
        const keeper = this.keeper;
        if (keeper !== undefined && this.lease?.id === lease.id) {
          keeper.close();
          this.onLeaseLost(
            keeper,
            new EtcdError(EtcdErrorCode.LEASE_LOST, (err as Error).message, { cause: err }),
          );
        }
      }
    }
  }

  /** Registers (or overwrites) one instance under the process's lease. */
  async register(input: RegisterInput): Promise<Instance> {
    return (await this.registerMany([input]))[0]!;
  }

  /** Registers many instances in chunked Txns. */
  async registerMany(inputs: readonly RegisterInput[]): Promise<Instance[]> {
    const instances = inputs.map(toInstance);
    for (const i of instances) encodeInstance(i); // validates before anything is written
    for (const i of instances) this.registered.set(this.key(i), i);
    await this.writeLive(instances);
    return instances;
  }

  /** Changes fields of a registered instance; watchers see it at once. */
  async update(service: string, id: string, fields: InstanceUpdate): Promise<Instance> {
    const key = instanceKey(this.prefix, service, id);
    const cur = this.registered.get(key);
    if (cur === undefined) {
      throw new EtcdError(EtcdErrorCode.BAD_REQUEST, `instance ${service}/${id} is not registered here`);
    }
    const next = toInstance({ ...cur, ...fields, service, id });
    encodeInstance(next);
    this.registered.set(key, next);
    await this.writeLive([next]);
    return next;
  }

  async deregister(service: string, id: string): Promise<void> {
    const key = instanceKey(this.prefix, service, id);
    this.registered.delete(key);
    await this.client.delete(key);
  }

  /** Deletes every key this process registered, then revokes its lease. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const keys = [...this.registered.keys()];
    this.registered.clear();
    const keeper = this.keeper;
    const lease = this.lease;
    this.keeper = undefined;
    this.lease = undefined;
    try {
      for (const chunk of chunkOps(keys.map((k) => op.delete(k)))) {
        await this.client.txnRequest(etcdserverpb.TxnRequest.create({ success: chunk }));
      }
    } catch (err) {
      this.logger.warn(
        { err: (err as Error).message },
        "registrar: could not delete keys; the lease will expire",
      );
    }
    keeper?.close();
    if (lease !== undefined) await this.client.revoke(lease.id).catch(() => {});
  }
}

/**
 * Deregisters on SIGTERM/SIGINT: closes the registrar (keys deleted, lease revoked), then calls
 * `onDone` (default: process.exit(0)). Returns a function that removes the handlers.
 */
export function installSigtermHandler(
  registrar: Pick<Registrar, "close">,
  opts: { signals?: NodeJS.Signals[]; timeoutMs?: number; onDone?: () => void } = {},
): () => void {
  const signals = opts.signals ?? ["SIGTERM", "SIGINT"];
  const onDone = opts.onDone ?? (() => process.exit(0));
  let running = false;
  const handler = () => {
    if (running) return;
    running = true;
    const timeout = new Promise<void>((r) => setTimeout(r, opts.timeoutMs ?? 5_000).unref());
    void Promise.race([registrar.close(), timeout]).finally(onDone);
  };
  for (const s of signals) process.on(s, handler);
  return () => {
    for (const s of signals) process.off(s, handler);
  };
}
