// Discovery (DESIGN.md "Data paths: Discover"): per service, one paged listing at a revision R,
// then one watch from R + 1 that keeps a local set current. The sets live in an LRU over services
// (services with listeners are pinned). Rules:
// - Only a successful listing replaces a set, and only delete events remove instances: when the
//   registry is unreachable the last known set is kept and marked stale, with its age.
// - A broken watch resumes from the last seen revision + 1 (the etcd client does it); a compacted
//   resume revision forces a full re-list.
// - Anti-entropy: every antiEntropyIntervalMs the set is compared with a listing at the revision
//   it claims to reflect; any difference is reported on `sdk:discovery:drift` and repaired by a
//   full re-list.
// - With a cache file, sets are saved to disk (atomically, checksummed) and a process started
//   while the registry is down resolves from that file, marked stale with the file's age.

import type { mvccpb } from "@regmesh/proto";
import { LRUCache } from "lru-cache";
import {
  type CachedService,
  type CacheSnapshot,
  loadSnapshotSync,
  saveSnapshot,
} from "../cache/disk-cache.js";
import { decodeInstanceEntry, type Instance, serviceInstancesPrefix } from "../core/instance.js";
import { channels, publish } from "../etcd/channels.js";
import type { EtcdClient } from "../etcd/client.js";
import { backoffMs, type Clock, type Timer } from "../etcd/clock.js";
import { EtcdError, EtcdErrorCode } from "../etcd/errors.js";
import {
  ANTI_ENTROPY_INTERVAL_MS_DEFAULT,
  BACKOFF_INITIAL_MS,
  BACKOFF_MAX_MS,
  DISCOVERY_SERVICES_MAX_DEFAULT,
  DISK_CACHE_DEBOUNCE_MS_DEFAULT,
  RESOLVE_TIMEOUT_MS_DEFAULT,
} from "../etcd/limits.js";
import type { Logger } from "../etcd/logger.js";
import type { Watcher } from "../etcd/watch.js";
import { listPrefix } from "./list.js";

export interface ServiceSnapshot {
  service: string;
  /** Sorted by id. */
  instances: Instance[];
  /** The registry revision the set reflects (0 when nothing was ever loaded). */
  revision: bigint;
  /** True when the set may be out of date: the watch is down, or it came from the disk cache. */
  stale: boolean;
  /** How long the set has been stale, in ms (0 when fresh). */
  staleForMs: number;
  source: "registry" | "disk";
}

export interface Drift {
  service: string;
  revision: bigint;
  added: string[];
  removed: string[];
  changed: string[];
}

export type ServiceListener = (snapshot: ServiceSnapshot) => void;

export interface DiscoveryOptions {
  client: EtcdClient;
  prefix?: string;
  /** Services kept without listeners (LRU). */
  maxServices?: number;
  antiEntropyIntervalMs?: number;
  /** How long a first resolve() waits for the registry before using the disk cache or failing. */
  resolveTimeoutMs?: number;
  /** Keys per page in listings. */
  pageKeys?: number;
  /** Path of the disk cache; absent means no disk cache. */
  cacheFile?: string;
  cacheDebounceMs?: number;
  logger?: Logger;
}

type EntryState = "loading" | "synced" | "disconnected" | "closed";

class ServiceEntry {
  instances = new Map<string, Instance>();
  revision = 0n;
  state: EntryState = "loading";
  source: "registry" | "disk" = "registry";
  /** Whether a listing from the registry ever succeeded. */
  loaded = false;
  /** Clock time since which the set is stale; undefined when fresh. */
  staleSinceMs: number | undefined;
  watcher: Watcher | undefined;
  readonly listeners = new Set<ServiceListener>();
  retryTimer: Timer | undefined;
  antiEntropyTimer: Timer | undefined;
  attempt = 0;
  /** Bumped on every re-list, so late answers of an older one are dropped. */
  epoch = 0;
  readonly firstLoad: Promise<void>;
  resolveFirstLoad!: () => void;
  /** A first resolve() already timed out; later ones answer at once from what there is. */
  timedOut = false;

  constructor(readonly service: string) {
    this.firstLoad = new Promise((r) => (this.resolveFirstLoad = r));
  }
}

function sameInstance(a: Instance, b: Instance): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export class Discovery {
  private readonly client: EtcdClient;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly prefix: string;
  private readonly opts: DiscoveryOptions;
  private readonly pinned = new Map<string, ServiceEntry>();
  private readonly lru: LRUCache<string, ServiceEntry>;
  private readonly disk = new Map<string, { revision: bigint; instances: Instance[] }>();
  private diskSavedAtMs = 0;
  private saveTimer: Timer | undefined;
  private saving: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(opts: DiscoveryOptions) {
    this.opts = opts;
    this.client = opts.client;
    this.clock = opts.client.clock;
    this.logger = opts.logger ?? opts.client.logger;
    this.prefix = opts.prefix ?? "";
    this.lru = new LRUCache<string, ServiceEntry>({
      max: opts.maxServices ?? DISCOVERY_SERVICES_MAX_DEFAULT,
      dispose: (entry, _key, reason) => {
        if (reason === "evict" || reason === "delete") this.stopEntry(entry);
      },
    });
    if (opts.cacheFile !== undefined) this.loadDisk(opts.cacheFile);
  }

  private loadDisk(path: string): void {
    const r = loadSnapshotSync(path);
    if (r === undefined) return;
    if (!r.ok) {
      this.logger.warn({ path, err: r.error.message }, "discovery: disk cache ignored");
      publish(channels.cacheRejected, { path, reason: r.error.message });
      return;
    }
    if (r.value.prefix !== this.prefix) return;
    this.diskSavedAtMs = r.value.savedAtMs;
    for (const [service, svc] of Object.entries(r.value.services)) {
      this.disk.set(service, { revision: BigInt(svc.revision), instances: svc.instances });
    }
  }

  // -------------------------------------------------------------------------------------------
  // Public API

  /** The current set of `service`. Waits for a first listing (up to resolveTimeoutMs). */
  async resolve(service: string): Promise<ServiceSnapshot> {
    const entry = this.entry(service);
    if (!entry.loaded && !entry.timedOut) {
      let timer: Timer | undefined;
      const timedOut = await Promise.race([
        entry.firstLoad.then(() => false),
        new Promise<boolean>((r) => {
          timer = this.clock.setTimer(
            () => r(true),
            this.opts.resolveTimeoutMs ?? RESOLVE_TIMEOUT_MS_DEFAULT,
          );
        }),
      ]);
      timer?.cancel();
      if (timedOut) entry.timedOut = true;
    }
    if (!entry.loaded && entry.source !== "disk") {
      throw new EtcdError(
        EtcdErrorCode.NOT_RESOLVED,
        `service ${service}: the registry did not answer and there is no cached copy`,
      );
    }
    return this.snapshotOf(entry);
  }

  /** The set as it is now, without waiting; undefined if the service is not tracked. */
  peek(service: string): ServiceSnapshot | undefined {
    const e = this.pinned.get(service) ?? this.lru.get(service);
    return e === undefined ? undefined : this.snapshotOf(e);
  }

  /**
   * Calls `listener` with every new snapshot of `service` (changes and stale/fresh flips).
   * Returns the unsubscribe function.
   */
  watch(service: string, listener: ServiceListener): () => void {
    const entry = this.entry(service);
    if (!this.pinned.has(service)) {
      this.pinned.set(service, entry);
      this.lru.delete(service); // dispose ignores entries that are pinned
    }
    entry.listeners.add(listener);
    if (entry.loaded || entry.source === "disk") queueMicrotask(() => listener(this.snapshotOf(entry)));
    return () => {
      entry.listeners.delete(listener);
      if (entry.listeners.size === 0 && this.pinned.get(service) === entry) {
        this.pinned.delete(service);
        if (!this.closed) this.lru.set(service, entry);
      }
    };
  }

  /** Anti-entropy now: compares the set with the registry at its revision; repairs any drift. */
  async reconcile(service: string): Promise<Drift> {
    const entry = this.entry(service);
    await entry.firstLoad;
    const revision = entry.revision;
    const epoch = entry.epoch;
    const cached = new Map(entry.instances);
    let listed: Map<string, Instance>;
    try {
      listed = this.decodeAll(
        entry,
        (
          await listPrefix(this.client, this.servicePrefix(service), {
            revision,
            pageKeys: this.opts.pageKeys,
          })
        ).kvs,
      );
    } catch (err) {
      if (err instanceof EtcdError && err.code === EtcdErrorCode.COMPACTED) {
        // The set's revision is gone: compare with the head instead (any change since is drift too).
        const l = await listPrefix(this.client, this.servicePrefix(service), {
          pageKeys: this.opts.pageKeys,
        });
        listed = this.decodeAll(entry, l.kvs);
      } else {
        throw err;
      }
    }
    const drift: Drift = { service, revision, added: [], removed: [], changed: [] };
    for (const [id, inst] of listed) {
      const have = cached.get(id);
      if (have === undefined) drift.added.push(id);
      else if (!sameInstance(have, inst)) drift.changed.push(id);
    }
    for (const id of cached.keys()) if (!listed.has(id)) drift.removed.push(id);
    const drifted = drift.added.length + drift.removed.length + drift.changed.length > 0;
    if (drifted && entry.epoch === epoch && entry.state !== "closed") {
      this.logger.warn(drift, "discovery: cache drifted from the registry; re-listing");
      publish(channels.drift, drift);
      this.relist(entry);
    }
    return drift;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const pinned = [...this.pinned.values()];
    this.pinned.clear();
    for (const e of pinned) this.stopEntry(e);
    this.lru.clear(); // disposes (stops) the rest
    this.saveTimer?.cancel();
    await this.saving;
  }

  /** Writes the disk cache now (also done automatically after changes). */
  async flush(): Promise<void> {
    this.saveTimer?.cancel();
    this.saveTimer = undefined;
    await this.save();
  }

  // -------------------------------------------------------------------------------------------
  // Entries

  private servicePrefix(service: string): string {
    return serviceInstancesPrefix(this.prefix, service);
  }

  private entry(service: string): ServiceEntry {
    if (this.closed) throw new EtcdError(EtcdErrorCode.CLOSED, "discovery is closed");
    let e = this.pinned.get(service) ?? this.lru.get(service);
    if (e !== undefined) return e;
    serviceInstancesPrefix(this.prefix, service); // validates the name before anything starts
    e = new ServiceEntry(service);
    const disk = this.disk.get(service);
    if (disk !== undefined) {
      for (const i of disk.instances) e.instances.set(i.id, i);
      e.revision = disk.revision;
      e.source = "disk";
      e.staleSinceMs = this.clock.now() - Math.max(0, Date.now() - this.diskSavedAtMs);
    }
    this.lru.set(service, e);
    this.relist(e);
    return e;
  }

  private stopEntry(e: ServiceEntry): void {
    if (this.pinned.get(e.service) === e) return;
    e.state = "closed";
    e.epoch += 1;
    e.watcher?.cancel();
    e.watcher = undefined;
    e.retryTimer?.cancel();
    e.antiEntropyTimer?.cancel();
  }

  private snapshotOf(e: ServiceEntry): ServiceSnapshot {
    const instances = [...e.instances.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const stale = e.staleSinceMs !== undefined;
    return {
      service: e.service,
      instances,
      revision: e.revision,
      stale,
      staleForMs: stale ? Math.max(0, this.clock.now() - e.staleSinceMs!) : 0,
      source: e.source,
    };
  }

  private notify(e: ServiceEntry): void {
    if (e.listeners.size === 0) return;
    const snap = this.snapshotOf(e);
    for (const l of e.listeners) {
      try {
        l(snap);
      } catch (err) {
        this.logger.error({ err }, "discovery: listener threw");
      }
    }
  }

  private markStale(e: ServiceEntry): void {
    if (e.staleSinceMs !== undefined) return;
    e.staleSinceMs = this.clock.now();
    publish(channels.stale, { service: e.service, stale: true });
    this.notify(e);
  }

  private markFresh(e: ServiceEntry): boolean {
    if (e.staleSinceMs === undefined) return false;
    e.staleSinceMs = undefined;
    publish(channels.stale, { service: e.service, stale: false });
    return true;
  }

  private decodeAll(e: ServiceEntry, kvs: readonly mvccpb.KeyValue[]): Map<string, Instance> {
    const out = new Map<string, Instance>();
    for (const kv of kvs) {
      const r = decodeInstanceEntry(this.prefix, kv.key.toString("utf8"), kv.value);
      if (r.ok) out.set(r.value.id, r.value);
      else this.logger.warn({ service: e.service, err: r.error.message }, "discovery: skipping a bad record");
    }
    return out;
  }

  /** Lists the service at a fresh revision, replaces the set, and watches from the next one. */
  private relist(e: ServiceEntry): void {
    if (e.state === "closed" || this.closed) return;
    const epoch = ++e.epoch;
    e.watcher?.cancel();
    e.watcher = undefined;
    e.retryTimer?.cancel();
    e.retryTimer = undefined;
    const groupEpoch = this.client.groupEpoch;
    listPrefix(this.client, this.servicePrefix(e.service), { pageKeys: this.opts.pageKeys }).then(
      (listing) => {
        if (epoch !== e.epoch || e.state === "closed") return;
        // The client moved to another registry group during the listing: its revision (and maybe
        // some pages) belong to the group it left. List again in the group now in use.
        if (groupEpoch !== this.client.groupEpoch) return this.relist(e);
        e.attempt = 0;
        e.instances = this.decodeAll(e, listing.kvs);
        e.revision = listing.revision;
        e.source = "registry";
        e.loaded = true;
        e.state = "synced";
        this.markFresh(e);
        e.resolveFirstLoad();
        this.startWatch(e, listing.revision);
        this.armAntiEntropy(e);
        this.notify(e);
        this.scheduleSave();
      },
      (err: unknown) => {
        if (epoch !== e.epoch || e.state === "closed") return;
        // Keep whatever set there is: an unreachable registry is not an empty service.
        this.markStale(e);
        const delayMs = backoffMs(e.attempt++, BACKOFF_INITIAL_MS * 4, BACKOFF_MAX_MS);
        this.logger.debug(
          { service: e.service, err: (err as Error).message, delayMs },
          "discovery: list failed",
        );
        e.retryTimer = this.clock.setTimer(() => this.relist(e), delayMs);
      },
    );
  }

  private startWatch(e: ServiceEntry, revision: bigint): void {
    const epoch = e.epoch;
    e.watcher = this.client.watch(
      { key: this.servicePrefix(e.service), prefix: true, startRevision: revision + 1n },
      {
        events: (events, rev) => {
          if (epoch !== e.epoch) return;
          this.apply(e, events, rev);
        },
        connected: () => {
          if (epoch !== e.epoch) return;
          e.state = "synced";
          if (this.markFresh(e)) this.notify(e);
        },
        disconnected: () => {
          if (epoch !== e.epoch) return;
          e.state = "disconnected";
          this.markStale(e);
        },
        compacted: () => {
          if (epoch !== e.epoch) return;
          this.logger.info({ service: e.service }, "discovery: watch revision compacted; re-listing");
          this.relist(e);
        },
        groupSwitched: () => {
          // Revisions of the new group are unrelated to this one's: never resume, re-list.
          if (epoch !== e.epoch) return;
          this.relist(e);
        },
        canceled: (err) => {
          if (epoch !== e.epoch) return;
          this.logger.warn({ service: e.service, err: err.message }, "discovery: watch canceled; re-listing");
          this.markStale(e);
          e.retryTimer = this.clock.setTimer(
            () => this.relist(e),
            backoffMs(e.attempt++, 200, BACKOFF_MAX_MS),
          );
        },
      },
    );
  }

  private apply(e: ServiceEntry, events: readonly mvccpb.Event[], rev: bigint): void {
    for (const ev of events) {
      const kv = ev.kv!;
      const key = kv.key.toString("utf8");
      if (ev.type === 1 /* DELETE */) {
        const parsed = key.slice(this.servicePrefix(e.service).length);
        e.instances.delete(parsed);
        continue;
      }
      const r = decodeInstanceEntry(this.prefix, key, kv.value);
      if (r.ok) {
        e.instances.set(r.value.id, r.value);
      } else {
        // The key now holds something that is not an instance: it no longer routes.
        e.instances.delete(key.slice(this.servicePrefix(e.service).length));
        this.logger.warn(
          { service: e.service, err: r.error.message },
          "discovery: bad record in a watch event",
        );
      }
    }
    e.revision = rev;
    this.notify(e);
    this.scheduleSave();
  }

  private armAntiEntropy(e: ServiceEntry): void {
    e.antiEntropyTimer?.cancel();
    const every = this.opts.antiEntropyIntervalMs ?? ANTI_ENTROPY_INTERVAL_MS_DEFAULT;
    if (every <= 0) return;
    e.antiEntropyTimer = this.clock.setTimer(() => {
      if (e.state === "closed") return;
      this.reconcile(e.service).then(
        () => this.armAntiEntropy(e),
        (err: unknown) => {
          this.logger.debug(
            { service: e.service, err: (err as Error).message },
            "discovery: anti-entropy failed",
          );
          this.armAntiEntropy(e);
        },
      );
    }, every);
  }

  // -------------------------------------------------------------------------------------------
  // Disk cache

  private scheduleSave(): void {
    if (this.opts.cacheFile === undefined || this.saveTimer !== undefined || this.closed) return;
    this.saveTimer = this.clock.setTimer(() => {
      this.saveTimer = undefined;
      void this.save();
    }, this.opts.cacheDebounceMs ?? DISK_CACHE_DEBOUNCE_MS_DEFAULT);
  }

  private save(): Promise<void> {
    const path = this.opts.cacheFile;
    if (path === undefined) return Promise.resolve();
    const services: Record<string, CachedService> = {};
    for (const [name, d] of this.disk)
      services[name] = { revision: d.revision.toString(), instances: d.instances };
    const live = [...this.pinned.values(), ...this.lru.values()];
    for (const e of live) {
      if (!e.loaded) continue;
      const instances = [...e.instances.values()];
      services[e.service] = { revision: e.revision.toString(), instances };
      this.disk.set(e.service, { revision: e.revision, instances });
    }
    const snapshot: CacheSnapshot = { savedAtMs: Date.now(), prefix: this.prefix, services };
    this.saving = this.saving
      .then(() => saveSnapshot(path, snapshot))
      .catch((err: unknown) =>
        this.logger.warn({ path, err: (err as Error).message }, "discovery: cache save failed"),
      );
    return this.saving;
  }
}
