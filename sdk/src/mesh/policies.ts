// Policies (DESIGN.md "Key layout": `<prefix>/policies/<service>` -> JSON), read and applied
// live. Per service: one get, then one watch from the read revision + 1. Rules:
// - A value is validated when read (parsePolicy with the service name); an invalid one is
//   rejected with the bad field named, on `sdk:policy:rejected`, and the last good policy stays
//   in force. A deleted key means the default policy.
// - A compacted watch re-reads the key; a broken one resumes (the etcd client does it).
// - With a cache file, the policies in force are saved to disk (atomically, checksummed) and a
//   process that starts while the registry is down routes with them, marked source "disk".
// - Writes are a compare-and-set on the key's mod revision: a writer that read revision R loses
//   to any write after R, with an error naming both revisions.

import { decodeChecked, encodeChecked, writeFileAtomic } from "../cache/disk-cache.js";
import { policyKey } from "../core/instance.js";
import { defaultPolicy, type Policy, type PolicyError, parsePolicy, validatePolicy } from "../core/policy.js";
import { channels, publish } from "../etcd/channels.js";
import type { EtcdClient } from "../etcd/client.js";
import { backoffMs, type Clock, type Timer } from "../etcd/clock.js";
import { EtcdError, EtcdErrorCode } from "../etcd/errors.js";
import { BACKOFF_INITIAL_MS, BACKOFF_MAX_MS, DISK_CACHE_DEBOUNCE_MS_DEFAULT } from "../etcd/limits.js";
import type { Logger } from "../etcd/logger.js";
import { compare, op } from "../etcd/txn.js";
import type { Watcher } from "../etcd/watch.js";

export interface PolicyState {
  readonly service: string;
  readonly policy: Policy;
  /** Mod revision of the key the policy came from; 0 for the default policy. */
  readonly modRevision: bigint;
  readonly source: "default" | "registry" | "disk";
  /** The last value that failed validation, if it is still the key's value. */
  readonly rejected?: { readonly modRevision: bigint; readonly errors: readonly PolicyError[] };
}

export type PolicyListener = (state: PolicyState) => void;

export interface PolicyStoreOptions {
  client: EtcdClient;
  prefix?: string;
  cacheFile?: string;
  logger?: Logger;
}

class Entry {
  state: PolicyState;
  watcher: Watcher | undefined;
  readonly listeners = new Set<PolicyListener>();
  loaded = false;
  readonly firstLoad: Promise<void>;
  resolveFirstLoad!: () => void;
  retry: Timer | undefined;
  attempt = 0;

  constructor(readonly service: string) {
    this.state = { service, policy: defaultPolicy(service), modRevision: 0n, source: "default" };
    this.firstLoad = new Promise((r) => (this.resolveFirstLoad = r));
  }
}

interface DiskPolicies {
  prefix: string;
  policies: Record<string, { modRevision: string; policy: unknown }>;
}

export class PolicyStore {
  private readonly client: EtcdClient;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly prefix: string;
  private readonly entries = new Map<string, Entry>();
  private readonly disk = new Map<string, { modRevision: bigint; policy: Policy }>();
  private saveTimer: Timer | undefined;
  private closed = false;

  constructor(private readonly opts: PolicyStoreOptions) {
    this.client = opts.client;
    this.clock = opts.client.clock;
    this.logger = opts.logger ?? opts.client.logger;
    this.prefix = opts.prefix ?? "";
  }

  /** Reads the disk cache (call once, before the first get). A bad file is ignored, with a log. */
  async loadCache(): Promise<void> {
    const path = this.opts.cacheFile;
    if (path === undefined) return;
    let file: Buffer;
    try {
      file = await (await import("node:fs/promises")).readFile(path);
    } catch {
      return;
    }
    const r = decodeChecked(file);
    const body = r.ok ? (r.value as DiskPolicies) : undefined;
    if (!r.ok || typeof body?.policies !== "object" || body.prefix !== this.prefix) {
      const reason = r.ok ? "bad shape or other prefix" : r.error.message;
      this.logger.warn({ path, reason }, "policies: disk cache ignored");
      publish(channels.cacheRejected, { path, reason });
      return;
    }
    for (const [service, p] of Object.entries(body.policies)) {
      const v = validatePolicy(p.policy, { service });
      if (v.ok) this.disk.set(service, { modRevision: BigInt(p.modRevision), policy: v.policy });
    }
  }

  /** The policy in force for `service` now (default until read); starts watching it. */
  get(service: string): PolicyState {
    return this.entry(service).state;
  }

  /** The policy once the registry answered (or the disk cache stands in), at most `timeoutMs`. */
  async ready(service: string, timeoutMs = 2_000): Promise<PolicyState> {
    const e = this.entry(service);
    if (!e.loaded) {
      let t: Timer | undefined;
      await Promise.race([e.firstLoad, new Promise<void>((r) => (t = this.clock.setTimer(r, timeoutMs)))]);
      t?.cancel();
    }
    return e.state;
  }

  /** Calls `listener` on every change of `service`'s policy state. Returns the unsubscribe. */
  watch(service: string, listener: PolicyListener): () => void {
    const e = this.entry(service);
    e.listeners.add(listener);
    return () => e.listeners.delete(listener);
  }

  services(): PolicyState[] {
    return [...this.entries.values()].map((e) => e.state);
  }

  /**
   * Validates and writes `policy` if the key's mod revision is still `expectModRevision`
   * (0: the key must not exist). Returns the new mod revision.
   */
  async put(service: string, policy: unknown, expectModRevision: bigint): Promise<bigint> {
    const v = validatePolicy(policy, { service });
    if (!v.ok) {
      throw new EtcdError(
        EtcdErrorCode.BAD_REQUEST,
        `invalid policy for ${service}: ${v.errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`,
      );
    }
    const key = policyKey(this.prefix, service);
    const r = await this.client
      .txn()
      .if(compare.modRevision(key, "=", expectModRevision))
      .onSuccess(op.put(key, JSON.stringify(v.policy, null, 2)))
      .onFailure(op.get(key))
      .commit();
    if (!r.succeeded) {
      const now = r.responses[0]?.responseRange?.kvs[0]?.modRevision ?? 0n;
      throw new EtcdError(
        EtcdErrorCode.CONFLICT,
        `policy for ${service} changed since revision ${expectModRevision} (now ${now}); read it again and retry`,
      );
    }
    return r.header?.revision ?? 0n;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.saveTimer?.cancel();
    for (const e of this.entries.values()) {
      e.watcher?.cancel();
      e.retry?.cancel();
    }
    await this.save();
  }

  // -------------------------------------------------------------------------------------------

  private entry(service: string): Entry {
    let e = this.entries.get(service);
    if (e === undefined) {
      e = new Entry(service);
      this.entries.set(service, e);
      const d = this.disk.get(service);
      if (d !== undefined)
        e.state = { service, policy: d.policy, modRevision: d.modRevision, source: "disk" };
      if (!this.closed) void this.load(e);
    }
    return e;
  }

  private async load(e: Entry): Promise<void> {
    e.watcher?.cancel();
    e.watcher = undefined;
    const key = policyKey(this.prefix, e.service);
    try {
      const r = await this.client.range(key);
      if (this.closed) return;
      const kv = r.kvs[0];
      this.applyValue(e, kv?.value, kv?.modRevision ?? 0n);
      e.attempt = 0;
      e.loaded = true;
      e.resolveFirstLoad();
      const from = (r.header?.revision ?? 0n) + 1n;
      e.watcher = this.client.watch(
        { key, startRevision: from },
        {
          events: (events) => {
            for (const ev of events) {
              const deleted = ev.type === 1;
              this.applyValue(e, deleted ? undefined : ev.kv?.value, ev.kv?.modRevision ?? 0n);
            }
          },
          compacted: () => void this.load(e),
          canceled: () => this.retryLoad(e),
        },
      );
    } catch (err) {
      this.logger.warn(
        { service: e.service, err: (err as Error).message },
        "policies: read failed; retrying",
      );
      this.retryLoad(e);
    }
  }

  private retryLoad(e: Entry): void {
    if (this.closed) return;
    e.retry?.cancel();
    e.retry = this.clock.setTimer(
      () => void this.load(e),
      backoffMs(e.attempt++, BACKOFF_INITIAL_MS, BACKOFF_MAX_MS),
    );
  }

  private applyValue(e: Entry, value: Uint8Array | undefined, modRevision: bigint): void {
    const prev = e.state;
    if (value === undefined || value.length === 0) {
      if (prev.source === "default" && prev.rejected === undefined) return;
      e.state = { service: e.service, policy: defaultPolicy(e.service), modRevision, source: "default" };
      this.disk.delete(e.service);
    } else {
      if (prev.source === "registry" && prev.modRevision === modRevision) return;
      const v = parsePolicy(value, { service: e.service });
      if (v.ok) {
        e.state = { service: e.service, policy: v.policy, modRevision, source: "registry" };
        this.disk.set(e.service, { modRevision, policy: v.policy });
        publish(channels.policyApplied, { service: e.service, modRevision });
        this.logger.info({ service: e.service, modRevision: String(modRevision) }, "policy applied");
      } else {
        e.state = { ...prev, rejected: { modRevision, errors: v.errors } };
        publish(channels.policyRejected, { service: e.service, modRevision, errors: v.errors });
        this.logger.warn(
          { service: e.service, modRevision: String(modRevision), errors: v.errors },
          "policy rejected; the last good one stays in force",
        );
      }
    }
    this.scheduleSave();
    for (const l of e.listeners) {
      try {
        l(e.state);
      } catch (err) {
        this.logger.error({ err }, "policies: listener threw");
      }
    }
  }

  private scheduleSave(): void {
    if (this.opts.cacheFile === undefined || this.saveTimer !== undefined || this.closed) return;
    this.saveTimer = this.clock.setTimer(() => {
      this.saveTimer = undefined;
      void this.save();
    }, DISK_CACHE_DEBOUNCE_MS_DEFAULT);
  }

  private async save(): Promise<void> {
    const path = this.opts.cacheFile;
    if (path === undefined) return;
    const body: DiskPolicies = { prefix: this.prefix, policies: {} };
    for (const [service, p] of this.disk) {
      body.policies[service] = { modRevision: String(p.modRevision), policy: p.policy };
    }
    try {
      await writeFileAtomic(path, encodeChecked(body));
    } catch (err) {
      this.logger.warn({ path, err: (err as Error).message }, "policies: disk cache not written");
    }
  }
}
